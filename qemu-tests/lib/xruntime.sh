# shellcheck shell=bash
# A runtime bundle made on the host for the guest's arch (`# needs: xruntime`):
# what an integrator does when the image is built on an x86_64 machine for an
# aarch64 board. The tree has the shape of runtimes/headless.toml: the arch's
# busybox-static (the verified .deb the guests already use) with applet
# symlinks, and the GNU C library with its loader from the host's multiarch
# directory (Debian's libc6:arm64 / libc6:amd64, the same files staged for the
# appmgr binaries). It is signed by the host's own appmgr with a key made for
# this run. The guest finds it in /qt/xruntime: runtime.bundle, signer.pub and
# STATUS ("ok ..." or the reason it could not be made, which fails the scenario).
XRUNTIME_ID=org.qt.XRuntime
XRUNTIME_APPLETS=(sh ls cat echo id ps sleep env mkdir rm grep head dd true false wc uname date)

# host_appmgr: path of the host arch's appmgr, built if this run did not build it.
host_appmgr() {
	local h od
	h=$(uname -m)
	od=$(out_dir "$h")
	if [ "$SKIP_BUILD" != 1 ] && ! grep -qs '/appmgr$' "$RUN_OUT/built-$h.txt"; then
		(cd "$REPO_DIR" && cargo build -p appmgr-cli --bin appmgr) >>"$RUN_OUT/build-xruntime.log" 2>&1 || return 1
	fi
	[ -x "$od/appmgr" ] || return 1
	echo "$od/appmgr"
}

# xruntime_tree ARCH DIR: the runtime tree (what the app sees at /usr).
xruntime_tree() {
	local a=$1 d=$2 tr lib f n interp
	tr=$(gnu_triplet "$a")
	mkdir -p "$d/bin" "$d/lib/$tr"
	cp "$CACHE/busybox/$(deb_arch "$a")/bin/busybox" "$d/bin/busybox"
	for n in "${XRUNTIME_APPLETS[@]}"; do ln -s busybox "$d/bin/$n"; done
	for lib in libc.so.6 libm.so.6 libresolv.so.2; do
		f=
		for n in $(lib_dirs "$a"); do [ -e "$n/$lib" ] && { f=$n/$lib; break; }; done
		[ -n "$f" ] || return 1
		cp -L "$f" "$d/lib/$tr/$lib"
	done
	# the loader, at the path the arch's ELF interpreter names (/lib/ld-linux-aarch64.so.1,
	# /lib64/ld-linux-x86-64.so.2), as a link into the multiarch directory like Debian's
	interp=$(readelf -l "$d/lib/$tr/libc.so.6" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
	[ -n "$interp" ] || interp=$(case $a in aarch64) echo /lib/ld-linux-aarch64.so.1 ;; x86_64) echo /lib64/ld-linux-x86-64.so.2 ;; esac)
	n=$(basename "$interp")
	cp -L "/usr/lib/$tr/$n" "$d/lib/$tr/$n" 2>/dev/null || cp -L "/lib/$tr/$n" "$d/lib/$tr/$n" || return 1
	case $interp in
	/lib64/*) mkdir -p "$d/lib64" && ln -s "../lib/$tr/$n" "$d/lib64/$n" ;;
	*) ln -s "$tr/$n" "$d/lib/$n" ;;
	esac
}

# stage_xruntime ARCH: $STAGE[ARCH]/qt/xruntime/{runtime.bundle,signer.pub,STATUS}.
stage_xruntime() {
	local a=$1 out=${STAGE[$1]}/qt/xruntime w appmgr
	step "$a: runtime bundle made on the host ($(uname -m)) for the guest"
	w=$RUN_OUT/xruntime-$a
	rm -rf "$w" "$out"
	mkdir -p "$w" "$out"
	fail_x() { echo "failed: $*" >"$out/STATUS"; info "xruntime for $a: $*"; }
	if ! appmgr=$(host_appmgr); then
		fail_x "no host appmgr to sign with (build log: $RUN_OUT/build-xruntime.log)"
		return 0
	fi
	if ! xruntime_tree "$a" "$w/root"; then
		fail_x "could not assemble the tree (busybox $(deb_arch "$a") or the $(gnu_triplet "$a") glibc missing)"
		return 0
	fi
	printf 'id = "%s"\nkind = "runtime"\nversion = "1.0.0"\narch = "%s"\nbranch = "stable"\n' \
		"$XRUNTIME_ID" "$a" >"$w/manifest.toml"
	if ! "$appmgr" key generate --out "$w/signer" >>"$w/log" 2>&1 ||
		! "$appmgr" bundle create --manifest "$w/manifest.toml" --root "$w/root" --key "$w/signer.key" \
			--out "$out/runtime.bundle" >>"$w/log" 2>&1; then
		fail_x "appmgr bundle create failed (see $w/log)"
		return 0
	fi
	cp "$w/signer.pub" "$out/signer.pub"
	echo "ok: made by $(uname -m) $("$appmgr" --version) from busybox-static:$(deb_arch "$a") and the host's $(gnu_triplet "$a") glibc; $(stat -c %s "$out/runtime.bundle") bytes, $(find "$w/root" | wc -l) paths" >"$out/STATUS"
	info "$(cat "$out/STATUS")"
}
