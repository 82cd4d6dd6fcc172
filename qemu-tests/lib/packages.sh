# shellcheck shell=bash
# The Debian packages the guests are made of, resolved from what the mirror
# offers now, downloaded by name through apt, and recorded.
#
# Resolution (default): the kernel of each arch is what the linux-image-ARCH
# metapackage depends on today; for iio_dummy, the headers, kbuild and source
# packages are the ones that match *that* kernel's version (from the headers'
# own Depends: and linux-source-X.Y at the kernel's exact version). busybox-static
# is the candidate of each arch. Nothing has to match pins.lock: when the mirror
# has moved on (a security rebuild replaced a version, an ABI bump renamed the
# kernel), the run substitutes what the mirror offers and says so.
#
# Integrity: apt-get download by name checks each .deb against the signed
# package index; the harness checks the file's SHA-256 against the index again,
# and a cached .deb is reused only while its SHA-256 still equals the index's.
#
# Record: the set a run used (role, name, arch, version, SHA-256) is printed in
# the run log, written to out/latest/packages.lock and merged into pins.lock, a
# record to reproduce a failure with (--pinned), not a requirement.
#
# Offline: when the mirror cannot be reached, the set of the last successful
# resolution on this machine (CACHE/last-used.lock) is used if every file of it
# is still in the cache with its recorded SHA-256.

PINS=${APPMGR_QEMU_PINS:-$QT_DIR/pins.lock}
PIN_MODE=${PIN_MODE:-resolve} # resolve | pinned

# role -> name / Debian arch / version / sha256 / cached file
declare -A PKG_NAME PKG_ARCH PKG_VER PKG_SHA PKG_FILE
ROLES=()
# arch -> kernel release (6.1.0-NN-ARCH) and unpacked kernel directory
declare -A KVER KDIR

# Roles: kernel-DA, busybox-DA (the guest's arch and its 32-bit compat arch),
# and for iio_dummy on x86_64: headers, headers-common, kbuild, source.
IIO_ROLES=(headers headers-common kbuild source)

# apt options for a Debian arch: the machine's apt state for the arches dpkg
# is configured for (amd64, arm64), a private one for armhf/i386.
apt_opts_for() { # DA -> APT_O array
	APT_O=()
	case $1 in armhf | i386) read -ra APT_O <<<"$(apt_foreign_opts "$1")" ;; esac
}

# Packages of architectures dpkg is not configured for (armhf, i386: the 32-bit
# binaries the compat checks run) come through a private apt state directory,
# so the machine's dpkg/apt architecture list stays as it is.
apt_foreign_opts() { # ARCH -> prints apt -o options
	local d=$CACHE/apt-$1
	echo "-o Dir::Etc::sourcelist=$d/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::lists=$d/lists -o Dir::Cache=$d/cache -o APT::Architectures::=$1"
}
# apt_foreign_update DA: refresh the private lists (bookworm main only: all we
# take from these architectures is busybox-static); returns 1 when unreachable.
apt_foreign_update() {
	local d=$CACHE/apt-$1 o
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
	echo "deb http://deb.debian.org/debian bookworm main" >"$d/sources.list"
	read -ra o <<<"$(apt_foreign_opts "$1")"
	apt_update_waiting "$d/update.log" "${o[@]}"
}

# spec NAME DA: how apt names the package ("all" packages take no qualifier)
spec() { if [ "$2" = all ]; then echo "$1"; else echo "$1:$2"; fi; }

# The package index, queried in bulk: one apt-cache call per apt state (the
# machine's for amd64, arm64 and all; the private armhf or i386 one) answers for
# many packages at once, and the answers are kept in IDX_DIR as tab-separated
# tables, so that lookups also work from command substitutions. (One apt-cache
# call costs about a second; a lookup of something not loaded yet loads it.)
IDX_DIR=
idx_state() { case $1 in armhf | i386) echo "$1" ;; *) echo host ;; esac; }
idx_init() { IDX_DIR=$RUN_OUT/index; rm -rf "$IDX_DIR"; mkdir -p "$IDX_DIR"; }

