# shellcheck shell=bash
# Cross build of the appmgr binaries and staging of them (with the shared
# libraries they need, resolved like ldd does but from the target's multiarch
# directories) for the guest.

declare -A BUILD_STATUS   # arch -> "ok" | "failed: reason"
APPMGR_BINS=(appmgr appmgr-launch appmgr-probe appmgrd)
# Cargo profile for the guest binaries: dev without debuginfo (faster to build
# and link than release on 2 cores; the guests do not need the speed).
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-0}

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
	step "$a: cargo build --target $t --workspace --bins (log: $log)"
	local bins
	bins=$(workspace_bins | tr '\n' ' ')
	if [ -z "$bins" ]; then
		BUILD_STATUS[$a]="failed: the workspace defines no binary yet (expected: ${APPMGR_BINS[*]})"
		info "${BUILD_STATUS[$a]}"
		return 0
	fi
	if (cd "$REPO_DIR" && cargo build --target "$t" --workspace --bins) >"$log" 2>&1; then
		BUILD_STATUS[$a]=ok
		info "built: $bins"
	else
		BUILD_STATUS[$a]="failed: cargo build for $t failed (see $log)"
		tail -n 25 "$log" | sed 's/^/    | /'
		info "${BUILD_STATUS[$a]}"
	fi
	# The probe runs inside an app whose runtime may have no libc at all: it must
	# be static. If the crate did not make it so, link it statically here.
	local probe=$CARGO_TARGET_DIR/$t/debug/appmgr-probe
	if [ -f "$probe" ] && ! file -L "$probe" | grep -q 'statically linked\|static-pie'; then
		info "appmgr-probe is dynamic: relinking it with crt-static"
		(cd "$REPO_DIR" && LIBSECCOMP_LINK_TYPE=static cargo rustc --target "$t" -p appmgr-probe --bin appmgr-probe \
			-- -C target-feature=+crt-static) >>"$log" 2>&1 || info "static relink of appmgr-probe failed (see $log)"
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
	for b in $(workspace_bins) "${APPMGR_BINS[@]}"; do
		# never stage binaries left over from an earlier, successful build
		case ${BUILD_STATUS[$a]} in ok*) ;; *) break ;; esac
		src=$CARGO_TARGET_DIR/$t/debug/$b
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
	{
		echo "build: ${BUILD_STATUS[$a]}"
		echo "binaries: $(ls "${STAGE[$a]}/opt/appmgr/bin" | tr "\n" " ")"
	} >"${STAGE[$a]}/opt/appmgr/BUILD-STATUS"
	info "staged for $a: $(ls "${STAGE[$a]}/opt/appmgr/bin" | tr "\n" " ") ($(du -sh "${STAGE[$a]}" | cut -f1) with libraries)"
}
