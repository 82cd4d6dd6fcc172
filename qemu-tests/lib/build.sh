# shellcheck shell=bash
# Cross build of the appmgr binaries and staging of them (with the shared
# libraries they need, resolved like ldd does but from the target's multiarch
# directories) for the guest.

declare -A BUILD_STATUS   # arch -> "ok" | "failed: reason"
APPMGR_BINS=(appmgr appmgr-run appmgr-ops appmgr-launch appmgr-probe)
# Programs that are the `appmgr` executable under another name (appmgr/multicall): staged
# as symlinks to it, as the Yocto recipe installs them.
APPMGR_LINKS=(appmgrd appmgr-portald)
# Cargo profile for the cross-built guest binaries: dev without debuginfo
# (faster to build and link than release on 2 cores; the guests do not need the
# speed). The host arch's binaries are built exactly as `cargo test --workspace`
# builds them, so that in CI (scripts/test passes its own target dir) they are
# the test stage's artifacts, not a second build; they are stripped when staged.
GUEST_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-0}
unset CARGO_PROFILE_DEV_DEBUG

is_host_arch() { [ "$1" = "$(uname -m)" ]; }

# cargo_for ARCH ARGS...: cargo with the target and profile settings for ARCH.
cargo_for() {
	local a=$1
	shift
	if is_host_arch "$a"; then
		cargo "$@"
	else
		# Dependencies unoptimized too (the workspace builds them at opt-level 2 for the
		# host's hashing-heavy tests): the cross build is on the CI stage's critical
		# path, and the guests' bundles are small.
		CARGO_PROFILE_DEV_DEBUG=$GUEST_DEV_DEBUG cargo "$@" --target "$(rust_target "$a")" \
			--config 'profile.dev.package."*".opt-level = 0'
	fi
}

# out_dir ARCH: where cargo_for puts ARCH's dev binaries.
out_dir() {
	if is_host_arch "$1"; then echo "$CARGO_TARGET_DIR/debug"; else echo "$CARGO_TARGET_DIR/$(rust_target "$1")/debug"; fi
}

workspace_bins() {
	(cd "$REPO_DIR" && cargo metadata --no-deps --format-version 1 2>/dev/null) |
		python3 -c 'import json,sys
d = json.load(sys.stdin)
for p in d["packages"]:
    for t in p["targets"]:
        if "bin" in t["kind"]:
            print(t["name"])' || true
}

build_appmgr() {
	local a=$1 t log
	t=$(rust_target "$a")
	log=$RUN_OUT/build-$a.log
	step "$a: cargo build ($(is_host_arch "$a" && echo host || echo "--target $t")) --workspace --bins (log: $log)"
	local bins
	bins=$(workspace_bins | tr '\n' ' ')
	if [ -z "$bins" ]; then
		BUILD_STATUS[$a]="failed: the workspace defines no binary yet (expected: ${APPMGR_BINS[*]})"
		: >"$RUN_OUT/built-$a.txt"
		info "${BUILD_STATUS[$a]}"
		return 0
	fi
	# --keep-going: binaries that do build are still tested when another crate
	# is broken; the JSON artifact list names exactly the binaries this build
	# produced or found fresh, so nothing stale from an earlier build is used.
	local json=$RUN_OUT/build-$a.json
	if (cd "$REPO_DIR" && cargo_for "$a" build --keep-going --message-format=json-render-diagnostics \
		--workspace --bins) >"$json" 2>"$log"; then
		BUILD_STATUS[$a]=ok
	else
		BUILD_STATUS[$a]="failed: cargo build for $t failed (see $log)"
		grep -E '^(error|warning: build failed)' "$log" | head -n 8 | sed 's/^/    | /'
		info "${BUILD_STATUS[$a]}"
	fi
	python3 -c 'import json,sys
for line in open(sys.argv[1]):
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' "$json" >"$RUN_OUT/built-$a.txt"
	info "built: $(xargs -r -n1 basename <"$RUN_OUT/built-$a.txt" | tr '\n' ' ')"
	# The probe runs inside an app whose runtime may have no libc at all: it must
	# be static. If the crate did not make it so, build it statically here, in
	# a target dir of its own (static libseccomp would otherwise invalidate the
	# main build's libseccomp-sys on every run).
	local probe
	probe=$(grep '/appmgr-probe$' "$RUN_OUT/built-$a.txt" || true)
	if [ -n "$probe" ] && ! file -L "$probe" | grep -q 'statically linked\|static-pie'; then
		info "appmgr-probe is dynamic: building a static one (crt-static, static libseccomp)"
		local sdir=$CARGO_TARGET_DIR/static-probe tr
		tr=$(gnu_triplet "$a")
		if (cd "$REPO_DIR" && CARGO_TARGET_DIR=$sdir LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/$tr \
			CARGO_PROFILE_DEV_DEBUG=$GUEST_DEV_DEBUG \
			cargo rustc --target "$t" -p appmgr-probe --bin appmgr-probe -- -C target-feature=+crt-static) >>"$log" 2>&1 &&
			file -L "$sdir/$t/debug/appmgr-probe" | grep -q 'statically linked\|static-pie'; then
			sed -i "s|^$probe\$|$sdir/$t/debug/appmgr-probe|" "$RUN_OUT/built-$a.txt"
		else
			info "warning: no static appmgr-probe (see $log); the dynamic one cannot run in a libc-less runtime"
		fi
	fi
}

