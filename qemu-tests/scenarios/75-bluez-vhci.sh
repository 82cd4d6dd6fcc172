#!/bin/sh
# arch: x86_64
# guest: debootstrap
# needs: appmgr
# timeout: 300
# The Bluetooth building block for the Bluetooth portal (issue 13), on real
# BlueZ: three btvirt virtual controllers, bluetoothd driving them, and the
# test peripheral appmgr-bt-peripheral (a GATT application and an
# advertisement registered with bluetoothd) on hci1 with Battery (180f) and
# Heart Rate (180d), and on hci2 with Environmental Sensing (181a) only.
# From hci0, as a client of org.bluez: discovery filtered to 180f finds hci1
# and not hci2; connect; the services resolve; the battery level reads;
# notifications arrive; a write reaches the peripheral.
. /qt/lib.sh
qt_need_appmgr appmgr-bt-peripheral
state=$(timeout 120 systemctl is-system-running --wait 2>&1)
case $state in running|degraded) ;; *) qt_fail "systemd state: $state" ;; esac
# the scenarios after this one share the boot: leave no Bluetooth behind
trap 'pkill -f appmgr-bt-peripheral; pkill -x btvirt; systemctl stop bluetooth' EXIT
qt_bt_setup 3
bluetoothctl list
A1=$(qt_bt_peripheral hci1 180f,180d --battery 87) || { echo "$A1"; exit 1; }
A2=$(qt_bt_peripheral hci2 181a --name other) || { echo "$A2"; exit 1; }
[ -n "$A1" ] && [ -n "$A2" ] || qt_fail "no peripheral addresses"
qt_ok "bluetoothd drives hci0..hci2; peripherals $A1 (180f, 180d) and $A2 (181a)"

# discovery filtered to 180f: a bluetoothctl session (a discovery lasts as long
# as its D-Bus client)
H0=$(busctl --system get-property org.bluez /org/bluez/hci0 org.bluez.Adapter1 Address | cut -d'"' -f2)
(echo "select $H0"; echo "menu scan"; echo "uuids 180f"; echo "transport le"; echo "back"
	echo "scan on"; sleep 8; echo "scan off"; sleep 1; echo quit) | timeout 30 bluetoothctl >/tmp/scan.log 2>&1
sed 's/\x1b\[[0-9;]*[A-Za-z]//g' /tmp/scan.log | grep -E 'Discovery|NEW|SetDiscoveryFilter' | sed 's/^/  | /'
dev() { echo "/org/bluez/hci0/dev_$(echo "$1" | tr : _)"; }
D1=$(dev "$A1") D2=$(dev "$A2")
known() { busctl --system tree org.bluez --list | grep -qx "$1"; }
known "$D1" || qt_fail "the 180f discovery did not find $A1"
known "$D2" && qt_fail "the 180f discovery reported $A2, which offers only 181a"
busctl --system get-property org.bluez "$D1" org.bluez.Device1 UUIDs | grep -q 0000180d- || qt_fail "$A1 does not advertise 180d"
qt_ok "discovery filtered to 180f: $A1 found (advertising 180f 180d), $A2 (181a only) not reported"

B="busctl --system --timeout=30"
$B call org.bluez "$D1" org.bluez.Device1 Connect || qt_fail "Connect to $A1 failed"
resolved() { [ "$($B get-property org.bluez "$D1" org.bluez.Device1 ServicesResolved)" = "b true" ]; }
qt_wait 15 resolved || qt_fail "the services of $A1 did not resolve"
BAT=$(qt_bt_char "$D1" 2a19) HRM=$(qt_bt_char "$D1" 2a37) HCP=$(qt_bt_char "$D1" 2a39) LOC=$(qt_bt_char "$D1" 2a38)
[ -n "$BAT" ] && [ -n "$HRM" ] && [ -n "$HCP" ] && [ -n "$LOC" ] || qt_fail "characteristics missing: 2a19 '$BAT' 2a37 '$HRM' 2a39 '$HCP' 2a38 '$LOC'"
v=$($B call org.bluez "$LOC" org.bluez.GattCharacteristic1 ReadValue 'a{sv}' 0) || qt_fail "ReadValue of 2a38 failed"
[ "$v" = "ay 1 1" ] || qt_fail "body sensor location reads '$v', expected ay 1 1"
v=$($B call org.bluez "$BAT" org.bluez.GattCharacteristic1 ReadValue 'a{sv}' 0) || qt_fail "ReadValue of 2a19 failed"
case $v in "ay 1 "*) ;; *) qt_fail "battery level reads '$v'" ;; esac
qt_ok "connected, services resolved; 2a38 reads 1, battery level $v"

# a notify session lasts as long as its D-Bus client: a bluetoothctl session
(echo "gatt.select-attribute $HRM"; echo "gatt.notify on"; sleep 3; echo "gatt.notify off"; sleep 0.5; echo quit) |
	timeout 20 bluetoothctl 2>&1 | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' >/tmp/notify.log
n=$(grep -c "$HRM Value:" /tmp/notify.log)
[ "$n" -ge 5 ] || { tail -n 30 /tmp/notify.log; cat /tmp/periph-hci1.log; } >&2
[ "$n" -ge 5 ] || qt_fail "$n heart rate notifications in 3 s, expected at least 5 (every 100 ms)"
qt_ok "$n heart rate notifications in 3 s"

$B call org.bluez "$HCP" org.bluez.GattCharacteristic1 WriteValue 'aya{sv}' 1 1 0 || qt_fail "WriteValue of 2a39 failed"
qt_wait 5 grep -q '^write 2a39 01$' /tmp/periph-hci1.log || qt_fail "the peripheral did not receive the write: $(cat /tmp/periph-hci1.log)"
$B call org.bluez "$D1" org.bluez.Device1 Disconnect
qt_ok "a write of 01 to 2a39 reached the peripheral; disconnected"
echo "peripheral logs:"; sed "s/^/  | /" /tmp/periph-hci1.log /tmp/periph-hci2.log
