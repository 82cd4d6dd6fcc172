#!/bin/sh
# arch: x86_64
# guest: debootstrap
# needs: appmgr iio
# timeout: 900
# Bench, not a test (qemu-tests/run --bench portal-sensors; bench/portals-guest
# runs it and writes the table): one sensor value read three ways from the same
# iio_dummy device (accel0, made through configfs as 91-portal-sensors makes it),
# in one boot:
#   sysfs  a process opens, reads and closes in_accel_x_raw (and the scale and
#          offset files when the device has them), as the portal does per Read
#   portal Sensors1.Read("accel_x") from a sandboxed app (the probe) through
#          appmgr-portald started with appmgrd under systemd
#   proxy  iio-sensor-proxy (Debian's) serving accel0: the same sandboxed app,
#          granted dbus-talk net.hadess.SensorProxy, calls ClaimAccelerometer,
#          then Properties.Get(AccelerometerOrientation) per read
# iio-sensor-proxy takes only devices its udev rule tags, and that rule wants
# in_accel_x_raw, _y_raw and _z_raw; iio_dummy has only accel_x. A rule of
# ours (79-, before its 80-) sets IIO_SENSOR_PROXY_TYPE=iio-poll-accel for
# accel0 alone, which its poll driver serves: it reads in_accel_x_raw every
# 700 ms and reads the absent y and z as 0 (its sysfs_get_int). The bench checks
# that it really found and read accel0 (journal, debug on) before it measures.
# Results: one line "@@BENCH NAME JSON" per measure, parsed by the host.
. /qt/lib.sh
. /qt/plan.sh
qt_need_appmgr appmgr-launch appmgrd appmgr-portald appmgr-probe
N=${BENCH_CALLS:-2000}
B=org.qt.BenchSensors
fail() { qt_portal_fail "$@"; }
proxy_journal() { journalctl -u iio-sensor-proxy --no-pager -o cat 2>&1; }
proxy_fail() {
	echo "--- journalctl -u iio-sensor-proxy (last 30 lines)"
	proxy_journal | tail -n 30 | sed 's/^/  | /'
	fail "$@"
}
bench() { # NAME JSONFILE: the result line the host reads
	qt_json_get p50_us "$2" >/dev/null || fail "$1: no figures in $(cat "$2")"
	[ "$(qt_json_get errors "$2")" = 0 ] || fail "$1: $(qt_json_get errors "$2") of $N calls failed"
	echo "@@BENCH $1 $(tr -d '\n' <"$2")"
}

state=$(timeout 120 systemctl is-system-running --wait 2>&1)
case $state in running|degraded) ;; *) qt_fail "systemd state: $state" ;; esac
[ -x /usr/sbin/iio-sensor-proxy ] || qt_fail "iio-sensor-proxy is not in the rootfs (ROOTFS_PKGS in qemu-tests/lib/image.sh)"
echo "iio-sensor-proxy $(dpkg-query -W -f '${Version}' iio-sensor-proxy)"

# ---- iio-sensor-proxy: accel0 tagged for its poll driver, its debug log on
cat >/etc/udev/rules.d/79-bench-accel0.rules <<'R'
# bench/portals-guest: iio_dummy's accel0 has in_accel_x_raw only, so
# 80-iio-sensor-proxy.rules does not tag it; its poll driver reads x (y, z as 0).
SUBSYSTEM=="iio", ACTION!="remove", ATTR{name}=="accel0", ENV{IIO_SENSOR_PROXY_TYPE}="iio-poll-accel"
R
mkdir -p /etc/systemd/system/iio-sensor-proxy.service.d
printf '[Service]\nEnvironment=G_MESSAGES_DEBUG=all\n' >/etc/systemd/system/iio-sensor-proxy.service.d/debug.conf
qt_run 0 systemctl daemon-reload
qt_run 0 udevadm control --reload

# ---- iio_dummy: an accel0 device through configfs (the guest lib's helpers, as
# 91-portal-sensors); its trigger is set only for the buffered stream at the end
cfg=$(qt_iio_load)
dev=$(qt_iio_device "$cfg" accel0)
ls "$dev" | tr '\n' ' '
echo
# what the portal reads per Read: the raw file, and the scale and offset files
# the IIO ABI gives accel_x (per channel, then shared by type) when they exist
files=$dev/in_accel_x_raw
for suf in scale offset; do
	for f in in_accel_x_$suf in_accel_$suf; do
		[ -f "$dev/$f" ] && { files="$files,$dev/$f"; break; }
	done
done
RAW=$(cat "$dev/in_accel_x_raw")
qt_ok "$dev: accel0, in_accel_x_raw $RAW; a direct read reads $files"

qt_run 0 udevadm settle -t 30
qt_run 0 udevadm info "$dev"
qt_out | grep -q 'IIO_SENSOR_PROXY_TYPE=iio-poll-accel' || fail "udev did not tag accel0 for iio-sensor-proxy"
# the package's rule makes the device want the service (SYSTEMD_WANTS)
proxy_up() { [ "$(systemctl show -p ActiveState --value iio-sensor-proxy)" = active ]; }
qt_wait 30 proxy_up || proxy_fail "iio-sensor-proxy did not start for the tagged accel0"
found() { proxy_journal | grep -q "Found IIO poll accelerometer at $(readlink -f "$dev")"; }
qt_wait 10 found ||
	proxy_fail "iio-sensor-proxy did not take accel0 ($(readlink -f "$dev")) as its accelerometer"
qt_ok "iio-sensor-proxy started by udev for accel0: $(proxy_journal | grep -m1 'Found IIO poll accelerometer')"

