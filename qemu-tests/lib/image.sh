# shellcheck shell=bash
# Guest images. The initramfs of a boot is three concatenated gzip'd cpio
# archives (the kernel unpacks them in order, later files win):
#   base   busybox-static + the kernel modules the guest loads   (cached per arch)
#   stage  /init, /qt (runner, lib, scenarios), /opt/appmgr, shared libraries (per run)
#   plan   /qt/plan.sh: what this boot does                      (per boot)

# Modules loaded at boot (with their dependencies, in order).
GUEST_MODULES=(virtio_pci virtio_blk virtio_rng ext4 configfs industrialio)

mkcpio() { # DIR OUT
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$2"
}

declare -A BASE_INITRD
base_initramfs() {
	local a=$1 kv kd key f tmp m line mods=()
	kv=$(kver "$a")
	kd=${KDIR[$a]}
	key=$( { pin "$(kernel_pkg "$a")" "$(deb_arch "$a")"; pin busybox-static "$(deb_arch "$a")"; echo "${GUEST_MODULES[*]}"; echo v2; } | sha256sum | cut -c1-12)
	f=$CACHE/initramfs/base-$a-$key.cpio.gz
	BASE_INITRD[$a]=$f
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
	echo "$a" >"$s/qt/arch"
	# a 32-bit static busybox (armhf on aarch64, i386 on x86_64) for the compat checks
	mkdir -p "$s/qt/compat"
	cp "$CACHE/busybox/$(compat_arch "$a")/bin/busybox" "$s/qt/compat/busybox32"
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
