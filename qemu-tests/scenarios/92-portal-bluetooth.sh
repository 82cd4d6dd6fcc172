#!/bin/sh
# arch: x86_64
# guest: debootstrap
# needs: appmgr
# timeout: 720
# The Bluetooth portal end to end on real parts: three btvirt virtual controllers
# (hci_vhci) on one virtual air, bluetoothd driving them, appmgr-portald (started
# with appmgrd under systemd, on the system dbus-daemon, as the Yocto recipe
# installs them) driving hci0 as the board profile says, and the test peripheral
# appmgr-bt-peripheral on hci1 (Battery 180f, Heart Rate 180d) and on hci2
# (Environmental Sensing 181a only). Apps reach Bluetooth only through
# org.appmgr.portal.Bluetooth1. Proves:
# - F (180f + 180d, every role) scans and finds hci1's peripheral (and not
#   hci2's), connects, reads the battery level, receives heart rate
#   notifications, writes the control point (the peripheral receives it);
# - B (180f only) scanning while E (181a only) scans too: BlueZ's discovery
#   then reports both peripherals, and the portal still shows B only hci1's
#   (with 180f alone) and E only hci2's; B is refused 180d (read, notify) and
#   writes (no write role), with org.appmgr.Error.AccessDenied, journaled;
# - N (no bluetooth grant) is refused every method; no app can power the
#   adapter off or pair (no such portal method; the bus refuses org.bluez), and
#   F's sandbox cannot open an AF_BLUETOOTH socket (seccomp);
# - `appmgr reload` after the policy dropped F's notify role ends F's
#   notification stream (EOF) within 100 ms.
. /qt/lib.sh
qt_need_appmgr appmgr-launch appmgrd appmgr-portald appmgr-probe appmgr-bt-peripheral

F=org.qt.BtFull
B=org.qt.BtBattery
E=org.qt.BtEnv
N=org.qt.BtNone
DENIED=$QT_PORTAL_DENIED
ID_DENIED=$QT_PORTAL_ID_DENIED
ID_REVOKED=$QT_PORTAL_ID_REVOKED
fail() { qt_portal_fail "$@"; }
j() { qt_json_get "$@"; }
# bt ID OUT STEP...: appmgr-probe portal bt STEP... in ID's sandbox
bt() {
	_bi=$1 _bo=$2
	shift 2
	qt_portal_probe "$_bi" "$_bo" portal bt "$@"
}
# ok OUT K: step K succeeded
ok() { [ "$(j steps.$2.ok "$1")" = true ] || fail "$1: step $2 ($(j steps.$2.step "$1")) failed: $(j steps.$2.error "$1") $(j steps.$2.message "$1")"; }
# refused OUT K [ERROR]: step K was refused with ERROR (AccessDenied by default)
refused() {
	_want=${3:-$DENIED}
	[ "$(j steps.$2.ok "$1")" = false ] && [ "$(j steps.$2.error "$1")" = "$_want" ] ||
		fail "$1: step $2 ($(j steps.$2.step "$1")) was not refused with $_want: ok=$(j steps.$2.ok "$1") $(j steps.$2.error "$1")"
}
# found OUT K ADDR: the services step K's scan listed for ADDR (nothing: not found)
found() {
	_i=0
	while [ "$_i" -lt "$(j steps.$2.found.# "$1")" ]; do
		if [ "$(j steps.$2.found.$_i.address "$1")" = "$3" ]; then
			_k=0 _s=
			while [ "$_k" -lt "$(j steps.$2.found.$_i.services.# "$1")" ]; do
				_s="$_s $(j steps.$2.found.$_i.services.$_k "$1")"
				_k=$((_k + 1))
			done
			echo "${_s# }"
			return 0
		fi
		_i=$((_i + 1))
	done
}
# bytes OUT K FIELD: step K's byte array FIELD as "b0 b1 ..."
bytes() {
	_n=$(j steps.$2.$3.# "$1") _k=0 _s=
	while [ "$_k" -lt "${_n:-0}" ]; do
		_s="$_s $(j steps.$2.$3.$_k "$1")"
		_k=$((_k + 1))
	done
	echo "${_s# }"
}

state=$(timeout 120 systemctl is-system-running --wait 2>&1)
case $state in running|degraded) ;; *) qt_fail "systemd state: $state" ;; esac
# the scenarios after this one share the boot: leave no Bluetooth and no daemon behind
trap 'systemctl stop appmgrd appmgr-portald; pkill -f appmgr-bt-peripheral; pkill -x btvirt; systemctl stop bluetooth' EXIT

