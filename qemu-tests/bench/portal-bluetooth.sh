#!/bin/sh
# arch: x86_64
# guest: debootstrap
# needs: appmgr
# smp: 2
# timeout: 900
# Bench, not a test (qemu-tests/run --bench portal-bluetooth; bench/bluetooth-guest
# runs it and writes the table): GATT reads and notifications of one real BlueZ
# connection, two ways, in one boot. btvirt's controllers and bluetoothd as in
# 92-portal-bluetooth; the peripheral appmgr-bt-peripheral on hci1 changes its
# notifying characteristics every BENCH_NOTIFY_MS (5) ms; the LE connection
# interval is 7.5 ms (below).
#   direct  appmgr-probe as root on the host, a client of org.bluez:
#           GattCharacteristic1.ReadValue per read; StartNotify and the
#           PropertiesChanged(Value) signals it brings
#   portal  the same probe in an app's sandbox: Bluetooth1.ReadCharacteristic per
#           read; Bluetooth1.Notify and its stream's records
# The device is connected from the host first, so both share the one link.
# Results: one line "@@BENCH NAME JSON" per measure, parsed by the host.
. /qt/lib.sh
. /qt/plan.sh
qt_need_appmgr appmgr-launch appmgrd appmgr-portald appmgr-probe appmgr-bt-peripheral
N=${BENCH_CALLS:-1000}
SECS=${BENCH_NOTIFY_SECONDS:-10}
X=org.qt.BenchBluetooth
PROBE=/opt/appmgr/bin/appmgr-probe
fail() { qt_portal_fail "$@"; }
# portal_cpu: appmgr-portald's CPU time so far (utime + stime), in clock ticks
portal_cpu() {
	_p=$(systemctl show -p MainPID --value appmgr-portald)
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$_p/stat"
}
bench() { # NAME JSONFILE [CPU_TICKS_BEFORE]: the result line the host reads (with the
	# portal's CPU per call in µs when the ticks before are given)
	qt_json_get "#" "$2" >/dev/null || fail "$1: no JSON in $(cat "$2")"
	_extra=
	if [ -n "${3:-}" ]; then
		_n=$(qt_json_get n "$2" || qt_json_get records "$2")
		_extra=$(awk -v a="$3" -v b="$(portal_cpu)" -v hz="$(getconf CLK_TCK)" -v n="$_n" \
			'BEGIN { printf ",\"portal_cpu_us_per_call\":%.1f", (b - a) * 1e6 / hz / (n > 0 ? n : 1) }')
	fi
	echo "@@BENCH $1 $(tr -d '\n' <"$2" | sed 's/}$//')$_extra}"
}

state=$(timeout 120 systemctl is-system-running --wait 2>&1)
case $state in running|degraded) ;; *) qt_fail "systemd state: $state" ;; esac
trap 'systemctl stop appmgrd appmgr-portald; pkill -f appmgr-bt-peripheral; pkill -x btvirt; systemctl stop bluetooth; sed -i "/^M..ConnectionInterval=6$/d" /etc/bluetooth/main.conf' EXIT
[ -x $PROBE ] || PROBE=$(command -v appmgr-probe)
# BlueZ's default LE connection interval (30-50 ms) quantizes every read to whole
# intervals, which hides a few ms either way; 7.5 ms (6 x 1.25 ms, the least LE
# allows) keeps the comparison about the two paths, not the radio's schedule
if grep -q '^\[LE\]' /etc/bluetooth/main.conf; then
	sed -i '/^\[LE\]/a MinConnectionInterval=6\nMaxConnectionInterval=6' /etc/bluetooth/main.conf
else
	printf '\n[LE]\nMinConnectionInterval=6\nMaxConnectionInterval=6\n' >>/etc/bluetooth/main.conf
fi
qt_bt_setup 2
A1=$(qt_bt_peripheral hci1 180f,180d --battery 87 --interval-ms "${BENCH_NOTIFY_MS:-5}") || { echo "$A1"; exit 1; }
D1=/org/bluez/hci0/dev_$(echo "$A1" | tr : _)

