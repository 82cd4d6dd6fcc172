# shellcheck shell=bash
# Guest images. The initramfs of a boot is three concatenated gzip'd cpio
# archives (the kernel unpacks them in order, later files win):
#   base   busybox-static + the kernel modules the guest loads   (cached per arch)
#   stage  /init, /qt (runner, lib, scenarios), /opt/appmgr, shared libraries (per run)
#   plan   /qt/plan.sh: what this boot does                      (per boot)

# Modules loaded at boot (with their dependencies, in order).
# virtio_net: the NIC of the scenarios that need the host's registry (lib/registry.sh).
GUEST_MODULES=(virtio_pci virtio_blk virtio_rng virtio_net ext4 configfs industrialio industrialio-triggered-buffer)

# prune_other DIR GLOB KEEP: remove DIR/GLOB files other than KEEP (images of
# kernels or package sets this run does not use)
prune_other() {
	local f
	for f in "$1"/$2; do
		[ -e "$f" ] && [ "$f" != "$3" ] || continue
		info "pruning $f (made from other packages than this run's)"
		rm -f "$f"
	done
}

mkcpio() { # DIR OUT
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$2"
}

declare -A BASE_INITRD
base_initramfs() {
	local a=$1 kv kd key f tmp m line mods=()
	kv=${KVER[$a]}
	kd=${KDIR[$a]}
	# the key names the kernel and busybox .debs: a cached image of another
	# kernel (modules of another release) is never used
	key=$( { echo "${PKG_SHA[kernel-$(deb_arch "$a")]}"; echo "${PKG_SHA[busybox-$(deb_arch "$a")]}"; echo "${GUEST_MODULES[*]}"; echo v3; } | sha256sum | cut -c1-12)
	f=$CACHE/initramfs/base-$a-$key.cpio.gz
	BASE_INITRD[$a]=$f
	prune_other "$CACHE/initramfs" "base-$a-*.cpio.gz" "$f"
	[ -f "$f" ] && { info "base initramfs (cached): $f"; return 0; }
	step "$a: building base initramfs"
	mkdir -p "$CACHE/initramfs"
	tmp=$(mktemp -d "$CACHE/initramfs/tmp.XXXXXX")
	mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,mnt,root,var/lib,lib/modules/"$kv"}
	cp "$CACHE/busybox/$(deb_arch "$a")/bin/busybox" "$tmp/bin/busybox"
	# the kernel opens /dev/console for init before anything is mounted
	mknod -m 600 "$tmp/dev/console" c 5 1
	mknod -m 666 "$tmp/dev/null" c 1 3
	: >"$tmp/etc/qt-modules"
	for m in "${GUEST_MODULES[@]}"; do
		modprobe -d "$kd" -S "$kv" --show-depends "$m" 2>/dev/null | while read -r line; do
			case $line in insmod\ *) ;; *) continue ;; esac
			line=${line#insmod }
			line=${line%% *}
			echo "${line#"$kd"/lib/modules/"$kv"/}"
		done
	done | awk '!seen[$0]++' >"$tmp/etc/qt-modules"
	while read -r m; do
		mkdir -p "$tmp/lib/modules/$kv/$(dirname "$m")"
		cp "$kd/lib/modules/$kv/$m" "$tmp/lib/modules/$kv/$m"
	done <"$tmp/etc/qt-modules"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$tmp/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
	mkcpio "$tmp" "$f.part"
	mv "$f.part" "$f"
	rm -rf "$tmp"
	info "base initramfs: $f ($(du -h "$f" | cut -f1))"
}