# ---- BlueZ on btvirt: hci0 for the portal, peripherals on hci1 and hci2
qt_bt_setup 3
A1=$(qt_bt_peripheral hci1 180f,180d --battery 87) || { echo "$A1"; exit 1; }
A2=$(qt_bt_peripheral hci2 181a --name other) || { echo "$A2"; exit 1; }
[ -n "$A1" ] && [ -n "$A2" ] || qt_fail "no peripheral addresses"
H0=/org/bluez/hci0
D1=$H0/dev_$(echo "$A1" | tr : _)
qt_ok "bluetoothd drives hci0..hci2; peripherals $A1 (180f, 180d) and $A2 (181a)"

# ---- the package, appmgrd and appmgr-portald (pulled in by Wants=)
qt_install_package
qt_portal_up
qt_ok "appmgrd and appmgr-portald active"

# ---- apps
qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/rt.bundle
manifest() { # SERVICES ROLES
	printf '[permissions]\nportals = ["bluetooth"]\n[permissions.bluetooth]\ndevices = ["*"]\nservices = [%s]\nroles = [%s]\n' "$1" "$2"
}
ALL='"scan", "connect", "notify", "write"'
QT_MANIFEST_EXTRA=$(manifest '"180f", "180d"' "$ALL") qt_bundle app $F 1.0.0 /tmp/f.bundle
QT_MANIFEST_EXTRA=$(manifest '"180f"' '"scan", "connect", "notify"') qt_bundle app $B 1.0.0 /tmp/b.bundle
QT_MANIFEST_EXTRA=$(manifest '"181a"' '"scan"') qt_bundle app $E 1.0.0 /tmp/e.bundle
QT_MANIFEST_EXTRA='[permissions]
portals = ["sensors"]' qt_bundle app $N 1.0.0 /tmp/n.bundle
policy() { # F's roles
	qt_policy 50-bluetooth "[[rule]]
apps = [\"$F\"]
grant = { portals = [\"bluetooth\"], bluetooth = { devices = [\"*\"], services = [\"180f\", \"180d\"], roles = [$1] } }
on-excess = \"drop\"
[[rule]]
apps = [\"$B\"]
grant = { portals = [\"bluetooth\"], bluetooth = { devices = [\"*\"], services = [\"180f\"], roles = [\"scan\", \"connect\", \"notify\"] } }
[[rule]]
apps = [\"$E\"]
grant = { portals = [\"bluetooth\"], bluetooth = { devices = [\"*\"], services = [\"181a\"], roles = [\"scan\"] } }
[[rule]]
apps = [\"$N\"]
grant = { portals = [\"sensors\"] }"
}
policy "$ALL"
qt_run 0 appmgr install /tmp/rt.bundle
for b in f b e n; do qt_run 0 appmgr install /tmp/$b.bundle; done
qt_app_users $F $B $E $N
qt_run 0 appmgr permissions $F
for item in "portals bluetooth" "bluetooth.devices \*" "bluetooth.services 180d" "bluetooth.roles write"; do
	qt_out | grep -q "^  $item" || fail "appmgr permissions $F lacks $item"
done
qt_out | grep -q 'not provided' && fail "appmgr permissions $F: something is not provided"
# the portal grant gives no Bluetooth socket: seccomp keeps AF_BLUETOOTH closed
qt_portal_probe $F /tmp/fs.json
[ "$(j syscalls.socket_bluetooth /tmp/fs.json)" = EAFNOSUPPORT ] ||
	fail "$F's sandbox opens AF_BLUETOOTH sockets: $(j syscalls.socket_bluetooth /tmp/fs.json)"

# ---- F: scan, connect, read, notifications, write; no power, no pairing
bt $F /tmp/f.json "scan-until,$A1,30" "connect,$A1" "read,$A1,180f,2a19" "read,$A1,180d,2a38" \
	"notify,$A1,180d,2a37,3" "write,$A1,180d,2a39,01" "disconnect,$A1" \
	call,SetPowered "call,Pair" bluez-power-off "bluez-pair,$A1"
for k in 0 1 2 3 4 5 6; do ok /tmp/f.json $k; done
[ "$(found /tmp/f.json 0 "$A1")" = "180d 180f" ] || fail "$F's scan lists $A1 with '$(found /tmp/f.json 0 "$A1")', expected '180d 180f'"
[ -z "$(found /tmp/f.json 0 "$A2")" ] || fail "$F's scan reported $A2, which offers only 181a"
# the peripheral counts its battery level down from 87 while a central listens, and
# bluetoothd's battery plugin subscribes to it on connect: a few ticks may have passed
bat=$(bytes /tmp/f.json 2 value)
case $bat in [0-9]|[0-9][0-9]) [ "$bat" -le 87 ] && [ "$bat" -ge 50 ] ;; *) false ;; esac ||
	fail "$F read battery level '$bat', expected 87 or a little less"
[ "$(bytes /tmp/f.json 3 value)" = 1 ] || fail "$F read body sensor location '$(bytes /tmp/f.json 3 value)', expected 1"
n=$(j steps.4.records /tmp/f.json)
[ "${n:-0}" -ge 5 ] || fail "$F received $n heart rate notifications in 3 s, expected at least 5 (every 100 ms)"
[ "$(j steps.4.torn /tmp/f.json)" = 0 ] || fail "$F's notification stream had torn records"
[ "$(j steps.4.first.# /tmp/f.json)" = 2 ] && [ "$(j steps.4.first.0 /tmp/f.json)" = 0 ] ||
	fail "$F's first heart rate record is not (flags 0, rate): $(bytes /tmp/f.json 4 first)"
qt_wait 5 grep -q '^write 2a39 01$' /tmp/periph-hci1.log || fail "the peripheral did not receive $F's write: $(cat /tmp/periph-hci1.log)"
refused /tmp/f.json 7 org.freedesktop.DBus.Error.UnknownMethod
refused /tmp/f.json 8 org.freedesktop.DBus.Error.UnknownMethod
refused /tmp/f.json 9 org.freedesktop.DBus.Error.AccessDenied
refused /tmp/f.json 10 org.freedesktop.DBus.Error.AccessDenied
qt_ok "$F (no AF_BLUETOOTH socket in its sandbox): found $A1 (180d 180f) and not $A2; battery $bat, location 1; $n notifications in 3 s; a write reached the peripheral; no SetPowered/Pair method, org.bluez refused by the bus"

# ---- B (180f) and E (181a) scan at once: the discovery's filter holds both
# services, so BlueZ reports both peripherals; each app sees only its own
qt_portal_probe_bg $E /tmp/e.json portal bt scan,12
pe=$!
sleep 1
bt $B /tmp/b.json scan,8 "connect,$A1" "read,$A1,180f,2a19" "read,$A1,180d,2a38" \
	"notify,$A1,180d,2a37,1" "write,$A1,180f,2a19,01" "notify,$A1,180f,2a19,1" "disconnect,$A1"
wait $pe
qt_portal_show_bg $E /tmp/e.json
ok /tmp/e.json 0
[ "$(found /tmp/e.json 0 "$A2")" = 181a ] || fail "$E's scan lists $A2 with '$(found /tmp/e.json 0 "$A2")', expected 181a"
[ -z "$(found /tmp/e.json 0 "$A1")" ] || fail "$E's scan reported $A1, which offers no 181a"
for k in 0 1 2 6 7; do ok /tmp/b.json $k; done
[ "$(found /tmp/b.json 0 "$A1")" = 180f ] || fail "$B's scan lists $A1 with '$(found /tmp/b.json 0 "$A1")', expected 180f alone"
[ -z "$(found /tmp/b.json 0 "$A2")" ] || fail "$B's scan reported $A2, which offers only 181a (E's scan made BlueZ report it)"
case $(bytes /tmp/b.json 2 value) in [0-9]*) ;; *) fail "$B's battery read gave '$(bytes /tmp/b.json 2 value)'" ;; esac
refused /tmp/b.json 3
refused /tmp/b.json 4
refused /tmp/b.json 5
busctl --system tree org.bluez --list | grep -qx "$H0/dev_$(echo "$A2" | tr : _)" ||
	fail "BlueZ never reported $A2: E's scan did not widen the discovery, so B's filtering was not shown"
qt_wait 5 sh -c "journalctl -t appmgr-portald MESSAGE_ID=$ID_DENIED APPMGR_APP=$B --no-pager -o cat | grep -q 'service 180d is not granted'" ||
	fail "no portal-denied ($ID_DENIED) journal entry for $B's 180d"
qt_ok "$B sees $A1 with 180f only and not $A2 (which $E, scanning at once, sees with 181a); 180d read and notify, and writes refused and journaled"

# ---- N: no bluetooth grant, refused everything
bt $N /tmp/n.json scan,2 "connect,$A1" "read,$A1,180f,2a19" "write,$A1,180f,2a19,01" \
	"notify,$A1,180f,2a19,1" "disconnect,$A1" bluez-power-off "bluez-pair,$A1"
for k in 0 1 2 3 4 5; do refused /tmp/n.json $k; done
refused /tmp/n.json 6 org.freedesktop.DBus.Error.AccessDenied
refused /tmp/n.json 7 org.freedesktop.DBus.Error.AccessDenied
qt_wait 5 sh -c "journalctl -t appmgr-portald MESSAGE_ID=$ID_DENIED APPMGR_APP=$N --no-pager -o cat | grep -q 'bluetooth portal is not granted'" ||
	fail "no portal-denied ($ID_DENIED) journal entry for $N"
# of the writes attempted (F's, B's and N's), only F's reached the peripheral
[ "$(grep -c '^write ' /tmp/periph-hci1.log)" = 1 ] || fail "the peripheral received other writes than F's: $(grep '^write ' /tmp/periph-hci1.log)"
[ "$(busctl --system get-property org.bluez $H0 org.bluez.Adapter1 Powered)" = "b true" ] || fail "hci0 is not powered any more"
[ "$(busctl --system get-property org.bluez "$D1" org.bluez.Device1 Paired)" = "b false" ] || fail "$A1 got paired"
qt_ok "$N refused every method (journaled); only F's write reached the peripheral; hci0 still powered, $A1 not paired"

# ---- revocation: the policy drops F's notify role; `appmgr reload` ends its stream
qt_portal_probe_bg $F /tmp/r.json portal bt "connect,$A1" "notify,$A1,180d,2a37,20"
pr=$!
qt_wait 60 grep -q '^notify open' /tmp/r.json.err || { kill $pr; qt_portal_show_bg $F /tmp/r.json; fail "$F's notification stream did not open"; }
sleep 1
policy '"scan", "connect", "write"'
qt_run 0 appmgr reload
t_reload=$(cut -d' ' -f1 /proc/uptime)
wait $pr
qt_portal_show_bg $F /tmp/r.json
ok /tmp/r.json 0
[ "$(j steps.1.eof /tmp/r.json)" = true ] || fail "$F's notification stream did not end after its notify role was revoked"
[ "$(j steps.1.records /tmp/r.json)" -ge 1 ] || fail "$F's stream delivered nothing before the revocation"
# EOF (CLOCK_MONOTONIC; the guest never suspends, so /proc/uptime is the same clock
# at 10 ms) no later than 100 ms after `appmgr reload` returned
late=$(awk -v e="$(j steps.1.eof_mono_ns /tmp/r.json)" -v r="$t_reload" 'BEGIN { printf "%.0f", (e / 1e9 - r) * 1000 }')
[ "$late" -le 100 ] || fail "$F's stream ended $late ms after appmgr reload returned, more than 100 ms"
qt_wait 5 sh -c "journalctl -t appmgr-portald MESSAGE_ID=$ID_REVOKED APPMGR_APP=$F --no-pager -o cat | grep -q 'revoked: bluetooth role notify is not granted'" ||
	fail "no portal-revoked ($ID_REVOKED) journal entry for $F's stream"
journalctl -t appmgr-portald MESSAGE_ID=$ID_REVOKED APPMGR_APP=$F --no-pager -o cat | sed 's/^/  | /'
# nobody holds the device now: the portal disconnected what it connected
gone() { [ "$(busctl --system get-property org.bluez "$D1" org.bluez.Device1 Connected)" = "b false" ]; }
qt_wait 15 gone || fail "$A1 is still connected after every app released it"
qt_ok "revoked: $F's stream hit EOF $late ms after appmgr reload returned (bound 100 ms; negative: before it returned), after $(j steps.1.records /tmp/r.json) records; journaled; $A1 disconnected once unheld"