# idx_load NAME:DA...: the records of every version (show) and the candidate
# (policy) of each package, unless loaded already
idx_load() {
	local p st
	declare -A by=()
	for p in "$@"; do
		st=$(idx_state "${p##*:}")
		touch "$IDX_DIR/asked-$st" "$IDX_DIR/show-$st.tsv" "$IDX_DIR/policy-$st.tsv"
		grep -qxF "$p" "$IDX_DIR/asked-$st" && continue
		echo "$p" >>"$IDX_DIR/asked-$st"
		by[$st]="${by[$st]:-} $(spec "${p%:*}" "${p##*:}")"
	done
	for st in "${!by[@]}"; do
		apt_opts_for "$st"
		# shellcheck disable=SC2086
		apt-cache "${APT_O[@]}" show ${by[$st]} 2>/dev/null | awk -v OFS='\t' '
			/^Package: / { p = $2 } /^Architecture: / { a = $2 } /^Version: / { v = $2 }
			/^SHA256: / { s = $2 } /^Depends: / { d = substr($0, 10) }
			/^$/ { if (p != "") print p, a, v, s, d; p = a = v = s = d = "" }
			END { if (p != "") print p, a, v, s, d }' >>"$IDX_DIR/show-$st.tsv" || true
		# shellcheck disable=SC2086
		apt-cache "${APT_O[@]}" policy ${by[$st]} 2>/dev/null | awk -v OFS='\t' '
			/^[^ ].*:$/ { h = substr($0, 1, length($0) - 1); n = h; a = ""; i = index(h, ":")
				if (i) { n = substr(h, 1, i - 1); a = substr(h, i + 1) } }
			/^  Candidate: / { print n, a, $2 }' >>"$IDX_DIR/policy-$st.tsv" || true
	done
}

# candidate NAME DA -> the version apt would install today ("" if none)
candidate() {
	local st
	idx_load "$1:$2"
	st=$(idx_state "$2")
	awk -F'\t' -v n="$1" -v a="$2" '$1 == n && $2 == a && $3 != "(none)" { print $3; found = 1; exit }
		$1 == n && $2 == "" && $3 != "(none)" && !alt { alt = $3 }
		END { if (!found && alt) print alt }' "$IDX_DIR/policy-$st.tsv"
}

# index_field NAME DA VERSION FIELD -> SHA256 or Depends of that version in the
# signed package index ("" when the mirror does not offer that version)
index_field() {
	local st col
	idx_load "$1:$2"
	st=$(idx_state "$2")
	case $4 in SHA256) col=4 ;; Depends) col=5 ;; *) die "internal: index_field $4" ;; esac
	awk -F'\t' -v n="$1" -v a="$2" -v v="$3" -v c="$col" '$1 == n && $2 == a && $3 == v { print $c; exit }' "$IDX_DIR/show-$st.tsv"
}

set_role() { # ROLE NAME DA VERSION
	PKG_NAME[$1]=$2
	PKG_ARCH[$1]=$3
	PKG_VER[$1]=$4
	case " ${ROLES[*]} " in *" $1 "*) ;; *) ROLES+=("$1") ;; esac
}

# pinned ROLE -> "NAME DA VERSION SHA256" from pins.lock ("" if absent)
pinned() { [ -f "$PINS" ] && awk -v r="$1" '$1 == r { print $2, $3, $4, $5; exit }' "$PINS" || true; }

# roles_for ARCH: the roles this run needs for ARCH
roles_for() {
	local a=$1 da
	da=$(deb_arch "$a")
	echo "kernel-$da busybox-$da busybox-$(compat_arch "$a")"
	if [ "$a" = x86_64 ] && { [ "${RESOLVE_ALL:-0}" = 1 ] || scenarios_need iio "$a"; }; then
		echo "${IIO_ROLES[*]}"
	fi
}

# resolve_kernel DA: kernel-DA from the linux-image-DA metapackage
resolve_kernel() {
	local da=$1 dep v
	dep=$(kernel_dep "$da")
	[ -n "$dep" ] || die "cannot resolve the kernel: linux-image-$da:$da has no linux-image-* dependency in the package index"
	v=$(candidate "$dep" "$da")
	[ -n "$v" ] || die "cannot resolve the kernel: $dep:$da (from linux-image-$da) has no candidate version"
	set_role "kernel-$da" "$dep" "$da" "$v"
}