# ---- appmgr, appmgrd, appmgr-portald; the app: sensors portal + the proxy's name
qt_install_package
trap 'systemctl stop appmgrd appmgr-portald' EXIT
printf 'board = "qemu-virt-x86_64"\n' >/etc/appmgr/appmgr.toml
systemctl start appmgrd || fail "systemctl start appmgrd failed"
portald_up() { [ "$(systemctl show -p ActiveState --value appmgr-portald)" = active ]; }
qt_wait 30 portald_up || fail "appmgr-portald did not start with appmgrd"
qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/rt.bundle
QT_MANIFEST_EXTRA='[permissions]
portals = ["sensors"]
dbus-talk = ["net.hadess.SensorProxy"]
[permissions.sensors]
channels = ["accel_x"]
max-rate-hz = 200' qt_bundle app $B 1.0.0 /tmp/b.bundle
qt_policy 50-bench "[[rule]]
apps = [\"$B\"]
grant = { portals = [\"sensors\"], dbus-talk = [\"net.hadess.SensorProxy\"], sensors = { channels = [\"accel_x\"], max-rate-hz = 200 } }"
qt_run 0 appmgr install /tmp/rt.bundle
qt_run 0 appmgr install /tmp/b.bundle
qt_app_users $B
qt_run 0 appmgr permissions $B

# ---- both services answer with the device's value before anything is timed
qt_portal_probe $B /tmp/read.json portal sensors read accel_x
[ "$(qt_json_get ok /tmp/read.json)" = true ] || fail "the portal's Read failed"
qt_ok "portal Read(accel_x) = $(qt_json_get value /tmp/read.json) (sysfs raw $RAW)"
qt_portal_probe $B /tmp/proxy1.json portal bench sensorproxy 1
[ "$(qt_json_get has_accelerometer /tmp/proxy1.json)" = true ] || proxy_fail "iio-sensor-proxy has no accelerometer"
[ "$(qt_json_get first_reading_ms /tmp/proxy1.json)" != null ] || proxy_fail "iio-sensor-proxy gave no orientation within 10 s of the claim"
read_logged() { proxy_journal | grep -q "Accel read from IIO on 'accel0': $RAW, 0, 0"; }
qt_wait 10 read_logged ||
	proxy_fail "iio-sensor-proxy's log shows no read of accel0 giving x = $RAW (sysfs)"
qt_ok "iio-sensor-proxy read accel0: '$(proxy_journal | grep -m1 "Accel read from IIO on 'accel0'")', orientation $(qt_json_get orientation /tmp/proxy1.json) $(qt_json_get first_reading_ms /tmp/proxy1.json) ms after the claim"

# ---- measured: each N calls, one after the other, in this boot
/opt/appmgr/bin/appmgr-probe portal bench sysfs "$files" "$N" >/tmp/sysfs.json 2>&1
bench sysfs /tmp/sysfs.json
appmgr run $B -- /app/bin/appmgr-probe portal bench read accel_x "$N" >/tmp/portal.json 2>/tmp/portal.err ||
	{ cat /tmp/portal.err; fail "the portal bench failed"; }
bench portal /tmp/portal.json
appmgr run $B -- /app/bin/appmgr-probe portal bench sensorproxy "$N" >/tmp/proxy.json 2>/tmp/proxy.err ||
	{ cat /tmp/proxy.err; proxy_fail "the iio-sensor-proxy bench failed"; }
bench proxy /tmp/proxy.json
# ---- streaming at 200 Hz for 10 s: the portal's CPU (utime + stime of its process
# over the stream's 10 s) from the IIO buffer (an hrtimer trigger on accel0), then
# polling sysfs (the trigger removed)
pid=$(systemctl show -p MainPID --value appmgr-portald)
hz=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
stream_cpu() { # NAME EXPECTED-SOURCE
	_t0=$(ticks)
	appmgr run $B -- /app/bin/appmgr-probe portal sensors stream accel_x 200 10 >/tmp/$1.json 2>/tmp/$1.err ||
		{ cat /tmp/$1.err; fail "the $1 stream failed"; }
	_t1=$(ticks)
	[ "$(qt_json_get ok /tmp/$1.json)" = true ] || fail "the $1 stream: $(cat /tmp/$1.json)"
	journalctl -t appmgr-portald --no-pager -o cat | grep ' Hz to pid ' | tail -n 1 | grep -q "$2" ||
		fail "the $1 stream was not served $2: $(journalctl -t appmgr-portald --no-pager -o cat | grep ' Hz to pid ' | tail -n 1)"
	_cpu=$(awk -v a="$_t0" -v b="$_t1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz / 10 * 100 }')
	echo "@@BENCH stream_$1 {\"cpu_pct\":$_cpu,\"records\":$(qt_json_get records /tmp/$1.json),\"max_rate_hz\":$(qt_json_get max_rate_hz /tmp/$1.json)}"
}
qt_iio_trigger "$cfg" accel0-trig "$dev"
stream_cpu buffered 'from the IIO buffer of accel0'
echo >"$dev/trigger/current_trigger"
stream_cpu polled 'polling sysfs'
echo "@@BENCH info {\"calls\":$N,\"first_claim_ms\":$(qt_json_get first_reading_ms /tmp/proxy1.json),\"raw\":\"$RAW\",\"files\":\"$files\",\"proxy_version\":\"$(dpkg-query -W -f '${Version}' iio-sensor-proxy)\",\"kernel\":\"$(uname -r)\",\"orientation\":\"$(qt_json_get orientation /tmp/proxy.json)\"}"
qt_ok "measured $N calls each"
