# shellcheck shell=bash
# The out-of-tree iio_dummy module for the x86_64 guest (Debian's kernels do
# not build it): drivers/iio/dummy from linux-source-6.1 plus the configfs and
# sw-device helpers it needs, built against the pinned linux-headers with the
# host's gcc-12 (the compiler Debian built the kernel with). Cached per kernel.
# In the guest: insmod industrialio-configfs industrialio-sw-device iio_dummy
# (industrialio and configfs are in the base initramfs), mount configfs, then
# mkdir /config/iio/devices/dummy/NAME creates an IIO device with raw channels.
IIO_MODULES=(industrialio-configfs.ko industrialio-sw-device.ko iio_dummy.ko)

build_iio_dummy() {
	local a=$1 kv abi root src out log
	[ "$a" = x86_64 ] || return 0
	kv=$(kver "$a")
	abi=$(kernel_abi)
	out=$CACHE/iio/$kv
	IIO_DIR=$out
	if [ -f "$out/iio_dummy.ko" ]; then info "iio_dummy (cached): $out"; return 0; fi
	step "$a: building the out-of-tree iio_dummy module for $kv"
	apt_install make gcc-12 libc6-dev
	# the headers' Makefile includes absolute /usr/src paths: install the
	# pinned, sha256-checked .debs (apt pulls their dependencies)
	if ! pkg_installed "linux-headers-$abi-amd64"; then
		info "apt-get install linux-headers-$abi-amd64 (pinned .debs)"
		apt_update_once
		DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y --no-install-recommends \
			"$(deb_file "linux-headers-$abi-amd64" amd64)" "$(deb_file "linux-headers-$abi-common" all)" \
			"$(deb_file linux-kbuild-6.1 amd64)" >>"$RUN_OUT/apt-install.log" 2>&1 ||
			{ tail -n 20 "$RUN_OUT/apt-install.log"; die "installing linux-headers-$abi-amd64 failed"; }
	fi
	root=
	src=$(mktemp -d "$CACHE/iio/src.XXXXXX")
	log=$RUN_OUT/iio-build.log
	dpkg-deb --fsys-tarfile "$(deb_file linux-source-6.1 all)" | tar -xO ./usr/src/linux-source-6.1.tar.xz |
		tar -xJ -C "$src" --strip-components=3 linux-source-6.1/drivers/iio/dummy \
			linux-source-6.1/drivers/iio/industrialio-sw-device.c linux-source-6.1/drivers/iio/industrialio-configfs.c
	mv "$src"/dummy/* "$src/"
	cat >"$src/Kbuild" <<-'KB'
		obj-m += industrialio-configfs.o industrialio-sw-device.o iio_dummy.o
		iio_dummy-y := iio_simple_dummy.o
	KB
	if ! make -C "/usr/src/linux-headers-$kv" M="$src" modules >"$log" 2>&1; then
		tail -n 20 "$log"
		rm -rf "$src"
		die "building iio_dummy failed (log: $log)"
	fi
	mkdir -p "$out"
	local m
	for m in "${IIO_MODULES[@]}"; do cp "$src/$m" "$out/"; done
	rm -rf "$src"
	info "iio_dummy: $out"
}

stage_iio() {
	local a=$1
	[ "$a" = x86_64 ] && [ -n "${IIO_DIR:-}" ] || return 0
	mkdir -p "${STAGE[$a]}/qt/extra/iio"
	cp "$IIO_DIR"/*.ko "${STAGE[$a]}/qt/extra/iio/"
}