# dep_of NAME DA VERSION PATTERN -> "DEPNAME OP DEPVERSION" of the first
# dependency of that package version whose name matches PATTERN (a regex)
dep_of() {
	index_field "$1" "$2" "$3" Depends | tr ',' '\n' | sed 's/^ *//' |
		sed -n "s/^\($4\) (\([<>=]*\) \([^)]*\))\$/\1 \2 \3/p" | head -n 1 || true
}

# resolve_versioned ROLE NAME DA OP VERSION WHAT: ROLE is NAME at the version the
# relation OP VERSION asks for ("=" exactly; ">=" the candidate if it satisfies it)
resolve_versioned() {
	local role=$1 name=$2 da=$3 op=$4 want=$5 what=$6 v
	case $op in
	=) v=$want ;;
	">=")
		v=$(candidate "$name" "$da")
		[ -n "$v" ] && dpkg --compare-versions "$v" ge "$want" || v=
		;;
	*) die "cannot resolve $what: unexpected relation '$op $want' on $name" ;;
	esac
	[ -n "$v" ] && [ -n "$(index_field "$name" "$da" "$v" SHA256)" ] ||
		die "cannot resolve $what: the mirror has no $name:$da $op $want"
	set_role "$role" "$name" "$da" "$v"
}

# resolve_iio: headers, kbuild and source matching the amd64 kernel's version
resolve_iio() {
	local kname=${PKG_NAME[kernel-amd64]} kv=${PKG_VER[kernel-amd64]} abi hdr common kbuild series
	abi=${kname#linux-image-}
	abi=${abi%-amd64}
	hdr=linux-headers-$abi-amd64
	[ -n "$(index_field "$hdr" amd64 "$kv" SHA256)" ] ||
		die "cannot resolve the iio_dummy build: the mirror has no $hdr:amd64 at the kernel's version $kv"
	set_role headers "$hdr" amd64 "$kv"
	read -r -a common <<<"$(dep_of "$hdr" amd64 "$kv" 'linux-headers-[^ ]*-common')"
	read -r -a kbuild <<<"$(dep_of "$hdr" amd64 "$kv" 'linux-kbuild-[^ ]*')"
	# one bulk query for the packages named by the kernel and its headers
	series=$(echo "$abi" | sed -n 's/^\([0-9]*\.[0-9]*\)\..*/\1/p')
	idx_load "${common[0]:-none}:all" "${kbuild[0]:-none}:amd64" "linux-source-$series:all"
	[ ${#common[@]} = 3 ] || die "cannot resolve the iio_dummy build: $hdr $kv names no linux-headers-*-common dependency"
	resolve_versioned headers-common "${common[0]}" all "${common[1]}" "${common[2]}" "the iio_dummy build"
	[ ${#kbuild[@]} = 3 ] || die "cannot resolve the iio_dummy build: $hdr $kv names no linux-kbuild-* dependency"
	resolve_versioned kbuild "${kbuild[0]}" amd64 "${kbuild[1]}" "${kbuild[2]}" "the iio_dummy build"
	resolve_versioned source "linux-source-$series" all = "$kv" "the iio_dummy build (source of the kernel that boots)"
}

# preload_index ROLE...: one bulk query for everything the roles and the
# pins.lock rows of those roles will look up (the iio packages whose names come
# from the headers' Depends: are loaded in a second round, by resolve_iio)
preload_index() {
	local r name da v sha deps=() want=()
	for r in "$@"; do
		case $r in kernel-*) deps+=("linux-image-${r#kernel-}:${r#kernel-}") ;; esac
	done
	if [ ${#deps[@]} -gt 0 ] && [ "$PIN_MODE" = resolve ]; then
		apt-cache depends "${deps[@]}" >"$RUN_OUT/kernel-depends.txt" 2>/dev/null || true
	fi
	for r in "$@"; do
		read -r name da v sha <<<"$(pinned "$r")"
		[ -z "$name" ] || want+=("$name:$da")
		[ "$PIN_MODE" = resolve ] || continue
		case $r in
		kernel-*)
			name=$(kernel_dep "${r#kernel-}")
			[ -z "$name" ] || want+=("$name:${r#kernel-}")
			if [ "$r" = kernel-amd64 ] && [ -n "$name" ]; then
				want+=("linux-headers-${name#linux-image-}:amd64")
			fi
			;;
		busybox-*) want+=("busybox-static:${r#busybox-}") ;;
		esac
	done
	[ ${#want[@]} = 0 ] || idx_load "${want[@]}"
}

# kernel_dep DA: the linux-image-* package linux-image-DA depends on
kernel_dep() {
	# the machine's own arch is printed without its ":ARCH" qualifier
	sed -n "/^linux-image-$1\(:$1\)\{0,1\}\$/,/^[^ ]/p" "$RUN_OUT/kernel-depends.txt" 2>/dev/null |
		sed -n "s/^ *Depends: \(linux-image-[^ <>]*\)\$/\1/p" | sed "s/:$1\$//" | head -n 1 || true
}

# resolve_roles ROLE...: fill PKG_* from the mirror (resolve) or pins.lock (pinned)
resolve_roles() {
	local r name da v sha
	for r in "$@"; do
		if [ "$PIN_MODE" = pinned ]; then
			read -r name da v sha <<<"$(pinned "$r")"
			[ -n "$v" ] || die "pins.lock ($PINS) has no row for $r: run without --pinned to resolve it"
			[ -n "$(index_field "$name" "$da" "$v" SHA256)" ] ||
				die "pins.lock: $r $name:$da $v is no longer on the mirror; run without --pinned to resolve current versions"
			set_role "$r" "$name" "$da" "$v"
			continue
		fi
		case $r in
		kernel-*) resolve_kernel "${r#kernel-}" ;;
		busybox-*)
			da=${r#busybox-}
			v=$(candidate busybox-static "$da")
			[ -n "$v" ] || die "cannot resolve busybox-static:$da: no candidate in the package index"
			set_role "$r" busybox-static "$da" "$v"
			;;
		headers) resolve_iio ;;
		headers-common | kbuild | source) ;; # resolved together with headers
		*) die "internal: unknown package role $r" ;;
		esac
	done
}

# log_substitutions: say where the resolved set differs from pins.lock
log_substitutions() {
	local r name da v sha what
	for r in "${ROLES[@]}"; do
		read -r name da v sha <<<"$(pinned "$r")"
		[ -n "$v" ] || { info "new: $r ${PKG_NAME[$r]}:${PKG_ARCH[$r]} ${PKG_VER[$r]} (pins.lock had no $r)"; continue; }
		[ "$name" = "${PKG_NAME[$r]}" ] && [ "$v" = "${PKG_VER[$r]}" ] && continue
		if [ -n "$(index_field "$name" "$da" "$v" SHA256)" ]; then
			what="superseded (the mirror still has it; the current one is used)"
		else
			what="dropped from the mirror"
		fi
		info "substituted: $r: pins.lock had $name:$da $v, $what; using ${PKG_NAME[$r]}:${PKG_ARCH[$r]} ${PKG_VER[$r]}"
	done
}

# fetch_deb ROLE: PKG_FILE/PKG_SHA of a verified .deb in CACHE/debs
fetch_deb() {
	local r=$1 name=${PKG_NAME[$1]} da=${PKG_ARCH[$1]} v=${PKG_VER[$1]} want f tmp got
	want=$(index_field "$name" "$da" "$v" SHA256)
	if [ -z "$want" ] && [ "${LAST_SET:-0}" = 1 ]; then
		want=$(awk -v r="$r" '$1 == r { print $5; exit }' "$CACHE/last-used.lock")
	fi
	[ -n "$want" ] || die "the package index has no SHA256 for $name:$da $v"
	if [ "$PIN_MODE" = pinned ]; then
		local p
		p=$(pinned "$r" | cut -d' ' -f4)
		[ "$p" = "$want" ] || die "pins.lock: $r $name $v has sha256 $p, the signed index says $want"
	fi
	mkdir -p "$CACHE/debs"
	f=$CACHE/debs/${name}_${v//:/%3a}_${da}.deb
	if [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$want" ]; then
		PKG_FILE[$r]=$f
		PKG_SHA[$r]=$want
		return 0
	fi
	[ "${OFFLINE:-0}" = 1 ] && die "the mirror is unreachable and $f is missing or changed"
	rm -f "$f"
	tmp=$(mktemp -d "$CACHE/debs/dl.XXXXXX")
	apt_opts_for "$da"
	if ! (cd "$tmp" && "${APT[@]}" "${APT_O[@]}" download "$(spec "$name" "$da")=$v") >"$tmp/log" 2>&1; then
		sed 's/^/      | /' "$tmp/log" | tail -n 5 >&2
		rm -rf "$tmp"
		die "apt-get download $(spec "$name" "$da")=$v failed ($r)"
	fi
	got=$(sha256sum "$tmp"/*.deb | cut -d' ' -f1)
	if [ "$got" != "$want" ]; then
		rm -rf "$tmp"
		die "sha256 mismatch for $name:$da $v: the signed index says $want, the download is $got"
	fi
	mv "$tmp"/*.deb "$f"
	rm -rf "$tmp"
	PKG_FILE[$r]=$f
	PKG_SHA[$r]=$want
}

# record: the run log, out/latest/packages.lock, pins.lock (merged), last-used.lock
record_packages() {
	local r out=$RUN_OUT/packages.lock tmp
	{
		echo "# Debian packages a qemu-tests run used: ROLE NAME ARCH VERSION SHA256"
		echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), mode $PIN_MODE$([ "${LAST_SET:-0}" = 1 ] && echo ", the last resolved set (${LAST_WHY:-})")"
		for r in "${ROLES[@]}"; do
			printf '%s %s %s %s %s\n' "$r" "${PKG_NAME[$r]}" "${PKG_ARCH[$r]}" "${PKG_VER[$r]}" "${PKG_SHA[$r]}"
		done
	} >"$out"
	step "packages used (recorded in $out and $PINS)"
	grep -v '^#' "$out" | while read -r r name da v sha; do info "$(printf '%-15s %-28s %-6s %-24s %s' "$r" "$name" "$da" "$v" "$sha")"; done
	[ "$PIN_MODE" = pinned ] && return 0
	# pins.lock: a record, merged so that a one-arch run keeps the other arch's rows
	tmp=$(mktemp)
	{
		cat <<-'EOF'
			# The Debian packages the last qemu-tests run used: ROLE NAME ARCH VERSION SHA256.
			# A record, not a requirement: each run resolves what the mirror offers now
			# (docs/qemu-tests.md) and rewrites this file; `qemu-tests/run --pinned` runs with
			# exactly these versions to reproduce a failure (while the mirror still has them).
		EOF
		{
			grep -v '^#' "$out"
			if [ -f "$PINS" ]; then
				awk 'NR == FNR { if ($1 !~ /^#/) seen[$1] = 1; next }
					$1 !~ /^#/ && NF == 5 && !($1 in seen)' "$out" "$PINS"
			fi
		} | sort
	} >"$tmp"
	if ! cmp -s "$tmp" "$PINS"; then cat "$tmp" >"$PINS"; fi
	rm -f "$tmp"
	[ "${LAST_SET:-0}" = 1 ] || cp "$out" "$CACHE/last-used.lock"
}

# use_last_resolved WHY ROLE...: the fallback when the mirror is unreachable or
# offers no consistent set: the set of the last successful resolution on this
# machine, provided each of its files is still cached with its recorded SHA-256
# (or can still be downloaded and checked against the index)
use_last_resolved() {
	local last=$CACHE/last-used.lock r name da v sha
	LAST_WHY=$1
	shift
	[ -f "$last" ] || die "$LAST_WHY, and this machine has no earlier resolved set ($last)"
	for r in "$@"; do
		read -r name da v sha <<<"$(awk -v r="$r" '$1 == r { print $2, $3, $4, $5; exit }' "$last")"
		[ -n "$v" ] || die "$LAST_WHY, and $last has no $r"
		set_role "$r" "$name" "$da" "$v"
	done
	LAST_SET=1
	info "$LAST_WHY: using the set resolved on $(sed -n '2s/^# \([^,]*\),.*/\1/p' "$last") ($last)"
}

# resolve_packages ARCH...: resolve, download, verify, record; sets KVER
resolve_packages() {
	local a r roles=()
	step "Debian packages: $([ "$PIN_MODE" = pinned ] && echo "exactly as pinned in $PINS" || echo "resolving what the mirror offers now")"
	for a in "$@"; do
		# shellcheck disable=SC2207
		roles+=($(roles_for "$a"))
	done
	local foreign=()
	for r in "${roles[@]}"; do
		case $r in busybox-armhf | busybox-i386) foreign+=("${r#busybox-}") ;; esac
	done
	idx_init
	local why
	if ! apt_update_quiet "${foreign[@]}"; then
		[ "$PIN_MODE" = pinned ] && die "apt-get update failed: cannot check pinned versions against the mirror"
		OFFLINE=1
		use_last_resolved "the Debian mirror is unreachable" "${roles[@]}"
	else
		preload_index "${roles[@]}"
		# Resolve once in a subshell: a mirror caught mid-sync (a new kernel
		# published before its headers) fails here and falls back to the last
		# consistent set; the second, real pass reads the same index tables.
		if [ "$PIN_MODE" = resolve ] && ! why=$( (resolve_roles "${roles[@]}") 2>&1 >/dev/null); then
			why=${why##*ERROR: }
			use_last_resolved "the mirror offers no consistent set now ($why)" "${roles[@]}"
		else
			resolve_roles "${roles[@]}"
			[ "$PIN_MODE" = pinned ] || log_substitutions
		fi
	fi
	for r in "${ROLES[@]}"; do fetch_deb "$r"; done
	record_packages
	for a in "$@"; do
		r=kernel-$(deb_arch "$a")
		KVER[$a]=${PKG_NAME[$r]#linux-image-}
	done
}

# apt_update_waiting LOG [APT OPTIONS...]: apt-get update; another apt holding
# the lists lock is waited for (up to 10 minutes), not taken for a dead mirror
apt_update_waiting() {
	local log=$1 i
	shift
	for i in $(seq 120); do
		"${APT[@]}" "$@" update >"$log" 2>&1 && return 0
		grep -q 'Could not get lock' "$log" || return 1
		[ "$i" = 1 ] && info "apt-get update: another apt holds the lists lock; waiting"
		sleep 5
	done
	return 1
}

# apt_update_quiet DA...: refresh the machine's lists, and the private lists of
# the given foreign arches (armhf, i386) when older than 6 hours; 1 when the
# mirror cannot be reached
apt_update_quiet() {
	local da
	if [ "$APT_UPDATED" != 1 ]; then
		apt_update_waiting "$RUN_OUT/apt-update.log" || { info "apt-get update failed (log: $RUN_OUT/apt-update.log)"; return 1; }
		# "update" can succeed with warnings when a source failed: insist on replies
		if grep -q '^Err:\|^[WE]: Failed to fetch' "$RUN_OUT/apt-update.log"; then
			info "apt-get update could not reach the mirror (log: $RUN_OUT/apt-update.log)"
			return 1
		fi
		APT_UPDATED=1
	fi
	for da in "$@"; do
		[ -n "$(find "$CACHE/apt-$da/lists" -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null)" ] && continue
		apt_foreign_update "$da" || { info "apt-get update for $da failed (log: $CACHE/apt-$da/update.log)"; return 1; }
	done
}

# unpack_kernel ARCH: KDIR[ARCH], the kernel's files unpacked once per .deb,
# used only while consistent (vmlinuz and modules of this release, from this .deb)
unpack_kernel() {
	local a=$1 r kv d stamp
	r=kernel-$(deb_arch "$a")
	kv=${KVER[$a]}
	d=$CACHE/kernel/${kv}_${PKG_VER[$r]//:/%3a}
	stamp="${PKG_NAME[$r]} ${PKG_VER[$r]} ${PKG_SHA[$r]}"
	KDIR[$a]=$d
	if [ -f "$d/.stamp" ] && [ "$(cat "$d/.stamp")" = "$stamp" ] && [ -f "$d/boot/vmlinuz-$kv" ] &&
		[ -f "$d/lib/modules/$kv/modules.dep" ]; then
		return 0
	fi
	[ -e "$d" ] && info "cached kernel in $d is incomplete or from another .deb: unpacking again"
	rm -rf "$d"
	mkdir -p "$d"
	dpkg-deb -x "${PKG_FILE[$r]}" "$d" || die "unpacking ${PKG_FILE[$r]} failed"
	[ -f "$d/boot/vmlinuz-$kv" ] && [ -d "$d/lib/modules/$kv" ] ||
		die "${PKG_FILE[$r]} has no boot/vmlinuz-$kv or lib/modules/$kv"
	depmod -b "$d" "$kv" || die "depmod for $kv failed"
	echo "$stamp" >"$d/.stamp"
}

# unpack_busybox DA: CACHE/busybox/DA/bin/busybox from the resolved .deb
unpack_busybox() {
	local da=$1 r d
	r=busybox-$da
	d=$CACHE/busybox/$da
	if [ -f "$d/.stamp" ] && [ "$(cat "$d/.stamp")" = "${PKG_SHA[$r]}" ] && [ -x "$d/bin/busybox" ]; then
		return 0
	fi
	rm -rf "$d"
	mkdir -p "$d"
	dpkg-deb -x "${PKG_FILE[$r]}" "$d" || die "unpacking ${PKG_FILE[$r]} failed"
	[ -x "$d/bin/busybox" ] || die "${PKG_FILE[$r]} has no bin/busybox"
	echo "${PKG_SHA[$r]}" >"$d/.stamp"
}

fetch_arch_packages() {
	local a=$1 da
	da=$(deb_arch "$a")
	unpack_kernel "$a"
	unpack_busybox "$da"
	unpack_busybox "$(compat_arch "$a")"
	info "kernel ${KVER[$a]} (${PKG_VER[kernel-$da]}), busybox ${PKG_VER[busybox-$da]}"
}

# role_glob ROLE: the cache file names of any version of ROLE's package
role_glob() {
	case $1 in
	kernel-*) echo "linux-image-*-${1#kernel-}_*_${1#kernel-}.deb" ;;
	busybox-*) echo "busybox-static_*_${1#busybox-}.deb" ;;
	headers) echo "linux-headers-*-amd64_*_amd64.deb" ;;
	headers-common) echo "linux-headers-*-common_*_all.deb" ;;
	kbuild) echo "linux-kbuild-*_amd64.deb" ;;
	source) echo "linux-source-*_all.deb" ;;
	esac
}

# prune_cache: drop cached .debs, kernels and iio builds of the roles and arches
# this run resolved that its set does not use (the cache would otherwise grow by
# a kernel per Debian update); a one-arch run keeps the other arch's files
prune_cache() {
	local r a f keep
	[ "$PIN_MODE" = resolve ] && [ "${LAST_SET:-0}" != 1 ] || return 0
	for r in "${ROLES[@]}"; do
		keep=$(basename "${PKG_FILE[$r]}")
		# shellcheck disable=SC2046
		for f in $(cd "$CACHE/debs" && compgen -G "$(role_glob "$r")" || true); do
			[ "$f" = "$keep" ] && continue
			info "pruning cache/debs/$f (not in this run's set)"
			rm -f "$CACHE/debs/$f"
		done
	done
	for a in "${!KDIR[@]}"; do
		for f in "$CACHE"/kernel/*-"$(deb_arch "$a")"_*; do
			[ -e "$f" ] && [ "$f" != "${KDIR[$a]}" ] || continue
			info "pruning $f (not this run's kernel)"
			rm -rf "$f"
		done
	done
	if [ -n "${IIO_DIR:-}" ]; then
		for f in "$CACHE"/iio/*; do
			[ -e "$f" ] && [ "$f" != "$IIO_DIR" ] || continue
			info "pruning $f (built for another kernel)"
			rm -rf "$f"
		done
	fi
}