qt_install_package
qt_portal_up
qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/rt.bundle
QT_MANIFEST_EXTRA='[permissions]
portals = ["bluetooth"]
[permissions.bluetooth]
devices = ["*"]
services = ["180f", "180d"]
roles = ["scan", "connect", "notify"]' qt_bundle app $X 1.0.0 /tmp/x.bundle
qt_policy 50-bench-bluetooth "[[rule]]
apps = [\"$X\"]
grant = { portals = [\"bluetooth\"], bluetooth = { devices = [\"*\"], services = [\"180f\", \"180d\"], roles = [\"scan\", \"connect\", \"notify\"] } }"
qt_run 0 appmgr install /tmp/rt.bundle
qt_run 0 appmgr install /tmp/x.bundle
qt_app_users $X

# the app finds the device (BlueZ learns it), the host connects it
appmgr run $X -- /app/bin/appmgr-probe portal bt "scan-until,$A1,30" >/tmp/scan.json 2>&1 || true
[ "$(qt_json_get steps.0.ok /tmp/scan.json)" = true ] || fail "the app's scan failed: $(cat /tmp/scan.json)"
busctl --system --timeout=60 call org.bluez "$D1" org.bluez.Device1 Connect || fail "Connect to $A1 failed"
resolved() { [ "$(busctl --system get-property org.bluez "$D1" org.bluez.Device1 ServicesResolved)" = "b true" ]; }
qt_wait 30 resolved || fail "the services of $A1 did not resolve"
BAT=$(qt_bt_char "$D1" 2a19) HRM=$(qt_bt_char "$D1" 2a37)
[ -n "$BAT" ] && [ -n "$HRM" ] || fail "no 2a19 or 2a37 on $A1"
echo "@@BENCH info {\"calls\":$N,\"notify_seconds\":$SECS,\"notify_ms\":${BENCH_NOTIFY_MS:-5},\"kernel\":\"$(uname -r)\",\"bluez\":\"$(dpkg-query -W -f '${Version}' bluez)\"}"

# the portal's own round trip: a read of a device this caller does not hold is refused
# (NotAvailable) after the caller's identification and grant check, before BlueZ
c0=$(portal_cpu)
appmgr run $X -- /app/bin/appmgr-probe portal bench bt-read 00:00:00:00:00:01 180f 2a19 "$N" >/tmp/f.json || fail "portal floor failed: $(cat /tmp/f.json)"
bench portal_floor /tmp/f.json "$c0"
# reads, alternating four times so drift shows
for round in 1 2 3 4; do
	$PROBE portal bench bluez-read "$BAT" "$N" >/tmp/d.json || fail "direct reads failed: $(cat /tmp/d.json)"
	bench direct_read_$round /tmp/d.json
	c0=$(portal_cpu)
	appmgr run $X -- /app/bin/appmgr-probe portal bench bt-read "$A1" 180f 2a19 "$N" >/tmp/p.json || fail "portal reads failed: $(cat /tmp/p.json)"
	bench portal_read_$round /tmp/p.json "$c0"
done
# notifications
$PROBE portal bench bluez-notify "$HRM" "$SECS" >/tmp/dn.json || fail "direct notifications failed: $(cat /tmp/dn.json)"
bench direct_notify /tmp/dn.json
c0=$(portal_cpu)
appmgr run $X -- /app/bin/appmgr-probe portal bench bt-notify "$A1" 180d 2a37 "$SECS" >/tmp/pn.json || fail "portal notifications failed: $(cat /tmp/pn.json)"
bench portal_notify /tmp/pn.json "$c0"
busctl --system call org.bluez "$D1" org.bluez.Device1 Disconnect || true
echo "--- appmgr-portald's journal (last 15 lines)"
journalctl -u appmgr-portald --no-pager -n 15 -o short-monotonic | sed 's/^/  | /'
