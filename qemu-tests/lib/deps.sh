# shellcheck shell=bash
# Host dependencies (idempotent apt/rustup installs). The guests' Debian
# packages are resolved in packages.sh.

APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -q)
APT_UPDATED=0
apt_update_once() {
	[ "$APT_UPDATED" = 1 ] && return 0
	apt_update_waiting "$RUN_OUT/apt-update.log" || { tail -n 5 "$RUN_OUT/apt-update.log"; die "apt-get update failed (log: $RUN_OUT/apt-update.log)"; }
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
	# the guests' OCI registry (needs: registry; lib/registry.sh)
	if registry_needed; then apt_install docker-registry; fi
	if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
		info "rustup target add aarch64-unknown-linux-gnu"
		rustup target add aarch64-unknown-linux-gnu >"$RUN_OUT/rustup.log" 2>&1 || { cat "$RUN_OUT/rustup.log"; die "rustup target add failed"; }
	fi
}