declare -A STAGE_INITRD
stage_initramfs() {
	local a=$1 s=${STAGE[$1]}
	mkdir -p "$s/qt/scenarios" "$s/qt/extra"
	cp "$QT_DIR/guest/init" "$s/init"
	cp "$QT_DIR/guest/runner" "$QT_DIR/guest/lib.sh" "$s/qt/"
	cp -r "$QT_DIR/guest/fixtures" "$s/qt/" 2>/dev/null || true
	cp "$QT_DIR"/scenarios/*.sh "$s/qt/scenarios/"
	cp "$QT_DIR"/bench/*.sh "$s/qt/scenarios/" 2>/dev/null || true
	# appmgrd's systemd unit, slice, bus policy, activation and tmpfiles files,
	# installed in the debootstrap guest as the Yocto recipe installs them
	mkdir -p "$s/qt/data/appmgrd"
	cp "$REPO_DIR"/appmgr/daemon/data/* "$s/qt/data/appmgrd/" 2>/dev/null || true
	# the same for appmgr-portald (unit, bus policy, activation file), and the
	# board profiles the recipe installs in /usr/share/appmgr/board-support
	mkdir -p "$s/qt/data/portals" "$s/qt/data/board-support"
	cp "$REPO_DIR"/appmgr/portals/data/* "$s/qt/data/portals/" 2>/dev/null || true
	cp "$REPO_DIR"/board-support/*.toml "$s/qt/data/board-support/" 2>/dev/null || true
	echo "$a" >"$s/qt/arch"
	# a 32-bit static busybox (armhf on aarch64, i386 on x86_64) for the compat checks
	mkdir -p "$s/qt/compat"
	cp "$CACHE/busybox/$(compat_arch "$a")/bin/busybox" "$s/qt/compat/busybox32"
	# the arch's own busybox-static, for runtimes made in the debootstrap guest
	# (which has no busybox); the initramfs guest's /bin/busybox is the same file
	cp "$CACHE/busybox/$(deb_arch "$a")/bin/busybox" "$s/qt/busybox"
	chmod 755 "$s/init" "$s/qt/runner"
	STAGE_INITRD[$a]=$RUN_OUT/stage-$a.cpio.gz
	mkcpio "$s" "${STAGE_INITRD[$a]}"
}

# boot_initrd ARCH PLANFILE OUT: concatenate base + stage + plan.
boot_initrd() {
	local a=$1 plan=$2 out=$3 tmp
	tmp=$(mktemp -d)
	mkdir -p "$tmp/qt"
	cp "$plan" "$tmp/qt/plan.sh"
	mkcpio "$tmp" "$tmp/plan.cpio.gz"
	cat "${BASE_INITRD[$a]}" "${STAGE_INITRD[$a]}" "$tmp/plan.cpio.gz" >"$out"
	rm -rf "$tmp"
}

# ---- debootstrap guest ------------------------------------------------------
# unmount_under DIR: lazily unmount everything mounted below DIR (debootstrap
# can leave /proc mounted in the target); 1 if something stays mounted.
unmount_under() {
	local m
	for m in $(awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	! awk -v d="$1/" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/mounts
}
# rm_tree DIR: rm -rf only once nothing is mounted below DIR.
rm_tree() {
	unmount_under "$1" || die "something is still mounted below $1: not removing it"
	rm -rf "$1"
}

# A Debian bookworm rootfs with systemd, dbus, bluez (+ btvirt from
# bluez-test-tools), libostree and libseccomp, iio-sensor-proxy (what
# bench/portals-guest compares the sensor portal with; its udev rule tags no
# device the scenarios make, so it never starts in them), the kernel's modules, and a
# qt-runner.service that runs /qt/runner from the payload disk. Cached as a raw
# ext4 image; each boot writes to a qcow2 overlay, so the image stays pristine.
ROOTFS_PKGS=systemd,systemd-sysv,dbus,bluez,bluez-test-tools,udev,kmod,libostree-1-1,libseccomp2,iproute2,nftables,procps,iio-sensor-proxy
declare -A ROOTFS_IMG
build_rootfs() {
	local a=$1 da key img d log
	da=$(deb_arch "$a")
	# keyed by the kernel .deb whose modules it carries: never mixed with another kernel
	key=$( { echo "${PKG_SHA[kernel-$da]}"; echo "$ROOTFS_PKGS"; cat "$QT_DIR/guest/qt-boot"; echo v3; } | sha256sum | cut -c1-12)
	img=$CACHE/rootfs/$a-$key.img
	ROOTFS_IMG[$a]=$img
	prune_other "$CACHE/rootfs" "$a-*.img" "$img"
	[ -f "$img" ] && { info "debootstrap rootfs (cached): $img"; return 0; }
	step "$a: debootstrap bookworm rootfs ($ROOTFS_PKGS)"
	mkdir -p "$CACHE/rootfs"
	d=$(mktemp -d "$CACHE/rootfs/tmp.XXXXXX")
	log=$RUN_OUT/debootstrap-$a.log
	if [ "$da" != amd64 ]; then
		# foreign debootstrap: the second stage runs arm64 binaries via binfmt
		[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
		update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
		[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "binfmt for qemu-aarch64 is not registered (qemu-user-static, binfmt-support)"
	fi
	debootstrap --arch="$da" --variant=minbase --include="$ROOTFS_PKGS" bookworm "$d/root" \
		http://deb.debian.org/debian >"$log" 2>&1 || { tail -n 20 "$log"; rm_tree "$d"; die "debootstrap for $a failed (log: $log)"; }
	unmount_under "$d" || die "cannot unmount what debootstrap left mounted in $d"
	local r=$d/root kv
	kv=${KVER[$a]}
	echo "qt-$a" >"$r/etc/hostname"
	sed -i 's/^root:[^:]*:/root::/' "$r/etc/shadow"
	: >"$r/etc/fstab"
	mkdir -p "$r/usr/local/sbin" "$r/etc/systemd/system/multi-user.target.wants"
	cp "$QT_DIR/guest/qt-boot" "$r/usr/local/sbin/qt-boot"
	cat >"$r/etc/systemd/system/qt-runner.service" <<-'UNIT'
		[Unit]
		Description=qemu-tests scenario runner
		After=basic.target dbus.service
		Wants=dbus.service
		[Service]
		# simple, not oneshot: the boot must be able to finish (reach
		# "running") while the scenarios run
		Type=simple
		ExecStart=/usr/local/sbin/qt-boot
		StandardOutput=tty
		StandardError=tty
		TTYPath=/dev/console
		[Install]
		WantedBy=multi-user.target
	UNIT
	ln -sf /etc/systemd/system/qt-runner.service "$r/etc/systemd/system/multi-user.target.wants/qt-runner.service"
	# no login prompts on the serial console (it carries the test output)
	ln -sf /dev/null "$r/etc/systemd/system/serial-getty@.service"
	ln -sf /dev/null "$r/etc/systemd/system/getty@.service"
	mkdir -p "$r/usr/lib/modules"
	cp -a "${KDIR[$a]}/lib/modules/$kv" "$r/usr/lib/modules/"
	rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
	truncate -s 3G "$img.part"
	mkfs.ext4 -q -F -L qtroot -d "$r" "$img.part" >>"$log" 2>&1 || { rm_tree "$d"; rm -f "$img.part"; die "mkfs.ext4 -d for the $a rootfs failed"; }
	mv "$img.part" "$img"
	rm_tree "$d"
	info "debootstrap rootfs: $img ($(du -h "$img" | cut -f1) used)"
}

# payload_disk ARCH OUT PLAN: a tar of /qt (with the boot's plan) and
# /opt/appmgr for the debootstrap guest (its own Debian libraries serve the
# appmgr binaries).
payload_disk() {
	local tmp
	tmp=$(mktemp -d)
	mkdir -p "$tmp/qt"
	cp "$3" "$tmp/qt/plan.sh"
	tar -C "${STAGE[$1]}" -cf "$2" qt opt
	tar -C "$tmp" -rf "$2" qt/plan.sh
	rm -rf "$tmp"
}
