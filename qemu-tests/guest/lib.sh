# Helpers for scenarios (sourced: . /qt/lib.sh). POSIX sh (busybox ash).
# A scenario passes when it exits 0; print why on failure (qt_fail).

QT_ARCH=$(uname -m)

qt_fail() { echo "FAIL: $*"; exit 1; }
qt_ok() { echo "ok: $*"; }
qt_skip_not_applicable() { echo "n/a: $*"; exit 0; }

# qt_disk SERIAL: the /dev/vdX whose virtio serial is SERIAL (host -device ...,serial=).
qt_disk() {
	for b in /sys/block/vd*; do
		[ -e "$b/serial" ] || continue
		if [ "$(cat "$b/serial")" = "$1" ]; then echo "/dev/${b##*/}"; return 0; fi
	done
	return 1
}

# qt_mount_state DEV: the persistent disk at /state; appmgr's state and config on it.
qt_mount_state() {
	mkdir -p /state
	mount -t ext4 "$1" /state || { echo "qt: mount $1 failed"; return 1; }
	mkdir -p /state/state /state/config /state/fixtures
	export APPMGR_STATE_DIR=/state/state APPMGR_CONFIG_DIR=/state/config
}

# qt_need_appmgr: fail loudly (never skip) when the appmgr binaries are absent.
qt_need_appmgr() {
	for b in appmgr "$@"; do
		if ! command -v "$b" >/dev/null 2>&1; then
			echo "FAIL: '$b' is not in the guest image; the appmgr build for $QT_ARCH says:"
			sed 's/^/    /' /opt/appmgr/BUILD-STATUS 2>/dev/null
			exit 1
		fi
	done
}

# qt_run EXPECTED_RC CMD...: run, show the command and its output, check the exit code.
qt_run() {
	want=$1
	shift
	echo "+ $*"
	"$@" >/tmp/qt-out 2>&1
	got=$?
	sed 's/^/  | /' /tmp/qt-out
	[ "$got" = "$want" ] || qt_fail "exit $got, expected $want: $*"
}
# qt_out: output of the last qt_run
qt_out() { cat /tmp/qt-out; }

# qt_mk_runtime DIR: a runtime tree (what appears at /usr) from the guest's
# busybox-static for this arch: bin/busybox plus applet symlinks. The
# debootstrap guest has no /bin/busybox: the stage's /qt/busybox is the same.
qt_mk_runtime() {
	mkdir -p "$1/bin" "$1/lib" "$1/share"
	if [ -x /bin/busybox ]; then cp /bin/busybox "$1/bin/busybox"; else cp /qt/busybox "$1/bin/busybox"; fi
	for a in sh ash cat echo ls sleep head dd yes true false id mkdir rm env sha256sum grep sed awk seq tail wc cut printf test kill ps; do
		ln -sf busybox "$1/bin/$a"
	done
}

