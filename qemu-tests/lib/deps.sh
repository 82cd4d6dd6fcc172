# shellcheck shell=bash
# Host dependencies (idempotent apt/rustup installs) and pinned Debian packages.

APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -q)
APT_UPDATED=0
apt_update_once() {
	[ "$APT_UPDATED" = 1 ] && return 0
	"${APT[@]}" update >"$RUN_OUT/apt-update.log" 2>&1 || { cat "$RUN_OUT/apt-update.log"; die "apt-get update failed"; }
	APT_UPDATED=1
}

pkg_installed() {
	local p=$1
	case $p in *:*) ;; *) p=$p:$(dpkg --print-architecture) ;; esac
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# apt_install PKG...: install the ones that are missing.
apt_install() {
	local p missing=()
	for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
	[ ${#missing[@]} -eq 0 ] && return 0
	info "apt-get install ${missing[*]}"
	apt_update_once
	DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y --no-install-recommends "${missing[@]}" \
		>>"$RUN_OUT/apt-install.log" 2>&1 || { tail -n 30 "$RUN_OUT/apt-install.log"; die "apt-get install ${missing[*]} failed"; }
}

# qemu-system must match the installed qemu-utils: the machine image carries
# qemu-utils from bookworm-backports (10.x), whose Breaks: forbids bookworm's
# qemu-system-common 7.2. Install from backports through a private sources list
# (the machine's apt configuration stays untouched), else from bookworm.
install_qemu_system() {
	local need=() p
	for p in qemu-system-arm qemu-system-x86; do pkg_installed "$p" || need+=("$p"); done
	[ ${#need[@]} -eq 0 ] && return 0
	if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo12; then
		local d=$CACHE/apt-bpo
		mkdir -p "$d/lists/partial"
		cat >"$d/sources.list" <<-'EOF'
			deb http://deb.debian.org/debian bookworm main
			deb http://deb.debian.org/debian bookworm-updates main
			deb http://deb.debian.org/debian-security bookworm-security main
			deb http://deb.debian.org/debian bookworm-backports main
		EOF
		local o=(-o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::lists=$d/lists")
		info "apt-get install -t bookworm-backports ${need[*]} (matches qemu-utils from backports)"
		"${APT[@]}" "${o[@]}" update >"$RUN_OUT/apt-bpo.log" 2>&1 || { cat "$RUN_OUT/apt-bpo.log"; die "apt-get update (backports) failed"; }
		DEBIAN_FRONTEND=noninteractive "${APT[@]}" "${o[@]}" install -y --no-install-recommends \
			-t bookworm-backports "${need[@]}" qemu-utils >>"$RUN_OUT/apt-bpo.log" 2>&1 ||
			{ tail -n 30 "$RUN_OUT/apt-bpo.log"; die "installing qemu-system from backports failed"; }
	else
		apt_install "${need[@]}" qemu-utils
	fi
}

host_deps() {
	step "host dependencies"
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		info "dpkg --add-architecture arm64"
		dpkg --add-architecture arm64
		APT_UPDATED=0
		apt_update_once
	fi
	install_qemu_system
	apt_install gcc gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu \
		pkg-config libseccomp-dev libostree-dev libseccomp-dev:arm64 libostree-dev:arm64 \
		busybox-static cpio gzip xz-utils zstd e2fsprogs kmod file python3 ca-certificates
	# debootstrap guests: arm64 is a foreign debootstrap (binfmt + qemu-user-static)
	local s
	for s in "${SEL[@]}"; do
		if [ "$(scenario_guest "$s")" = debootstrap ]; then
			apt_install debootstrap qemu-user-static binfmt-support
			break
		fi
	done
	if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
		info "rustup target add aarch64-unknown-linux-gnu"
		rustup target add aarch64-unknown-linux-gnu >"$RUN_OUT/rustup.log" 2>&1 || { cat "$RUN_OUT/rustup.log"; die "rustup target add failed"; }
	fi
}

# ---- pins -------------------------------------------------------------------
PINS=$QT_DIR/pins.lock

# pin NAME ARCH -> "VERSION SHA256"
pin() { awk -v n="$1" -v a="$2" '$1==n && $2==a { print $3, $4; exit }' "$PINS"; }

kernel_abi() { awk '$1 ~ /^linux-image-.*-(arm64|amd64)$/ { sub(/^linux-image-/, "", $1); sub(/-(arm64|amd64)$/, "", $1); print $1; exit }' "$PINS"; }
kernel_pkg() { echo "linux-image-$(kernel_abi)-$(deb_arch "$1")"; }
kver() { echo "$(kernel_abi)-$(deb_arch "$1")"; }

need_arch_pins() {
	local a
	for a in "$@"; do
		[ -n "$(kernel_abi)" ] && [ -n "$(pin "$(kernel_pkg "$a")" "$(deb_arch "$a")")" ] &&
			[ -n "$(pin busybox-static "$(deb_arch "$a")")" ] ||
			die "pins.lock lacks the kernel or busybox for $a: run qemu-tests/run --repin"
	done
}

# Packages of architectures dpkg is not configured for (armhf, i386: the 32-bit
# binaries the compat checks run) come through a private apt state directory,
# so the machine's dpkg/apt architecture list stays as it is.
apt_foreign_opts() { # ARCH -> prints apt -o options
	local d=$CACHE/apt-$1
	echo "-o Dir::Etc::sourcelist=$d/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::lists=$d/lists -o Dir::Cache=$d/cache -o APT::Architectures::=$1"
}
apt_foreign_update() {
	local d=$CACHE/apt-$1
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
	# bookworm main only: all we take from these architectures is busybox-static
	echo "deb http://deb.debian.org/debian bookworm main" >"$d/sources.list"
	[ -n "$(ls "$d/lists" 2>/dev/null | grep -v partial)" ] && [ "${2:-}" != force ] && return 0
	# shellcheck disable=SC2046
	"${APT[@]}" $(apt_foreign_opts "$1") update >"$d/update.log" 2>&1 || { cat "$d/update.log" >&2; die "apt-get update for $1 failed"; }
}
compat_arch() { case $1 in aarch64) echo armhf ;; x86_64) echo i386 ;; esac; }

# deb_file NAME ARCH: path of the cached, verified .deb (downloads it if needed).
deb_file() {
	local name=$1 arch=$2 v sha f tmp got
	read -r v sha <<<"$(pin "$name" "$arch")"
	[ -n "$v" ] || die "no pin for $name:$arch in $PINS (qemu-tests/run --repin)"
	mkdir -p "$CACHE/debs"
	f=$CACHE/debs/${name}_${v//:/%3a}_${arch}.deb
	if [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sha" ]; then
		echo "$f"
		return 0
	fi
	tmp=$(mktemp -d "$CACHE/debs/dl.XXXXXX")
	local spec="$name:$arch=$v" o=()
	[ "$arch" = all ] && spec="$name=$v"
	case $arch in armhf|i386) apt_foreign_update "$arch"; read -ra o <<<"$(apt_foreign_opts "$arch")" ;; esac
	if ! (cd "$tmp" && "${APT[@]}" "${o[@]}" download "$spec") >"$tmp/log" 2>&1; then
		if [ ${#o[@]} -gt 0 ]; then apt_foreign_update "$arch" force; else apt_update_once; fi
		(cd "$tmp" && "${APT[@]}" "${o[@]}" download "$spec") >"$tmp/log" 2>&1 ||
			{ cat "$tmp/log" >&2; rm -rf "$tmp"; die "apt-get download $spec failed: the mirror may have dropped this version; run qemu-tests/run --repin"; }
	fi
	got=$(sha256sum "$tmp"/*.deb | cut -d' ' -f1)
	if [ "$got" != "$sha" ]; then
		rm -rf "$tmp"
		die "sha256 mismatch for $spec: pinned $sha, got $got"
	fi
	mv "$tmp"/*.deb "$f"
	rm -rf "$tmp"
	echo "$f"
}

# unpack_deb NAME ARCH DIR: dpkg-deb -x once into DIR (marker file).
unpack_deb() {
	local f
	f=$(deb_file "$1" "$2")
	if [ ! -f "$3/.unpacked-$(basename "$f")" ]; then
		mkdir -p "$3"
		dpkg-deb -x "$f" "$3"
		touch "$3/.unpacked-$(basename "$f")"
	fi
}

fetch_arch_packages() {
	local a=$1 da
	da=$(deb_arch "$a")
	KDIR[$a]=$CACHE/kernel/$(kver "$a")
	unpack_deb "$(kernel_pkg "$a")" "$da" "${KDIR[$a]}"
	if [ ! -f "${KDIR[$a]}/lib/modules/$(kver "$a")/modules.dep" ]; then
		depmod -b "${KDIR[$a]}" "$(kver "$a")"
	fi
	unpack_deb busybox-static "$da" "$CACHE/busybox/$da"
	unpack_deb busybox-static "$(compat_arch "$a")" "$CACHE/busybox/$(compat_arch "$a")"
	info "kernel $(kver "$a") ($(pin "$(kernel_pkg "$a")" "$da" | cut -d' ' -f1)), busybox $(pin busybox-static "$da" | cut -d' ' -f1)"
}
declare -A KDIR

# repin: resolve the current candidates and record version + sha256.
repin() {
	step "repin: resolving current Debian versions"
	apt_update_once
	local abi tmp
	abi=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*\)-amd64$/\1/p' | head -n1)
	[ -n "$abi" ] || die "cannot resolve the kernel ABI from linux-image-amd64"
	local rows=(
		"linux-image-$abi-arm64 arm64"
		"linux-image-$abi-amd64 amd64"
		"busybox-static arm64"
		"busybox-static amd64"
		"busybox-static armhf"
		"busybox-static i386"
		"linux-headers-$abi-amd64 amd64"
		"linux-headers-$abi-common all"
		"linux-kbuild-6.1 amd64"
		"linux-source-6.1 all"
	)
	tmp=$(mktemp -d)
	{
		sed -n '/^#/p' "$PINS"
		local r name arch v spec sha o
		for r in "${rows[@]}"; do
			read -r name arch <<<"$r"
			spec=$name:$arch
			[ "$arch" = all ] && spec=$name
			o=()
			case $arch in armhf|i386) apt_foreign_update "$arch" force; read -ra o <<<"$(apt_foreign_opts "$arch")" ;; esac
			v=$(apt-cache "${o[@]}" policy "$spec" | sed -n 's/^  Candidate: //p')
			[ -n "$v" ] && [ "$v" != "(none)" ] || die "no candidate for $spec"
			rm -f "$tmp"/*.deb
			(cd "$tmp" && "${APT[@]}" "${o[@]}" download "$spec=$v") >/dev/null 2>&1 || die "download $spec=$v failed"
			sha=$(sha256sum "$tmp"/*.deb | cut -d' ' -f1)
			mkdir -p "$CACHE/debs"
			mv "$tmp"/*.deb "$CACHE/debs/${name}_${v//:/%3a}_${arch}.deb"
			printf '%s %s %s %s\n' "$name" "$arch" "$v" "$sha"
			info "$name $arch $v" >&2
		done
	} >"$tmp/pins"
	mv "$tmp/pins" "$PINS"
	rm -rf "$tmp"
	info "wrote $PINS"
}