# lib_dirs ARCH: where the target's shared libraries live on this host.
lib_dirs() {
	local tr
	tr=$(gnu_triplet "$1")
	echo "/lib/$tr /usr/lib/$tr"
}

# collect_libs ARCH STAGEDIR ELF...: copy the transitive DT_NEEDED closure and
# the ELF interpreter into STAGEDIR (same paths as on Debian).
collect_libs() {
	local a=$1 stage=$2
	shift 2
	local tr queue=("$@") seen=" " f n d found interp
	tr=$(gnu_triplet "$a")
	while [ ${#queue[@]} -gt 0 ]; do
		f=${queue[0]}
		queue=("${queue[@]:1}")
		interp=$(readelf -l "$f" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
		if [ -n "$interp" ] && [ ! -e "$stage$interp" ]; then
			mkdir -p "$stage$(dirname "$interp")"
			cp -L "$interp" "$stage$interp" 2>/dev/null || cp -L "/usr$interp" "$stage$interp"
		fi
		for n in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
			case $seen in *" $n "*) continue ;; esac
			seen="$seen$n "
			found=
			for d in $(lib_dirs "$a"); do
				if [ -e "$d/$n" ]; then found=$d/$n; break; fi
			done
			if [ -z "$found" ]; then
				info "warning: $n (needed by $(basename "$f")) not found for $a"
				continue
			fi
			mkdir -p "$stage/lib/$tr"
			cp -L "$found" "$stage/lib/$tr/$n"
			queue+=("$found")
		done
	done
}

# stage_appmgr ARCH: $STAGE[arch]/opt/appmgr/{bin,BUILD-STATUS} + libraries.
declare -A STAGE
stage_appmgr() {
	local a=$1 t b src found=()
	t=$(rust_target "$a")
	STAGE[$a]=$RUN_OUT/stage/$a
	rm -rf "${STAGE[$a]}"
	mkdir -p "${STAGE[$a]}/opt/appmgr/bin"
	[ -n "${BUILD_STATUS[$a]:-}" ] || BUILD_STATUS[$a]="ok (not rebuilt: --no-build)"
	local built=$RUN_OUT/built-$a.txt
	if [ ! -f "$built" ]; then
		# --no-build: whatever the previous build left
		local sp=$CARGO_TARGET_DIR/static-probe/$t/debug/appmgr-probe
		local od
		od=$(out_dir "$a")
		for b in $(workspace_bins); do
			if [ "$b" = appmgr-probe ] && [ "$sp" -nt "$od/$b" ]; then
				echo "$sp"
			elif [ -f "$od/$b" ]; then
				echo "$od/$b"
			fi
		done >"$built"
	fi
	for src in $(cat "$built"); do
		b=$(basename "$src")
		[ -f "$src" ] || continue
		[ -f "${STAGE[$a]}/opt/appmgr/bin/$b" ] && continue
		cp "$src" "${STAGE[$a]}/opt/appmgr/bin/$b"
		"$(gnu_triplet "$a")-strip" "${STAGE[$a]}/opt/appmgr/bin/$b" 2>/dev/null ||
			strip "${STAGE[$a]}/opt/appmgr/bin/$b" 2>/dev/null || true
		found+=("${STAGE[$a]}/opt/appmgr/bin/$b")
	done
	if [ ${#found[@]} -gt 0 ]; then
		collect_libs "$a" "${STAGE[$a]}" "${found[@]}"
	fi
	if [ -f "${STAGE[$a]}/opt/appmgr/bin/appmgr" ]; then
		for b in "${APPMGR_LINKS[@]}"; do ln -sfn appmgr "${STAGE[$a]}/opt/appmgr/bin/$b"; done
	fi
	{
		echo "build: ${BUILD_STATUS[$a]}"
		echo "binaries: $(ls "${STAGE[$a]}/opt/appmgr/bin" | tr "\n" " ")"
	} >"${STAGE[$a]}/opt/appmgr/BUILD-STATUS"
	info "staged for $a: $(ls "${STAGE[$a]}/opt/appmgr/bin" | tr "\n" " ") ($(du -sh "${STAGE[$a]}" | cut -f1) with libraries)"
}