# qt_mk_app DIR VERSION: an app tree (what appears at /app). Its command,
# bin/qt-cmd, prints "hello from version VERSION uid=N" without arguments and
# execs its arguments otherwise (appmgr run ID -- CMD ARGS...), so one app
# serves every check. bin/appmgr-probe is the static probe (if built) and
# bin/busybox32 a 32-bit static busybox (the compat checks).
qt_mk_app() {
	mkdir -p "$1/bin" "$1/share"
	cat >"$1/bin/qt-cmd" <<-EOS
		#!/usr/bin/sh
		if [ \$# -eq 0 ]; then echo "hello from version $2 uid=\$(id -u)"; exit 0; fi
		exec "\$@"
	EOS
	chmod 755 "$1/bin/qt-cmd"
	echo "$2" >"$1/share/version"
	if command -v appmgr-probe >/dev/null 2>&1; then cp "$(command -v appmgr-probe)" "$1/bin/appmgr-probe"; fi
	cp /qt/compat/busybox32 "$1/bin/busybox32"
}

# qt_manifest FILE ID KIND VERSION [RUNTIME COMMAND]: write a manifest.toml
# (design.md's keys); append [permissions]/[resources] tables yourself.
qt_manifest() {
	{
		echo "id = \"$2\""
		echo "kind = \"$3\""
		echo "version = \"$4\""
		echo "arch = \"$QT_ARCH\""
		echo "branch = \"stable\""
		if [ "$3" = app ]; then
			echo "runtime = \"$5/$QT_ARCH/stable\""
			echo "command = \"$6\""
		fi
	} >"$1"
}

# qt_setup_keys DIR: generate a signing key in DIR and trust it.
qt_setup_keys() {
	mkdir -p "$1"
	qt_run 0 appmgr key generate --out "$1/test"
	qt_run 0 appmgr trust add "$1/test.pub"
}

# qt_bundle KIND ID VERSION OUT [RUNTIME COMMAND]: build a tree and sign a
# bundle (app defaults: runtime org.qt.Runtime, command qt-cmd).
# QT_MANIFEST_EXTRA is appended to the manifest ([permissions], [resources]);
# QT_BUNDLE_PAD_KB=N adds share/pad, N KiB from /dev/urandom (a bigger bundle
# that no compression shrinks, e.g. for a download long enough to cut).
qt_bundle() {
	d=/tmp/qt-tree-$2-$3
	rm -rf "$d"
	mkdir -p "$d"
	if [ "$1" = runtime ]; then qt_mk_runtime "$d/root"; else qt_mk_app "$d/root" "$3"; fi
	if [ -n "${QT_BUNDLE_PAD_KB:-}" ]; then
		dd if=/dev/urandom of="$d/root/share/pad" bs=1024 count="$QT_BUNDLE_PAD_KB" 2>/dev/null ||
			qt_fail "cannot write $QT_BUNDLE_PAD_KB KiB of padding"
	fi
	qt_manifest "$d/manifest.toml" "$2" "$1" "$3" "${5:-org.qt.Runtime}" "${6:-qt-cmd}"
	[ -n "${QT_MANIFEST_EXTRA:-}" ] && printf '%s\n' "$QT_MANIFEST_EXTRA" >>"$d/manifest.toml"
	qt_run 0 appmgr bundle create --manifest "$d/manifest.toml" --root "$d/root" --key "${QT_KEY:-/tmp/qt-keys/test.key}" --out "$4"
}

# ---- the host's OCI registry (needs: registry; scenario 95)
# The host's docker-registry as the guest sees it: qemu's user-mode NIC with
# restrict=on reaches this address and port and nothing else (lib/registry.sh).
QT_REGISTRY=10.0.2.100:5000
# qt_net_up: eth0 (virtio_net, loaded at boot) up as 10.0.2.15/24, slirp's guest
# address; the registry is on-link, no route needed. Idempotent (setup, prepare
# and check run in one boot).
qt_net_up() {
	qt_wait 10 test -e /sys/class/net/eth0 ||
		qt_fail "no eth0: the host gives a NIC only to scenarios that declare 'needs: registry'"
	ip link set eth0 up || qt_fail "ip link set eth0 up failed"
	ip -4 addr show dev eth0 | grep -q 'inet 10\.0\.2\.15/' ||
		ip addr add 10.0.2.15/24 dev eth0 || qt_fail "ip addr add 10.0.2.15/24 dev eth0 failed"
}

# qt_policy NAME TOML: write a policy file into the config dir.
qt_policy() {
	mkdir -p "${APPMGR_CONFIG_DIR:-/etc/appmgr}/policies.d"
	printf '%s\n' "$2" >"${APPMGR_CONFIG_DIR:-/etc/appmgr}/policies.d/$1.toml"
}

# qt_json_field KEY [FILE]: a top-level scalar of the JSON object in FILE (default:
# the last qt_run's output), strings unquoted. Nested objects and arrays are
# dropped first, so e.g. "previous":{"version":...} never answers for "version"
# (serde_json sorts keys: "previous" comes before "version").
# qt_version_of ID: the installed version of ID, or "absent" (appmgr info's exit 5);
# fails, printing appmgr's answer, on any other error.
qt_version_of() {
	appmgr --json info "$1" >/tmp/info.out 2>&1
	rc=$?
	if [ $rc = 5 ]; then echo absent; return 0; fi
	[ $rc = 0 ] || { cat /tmp/info.out; return 1; }
	qt_json_field version /tmp/info.out
}

qt_json_field() {
	s=$(tr -d '\n' <"${2:-/tmp/qt-out}")
	s=${s#*\{}
	s=${s%\}*}
	while printf '%s' "$s" | grep -q '[[{][^][{}]*[]}]'; do
		s=$(printf '%s' "$s" | sed 's/[[{][^][{}]*[]}]/null/g')
	done
	printf '%s\n' "$s" | tr ',' '\n' | sed -n "s/^ *\"$1\" *: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *\$/\1/p" | head -n 1
}

# qt_json_get PATH [FILE]: one value of the JSON document in FILE (default: the
# last qt_run's output), from its first line that starts with "{" or "[" on
# (what precedes it, e.g. a warning, is skipped). PATH is keys and array
# indices joined by dots: "open.ok", "open.rdev.0", "channels.1.device"; a
# trailing ".#" gives the number of members of an object or array. Strings come
# unquoted, objects and arrays as {} and []. Exit 1 (and no output) when the
# path is absent or the document is malformed. A small parser in awk (the
# guests have no jq or python).
qt_json_get() {
	awk -v want="$1" '
	function ws() { while (pos <= n && index(" \t\r\n", substr(s, pos, 1))) pos++ }
	function str(   c, d, out) {
		if (substr(s, pos, 1) != "\"") { bad = 1; return "" }
		pos++; out = ""
		while (pos <= n) {
			c = substr(s, pos, 1)
			if (c == "\\") {
				d = substr(s, pos + 1, 1)
				if (d == "n") out = out "\n"; else if (d == "t") out = out "\t"
				else if (d == "u") { out = out "?"; pos += 4 } else out = out d
				pos += 2; continue
			}
			if (c == "\"") { pos++; return out }
			out = out c; pos++
		}
		bad = 1; return out
	}
	function key(p, k) { return p == "" ? k : p "." k }
	function val(p,   c, d, k, i, st) {
		if (bad) return
		ws(); c = substr(s, pos, 1)
		if (c == "{" || c == "[") {
			pos++; i = 0; ws()
			if (substr(s, pos, 1) == (c == "{" ? "}" : "]")) { pos++ }
			else while (!bad) {
				if (c == "{") { ws(); k = str(); ws(); if (substr(s, pos, 1) != ":") { bad = 1; return }; pos++; val(key(p, k)) }
				else val(key(p, i))
				i++; ws(); d = substr(s, pos, 1); pos++
				if (d == (c == "{" ? "}" : "]")) break
				if (d != ",") { bad = 1; return }
			}
			V[p] = (c == "{" ? "{}" : "[]"); L[p] = i; HAS[p] = 1; return
		}
		if (c == "\"") { V[p] = str(); HAS[p] = 1; return }
		st = pos
		while (pos <= n && !index(",}] \t\r\n", substr(s, pos, 1))) pos++
		if (pos == st) { bad = 1; return }
		V[p] = substr(s, st, pos - st); HAS[p] = 1
	}
	on == 0 && /^[[:space:]]*[[{]/ { on = 1 }
	on { s = s $0 "\n" }
	END {
		n = length(s); pos = 1; bad = 0
		if (n == 0) exit 1
		val("")
		if (bad) exit 1
		if (want ~ /\.#$/ || want == "#") {
			w = want; sub(/\.?#$/, "", w)
			if (!(w in L)) exit 1
			print L[w]; exit 0
		}
		if (!(want in HAS)) exit 1
		print V[want]
	}' "${2:-/tmp/qt-out}"
}

# qt_wait SECONDS CMD...: poll every second (bounded) until CMD succeeds.
qt_wait() {
	_n=$1
	shift
	while [ "$_n" -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 1
		_n=$((_n - 1))
	done
	"$@" >/dev/null 2>&1
}

# qt_install_package: in the debootstrap guest, install appmgr, appmgrd and
# appmgr-portald with their units, bus policies, D-Bus activation files,
# tmpfiles and the board profiles where yocto-layer's appmgr_git.bb do_install
# puts them (from /opt/appmgr/bin and the stage's /qt/data), enable both
# services as the recipe does (SYSTEMD_AUTO_ENABLE), and make systemd and
# dbus-daemon read them. Exports PATH, APPMGR_STATE_DIR, APPMGR_CONFIG_DIR.
qt_install_package() {
	_L=/usr/libexec/appmgr
	for _f in /qt/data/appmgrd/appmgrd.service /qt/data/portals/appmgr-portald.service \
		/qt/data/board-support/qemu-virt-x86_64.toml; do
		[ -f $_f ] || qt_fail "$_f was not staged (qemu-tests/lib/image.sh stage_initramfs)"
	done
	mkdir -p $_L /usr/share/dbus-1/system.d /usr/share/dbus-1/system-services \
		/usr/share/appmgr/board-support /etc/appmgr/policies.d /etc/appmgr/trust.d /etc/appmgr/preinstall.d
	for _b in appmgr appmgr-ops appmgr-launch; do
		install -m 0755 /opt/appmgr/bin/$_b $_L/$_b || qt_fail "cannot install $_b"
	done
	# appmgrd and appmgr-portald are the appmgr executable (appmgr/multicall).
	ln -sfn appmgr $_L/appmgrd
	ln -sfn appmgr $_L/appmgr-portald
	ln -sf ../libexec/appmgr/appmgr /usr/bin/appmgr
	install -m 0644 /qt/data/board-support/*.toml /usr/share/appmgr/board-support/
	install -m 0644 /qt/data/appmgrd/appmgrd.service /qt/data/portals/appmgr-portald.service /usr/lib/systemd/system/
	install -m 0644 /qt/data/appmgrd/org.appmgr.Manager1.conf /qt/data/portals/org.appmgr.Portal1.conf /usr/share/dbus-1/system.d/
	install -m 0644 /qt/data/appmgrd/org.appmgr.Manager1.service /qt/data/portals/org.appmgr.Portal1.service \
		/usr/share/dbus-1/system-services/
	install -m 0644 /qt/data/appmgrd/appmgr.tmpfiles.conf /usr/lib/tmpfiles.d/appmgr.conf
	export PATH=$_L:$PATH APPMGR_STATE_DIR=/var/lib/appmgr APPMGR_CONFIG_DIR=/etc/appmgr
	qt_run 0 systemd-tmpfiles --create /usr/lib/tmpfiles.d/appmgr.conf
	qt_run 0 systemctl daemon-reload
	qt_run 0 systemctl reload dbus
	qt_run 0 systemctl enable appmgrd appmgr-portald
}

# qt_app_users ID...: passwd and group entries appmgr-UID for the uids appmgr
# allotted to the installed apps, then a bus reload. dbus-daemon serves a uid
# and applies <policy user="UID"> only when NSS resolves it; the debootstrap
# guest has no nss-systemd to read the /run/userdb records appmgr publishes,
# so this is what docs/daemon.md asks of an integrator without it.
qt_app_users() {
	for _id in "$@"; do
		appmgr --json info "$_id" >/tmp/qt-info.json 2>&1 || { cat /tmp/qt-info.json; qt_fail "appmgr info $_id failed"; }
		_u=$(qt_json_get uid /tmp/qt-info.json) || qt_fail "appmgr info $_id has no uid: $(cat /tmp/qt-info.json)"
		grep -q "^appmgr-$_u:" /etc/passwd ||
			echo "appmgr-$_u:x:$_u:$_u:$_id:/nonexistent:/usr/sbin/nologin" >>/etc/passwd
		grep -q "^appmgr-$_u:" /etc/group || echo "appmgr-$_u:x:$_u:" >>/etc/group
	done
	qt_run 0 systemctl reload dbus
}

# ---- the portal scenarios (90, 91)
QT_PORTAL_DENIED=org.appmgr.Error.AccessDenied
# portal-granted, portal-denied, portal-revoked (appmgr/core/src/journal.rs)
QT_PORTAL_ID_GRANTED=5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e10
QT_PORTAL_ID_DENIED=5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e11
QT_PORTAL_ID_REVOKED=5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e12
# qt_portal_up: the qemu board profile configured, appmgrd (re)started, and
# appmgr-portald (pulled in by its Wants=) active within 30 s
qt_portal_up() {
	printf 'board = "qemu-virt-x86_64"\n' >/etc/appmgr/appmgr.toml
	qt_run 0 systemctl restart appmgrd
	_portald_up() { [ "$(systemctl show -p ActiveState --value appmgr-portald)" = active ]; }
	qt_wait 30 _portald_up || qt_portal_fail "appmgr-portald did not start with appmgrd"
}
# qt_portal_fail MSG: fail with the portal's and appmgrd's journal
qt_portal_fail() {
	echo "--- journalctl -u appmgr-portald -u appmgrd (last 40 lines)"
	journalctl -u appmgr-portald -u appmgrd --no-pager -n 40 -o short-monotonic 2>&1 | sed 's/^/  | /'
	qt_fail "$*"
}
# qt_portal_probe ID OUT ARGS...: appmgr-probe ARGS in ID's sandbox; its JSON in OUT,
# its stderr in OUT.err; fails unless it printed a JSON object
qt_portal_probe() {
	_id=$1 _out=$2
	shift 2
	echo "+ appmgr run $_id -- /app/bin/appmgr-probe $*"
	appmgr run "$_id" -- /app/bin/appmgr-probe "$@" >"$_out" 2>"$_out.err"
	_rc=$?
	sed 's/^/  | /' "$_out"
	sed 's/^/  ! /' "$_out.err"
	echo "  (exit $_rc)"
	qt_json_get "#" "$_out" >/dev/null || qt_portal_fail "$_id: the probe printed no JSON object (exit $_rc)"
}

# qt_portal_probe_bg ID OUT ARGS...: the same in the background ($! is its job; after
# `wait`, qt_portal_show_bg ID OUT prints it and fails unless it printed a JSON object)
qt_portal_probe_bg() {
	_id=$1 _out=$2
	shift 2
	echo "+ appmgr run $_id -- /app/bin/appmgr-probe $* &"
	appmgr run "$_id" -- /app/bin/appmgr-probe "$@" >"$_out" 2>"$_out.err" &
}
qt_portal_show_bg() {
	echo "  $1:"
	sed 's/^/  | /' "$2"
	sed 's/^/  ! /' "$2.err"
	qt_json_get "#" "$2" >/dev/null || qt_portal_fail "$1: the probe printed no JSON object"
}

# ---- iio_dummy (needs: iio; scenarios 70, 91)
# qt_iio_load: the kernel's IIO core and buffer modules (modprobe in the
# debootstrap guest; the busybox guest loaded them at boot), then the
# out-of-tree ones staged in /qt/extra/iio, in dependency order; configfs
# mounted. Prints the configfs mount point.
qt_iio_load() {
	for _m in industrialio configfs kfifo_buf industrialio-triggered-buffer; do
		grep -q "^$(echo $_m | tr - _) " /proc/modules && continue
		modprobe $_m >&2 || qt_fail "modprobe $_m failed"
	done
	[ -f /qt/extra/iio/iio_dummy.ko ] || qt_fail "the iio_dummy modules were not staged into /qt/extra/iio (needs: iio)"
	for _m in industrialio-configfs industrialio-sw-device industrialio-sw-trigger iio-trig-hrtimer iio_dummy; do
		grep -q "^$(echo $_m | tr - _) " /proc/modules && continue
		insmod /qt/extra/iio/$_m.ko >&2 || qt_fail "insmod $_m failed"
	done
	_cfg=$(awk '$3 == "configfs" { print $2; exit }' /proc/mounts)
	if [ -z "$_cfg" ]; then
		_cfg=/sys/kernel/config
		mount -t configfs none $_cfg >&2 || qt_fail "mount configfs failed"
	fi
	echo "$_cfg"
}
# qt_iio_device CFG NAME: creates the dummy IIO device NAME (if missing), prints its
# sysfs directory
qt_iio_device() {
	[ -d "$1/iio/devices/dummy/$2" ] || mkdir "$1/iio/devices/dummy/$2" || qt_fail "cannot create the dummy IIO device $2"
	_d=$(grep -lx "$2" /sys/bus/iio/devices/iio:device*/name | head -n1)
	[ -n "$_d" ] || qt_fail "no iio:device named $2"
	echo "${_d%/name}"
}
# qt_iio_trigger CFG NAME DEVDIR: creates the hrtimer trigger NAME (if missing) and
# makes it DEVDIR's current trigger (what a board's udev rule does)
qt_iio_trigger() {
	[ -d "$1/iio/triggers/hrtimer/$2" ] || mkdir "$1/iio/triggers/hrtimer/$2" || qt_fail "cannot create the hrtimer trigger $2"
	echo "$2" >"$3/trigger/current_trigger" || qt_fail "cannot make $2 the current trigger of $3"
	[ "$(cat "$3/trigger/current_trigger")" = "$2" ] || qt_fail "$3's current trigger is '$(cat "$3/trigger/current_trigger")', not $2"
}

# ---- BlueZ on virtual controllers (debootstrap guest; scenario 75)
# qt_bt_setup N: N btvirt controllers (hci0 .. hciN-1, addresses 00:AA:01:0K:00:0K)
# that hear each other over btvirt's virtual air, with bluetoothd (systemd)
# driving all of them; the AF_ALG modules bluetoothd's crypto needs are loaded.
qt_bt_setup() {
	for _m in algif_hash algif_skcipher ecdh_generic cmac hci_vhci; do
		modprobe $_m || qt_fail "modprobe $_m failed"
	done
	btvirt -l"$1" >/tmp/btvirt.log 2>&1 &
	_last=hci$(($1 - 1))
	qt_wait 10 test -e /sys/class/bluetooth/$_last || qt_fail "btvirt made no $_last: $(cat /tmp/btvirt.log)"
	# No GATT database cached by an earlier scenario of this boot: the peripherals have
	# the same addresses each time, but bluetoothd numbers their attributes in the order
	# the peripheral's object manager lists them (a hash map's), so stale handles would
	# send a notification subscription to another characteristic's value.
	systemctl stop bluetooth 2>/dev/null
	rm -rf /var/lib/bluetooth/*/cache
	systemctl start bluetooth || qt_fail "systemctl start bluetooth failed"
	# every adapter on the bus and powered (bluetoothd powers them: AutoEnable)
	_powered() {
		for _i in $(seq 0 $(($1 - 1))); do
			[ "$(busctl --system get-property org.bluez /org/bluez/hci$_i org.bluez.Adapter1 Powered 2>/dev/null)" = "b true" ] || return 1
		done
	}
	qt_wait 20 _powered "$1" || qt_fail "bluetoothd does not drive hci0..$_last powered: $(bluetoothctl list 2>&1)"
}
# qt_bt_peripheral ADAPTER SERVICES [ARGS...]: appmgr-bt-peripheral on ADAPTER
# serving SERVICES (e.g. 180f,180d) in the background, its output in
# /tmp/periph-ADAPTER.log; prints its address once registered
qt_bt_peripheral() {
	_a=$1 _s=$2
	shift 2
	/opt/appmgr/bin/appmgr-bt-peripheral --adapter "$_a" --services "$_s" "$@" >/tmp/periph-$_a.log 2>&1 &
	if ! qt_wait 30 grep -q '^ready ' /tmp/periph-$_a.log; then
		journalctl -u bluetooth --no-pager -n 30 -o short-monotonic >&2
		qt_fail "the peripheral on $_a did not register: $(cat /tmp/periph-$_a.log)"
	fi
	sed -n 's/^ready //p' /tmp/periph-$_a.log
}
# qt_bt_char DEVPATH UUID16: the object path of DEVPATH's characteristic UUID16
qt_bt_char() {
	busctl --system tree org.bluez --list | grep "^$1/service[0-9a-f]*/char[0-9a-f]*$" | while read -r _c; do
		case $(busctl --system get-property org.bluez "$_c" org.bluez.GattCharacteristic1 UUID) in
		*"0000$2-0000-1000-8000-00805f9b34fb"*) echo "$_c" ;;
		esac
	done
}
