# shellcheck shell=bash
# The out-of-tree iio_dummy module for the x86_64 guest (Debian's kernels do
# not build it): drivers/iio/dummy from linux-source-X.Y plus the configfs and
# sw-device helpers it needs, built against linux-headers of the kernel that
# boots with the host's gcc-12 (the compiler Debian built the kernel with).
# The packages are the ones packages.sh resolved to match that kernel.
# Cached per kernel .deb; a cached build is used only while its stamp names the
# same kernel, headers and source, and every module's vermagic is that kernel's.
# In the guest: insmod the modules in IIO_MODULES' order (industrialio, configfs,
# kfifo_buf and industrialio-triggered-buffer come from the kernel's own modules),
# mount configfs, then mkdir /config/iio/devices/dummy/NAME creates an IIO device
# with raw channels and a buffer, and mkdir /config/iio/triggers/hrtimer/NAME a
# trigger with a sampling_frequency.
# iio_dummy is built with its triggered buffer (as CONFIG_IIO_SIMPLE_DUMMY_BUFFER
# does), and the hrtimer trigger with the sw-trigger core it registers with (Debian
# builds neither), so scans can be taken at a rate: iio_dummy then needs Debian's
# industrialio-triggered-buffer and kfifo_buf loaded first.
IIO_MODULES=(industrialio-configfs.ko industrialio-sw-device.ko industrialio-sw-trigger.ko iio-trig-hrtimer.ko iio_dummy.ko)
# how the modules are built: a cached build of another recipe is rebuilt
IIO_RECIPE=2

# iio_stamp: what a cached build must have been made from
iio_stamp() {
	local r
	for r in kernel-amd64 "${IIO_ROLES[@]}"; do echo "$r ${PKG_NAME[$r]} ${PKG_VER[$r]} ${PKG_SHA[$r]}"; done
	echo "recipe $IIO_RECIPE"
}

# iio_consistent DIR KVER: the cached build in DIR is complete, from this run's
# packages, and built for KVER
iio_consistent() {
	local d=$1 kv=$2 m vm
	[ -f "$d/.stamp" ] && [ "$(cat "$d/.stamp")" = "$(iio_stamp)" ] || return 1
	for m in "${IIO_MODULES[@]}"; do
		[ -f "$d/$m" ] || return 1
		vm=$(modinfo -F vermagic "$d/$m" 2>/dev/null) || return 1
		case $vm in "$kv "*) ;; *) return 1 ;; esac
	done
}

# install_headers: linux-headers of the kernel that boots, on the host (their
# Makefile includes absolute /usr/src paths), from the verified .debs
install_headers() {
	local r need=0
	for r in "${IIO_ROLES[@]}"; do
		[ "$r" = source ] && continue
		[ "$(dpkg-query -W -f='${Status} ${Version}' "${PKG_NAME[$r]}" 2>/dev/null)" = "install ok installed ${PKG_VER[$r]}" ] || need=1
	done
	[ $need = 1 ] || return 0
	info "apt-get install ${PKG_NAME[headers]} ${PKG_NAME[headers-common]} ${PKG_NAME[kbuild]} (verified .debs)"
	apt_update_once
	DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y --no-install-recommends --allow-downgrades \
		"${PKG_FILE[headers]}" "${PKG_FILE[headers-common]}" "${PKG_FILE[kbuild]}" >>"$RUN_OUT/apt-install.log" 2>&1 ||
		{ tail -n 20 "$RUN_OUT/apt-install.log" | sed 's/^/      | /'; die "installing ${PKG_NAME[headers]} ${PKG_VER[headers]} failed"; }
}

build_iio_dummy() {
	local a=$1 kv out src log series m
	[ "$a" = x86_64 ] || return 0
	kv=${KVER[$a]}
	[ -n "${PKG_FILE[source]:-}" ] || die "internal: iio_dummy needed but its packages were not resolved"
	out=$CACHE/iio/${kv}_${PKG_VER[kernel-amd64]//:/%3a}
	IIO_DIR=$out
	if iio_consistent "$out" "$kv"; then info "iio_dummy (cached): $out"; return 0; fi
	[ -e "$out" ] && info "cached iio_dummy in $out is incomplete or was built from other packages: rebuilding"
	rm -rf "$out"
	step "$a: building the out-of-tree iio_dummy module for $kv"
	apt_install make gcc-12 libc6-dev
	install_headers
	[ -d "/usr/src/linux-headers-$kv" ] || die "${PKG_NAME[headers]} installed no /usr/src/linux-headers-$kv"
	mkdir -p "$CACHE/iio"
	src=$(mktemp -d "$CACHE/iio/src.XXXXXX")
	log=$RUN_OUT/iio-build.log
	series=${PKG_NAME[source]#linux-source-}
	if ! dpkg-deb --fsys-tarfile "${PKG_FILE[source]}" | tar -xO "./usr/src/linux-source-$series.tar.xz" |
		tar -xJ -C "$src" --strip-components=3 "linux-source-$series/drivers/iio/dummy" \
			"linux-source-$series/drivers/iio/industrialio-sw-device.c" \
			"linux-source-$series/drivers/iio/industrialio-configfs.c" \
			"linux-source-$series/drivers/iio/industrialio-sw-trigger.c" \
			"linux-source-$series/drivers/iio/trigger/iio-trig-hrtimer.c" 2>"$log"; then
		tail -n 5 "$log" | sed 's/^/      | /'
		rm -rf "$src"
		die "extracting drivers/iio/dummy from ${PKG_FILE[source]} failed"
	fi
	mv "$src"/dummy/* "$src"/trigger/* "$src/"
	cat >"$src/Kbuild" <<-'KB'
		obj-m += industrialio-configfs.o industrialio-sw-device.o industrialio-sw-trigger.o
		obj-m += iio-trig-hrtimer.o iio_dummy.o
		iio_dummy-y := iio_simple_dummy.o iio_simple_dummy_buffer.o
		ccflags-y += -DCONFIG_IIO_SIMPLE_DUMMY_BUFFER
	KB
	if ! make -C "/usr/src/linux-headers-$kv" M="$src" modules >"$log" 2>&1; then
		tail -n 20 "$log" | sed 's/^/      | /'
		rm -rf "$src"
		die "building iio_dummy for $kv failed (log: $log)"
	fi
	mkdir -p "$out"
	for m in "${IIO_MODULES[@]}"; do cp "$src/$m" "$out/"; done
	rm -rf "$src"
	iio_stamp >"$out/.stamp"
	iio_consistent "$out" "$kv" || die "the iio_dummy modules built in $out do not carry vermagic $kv"
	info "iio_dummy: $out"
}

stage_iio() {
	local a=$1
	[ "$a" = x86_64 ] && [ -n "${IIO_DIR:-}" ] || return 0
	mkdir -p "${STAGE[$a]}/qt/extra/iio"
	cp "$IIO_DIR"/*.ko "${STAGE[$a]}/qt/extra/iio/"
}
