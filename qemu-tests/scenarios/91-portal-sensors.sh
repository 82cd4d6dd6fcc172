#!/bin/sh
# arch: x86_64
# guest: debootstrap
# needs: appmgr iio
# timeout: 480
# The sensor portal end to end on real parts: the iio_dummy driver (a dummy
# device made through configfs), appmgr-portald started with appmgrd under
# systemd and the system dbus-daemon, installed as the Yocto recipe installs
# them. Proves: an app sees exactly the channels of its [permissions.sensors]
# grant (List), a Read is (raw + offset) * scale of the sysfs attributes, an
# ungranted channel and a rate above max-rate-hz are refused with
# org.appmgr.Error.AccessDenied, a stream never exceeds its rate in any
# one-second window, two apps stream at once, and `appmgr reload` after the
# policy stopped granting a channel ends that app's stream (EOF) within moments
# while the other app's stream goes on.
. /qt/lib.sh
qt_need_appmgr appmgr-launch appmgrd appmgr-portald appmgr-probe

S=org.qt.SensorS
T=org.qt.SensorT
DENIED=$QT_PORTAL_DENIED
ID_GRANTED=$QT_PORTAL_ID_GRANTED
ID_DENIED=$QT_PORTAL_ID_DENIED
ID_REVOKED=$QT_PORTAL_ID_REVOKED
fail() { qt_portal_fail "$@"; }
# probe ID OUT ARGS...: appmgr-probe ARGS in ID's sandbox; its JSON in OUT
probe() { qt_portal_probe "$@"; }
j() { qt_json_get "$@"; }
# near A B: |A - B| <= 1e-6 * max(1, |B|)
near() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; if (m < 1) m = 1; exit !(a != "" && d <= 1e-6 * m) }'; }
# denied OUT: the probe's report is the AccessDenied error form
denied() { [ "$(j ok "$1")" = false ] && [ "$(j error "$1")" = $DENIED ]; }
# stream_ok OUT RATE MIN_RECORDS: ok, at least MIN_RECORDS, never above RATE in a second, whole records
stream_ok() {
	[ "$(j ok "$1")" = true ] || fail "$1: the stream failed: $(j error "$1") $(j message "$1")"
	_n=$(j records "$1") _m=$(j max_rate_hz "$1")
	[ "${_n:-0}" -ge "$3" ] || fail "$1: $_n records, expected at least $3"
	awk -v m="$_m" -v r="$2" 'BEGIN { exit !(m != "" && m + 0 <= r + 0) }' || fail "$1: $_m records in one second, above $2 Hz"
	[ "$(j torn "$1")" = 0 ] || fail "$1: $(j torn "$1") torn records"
}

state=$(timeout 120 systemctl is-system-running --wait 2>&1)
case $state in running|degraded) ;; *) qt_fail "systemd state: $state" ;; esac

# ---- iio_dummy: an accel0 device through configfs, with a buffer on an hrtimer
# trigger (a board's udev rule sets the current trigger; here the scenario does)
cfg=$(qt_iio_load)
dev=$(qt_iio_device "$cfg" accel0)
ls "$dev" | tr '\n' ' '
echo
qt_iio_trigger "$cfg" accel0-trig "$dev"
# attr CH SUFFIX: the file the IIO ABI gives CH's SUFFIX (per channel, then shared by type)
attr() {
	_t=$(echo "$1" | sed 's/[^a-z].*//')
	_c="in_$1_$2"
	case $1 in *-*) _c="$_c in_$_t-${_t}_$2" ;; esac
	for _f in $_c "in_${_t}_$2"; do
		[ -f "$dev/$_f" ] && { echo "$dev/$_f"; return 0; }
	done
	return 1
}
# expect CH: (raw + offset) * scale from sysfs; missing scale 1, missing offset 0
expect() {
	_raw=$(cat "$dev/in_$1_raw") || return 1
	_sc=1 _of=0
	_p=$(attr "$1" scale) && _sc=$(cat "$_p")
	_p=$(attr "$1" offset) && _of=$(cat "$_p")
	awk -v r="$_raw" -v o="$_of" -v s="$_sc" 'BEGIN { printf "%.12g\n", (r + o) * s }'
}
scale_of() { _p=$(attr "$1" scale) && cat "$_p" || echo 1; }
for ch in accel_x voltage0 voltage1-voltage2; do
	[ -f "$dev/in_${ch}_raw" ] || qt_fail "iio_dummy has no in_${ch}_raw"
	echo "  $ch: raw $(cat "$dev/in_${ch}_raw") scale $(scale_of $ch) offset $(p=$(attr $ch offset) && cat $p || echo 0) -> $(expect $ch)"
done
EX_ACCEL=$(expect accel_x) EX_VOLT=$(expect voltage0)
# buffered CH RAW: (RAW + offset) * scale; iio_dummy's scans carry fixed values that
# differ from its sysfs ones (accel_x 344, voltage0 7), so a stream's values tell
# which path served it
buffered() {
	_sc=1 _of=0
	_p=$(attr "$1" scale) && _sc=$(cat "$_p")
	_p=$(attr "$1" offset) && _of=$(cat "$_p")
	awk -v r="$2" -v o="$_of" -v s="$_sc" 'BEGIN { printf "%.12g\n", (r + o) * s }'
}
BUF_ACCEL=$(buffered accel_x 344) BUF_VOLT=$(buffered voltage0 7)
# enabled: the scan elements switched on now, e.g. "accel_x timestamp"
enabled() {
	for _e in "$dev"/scan_elements/*_en; do
		[ "$(cat "$_e")" = 1 ] || continue
		_e=${_e##*/in_}
		printf '%s ' "${_e%_en}"
	done
	echo "buffer=$(cat "$dev/buffer/enable")"
}
# sampled_while WANT SECONDS: what the device samples, polled every 0.1 s until it is WANT
# or SECONDS pass (the streams' apps start through `appmgr run`, which on a TCG guest can
# take longer than any fixed sleep); prints the last state seen. SECONDS covers the start
# and the stream: it is only used up when WANT never comes. Two apps started at once on
# the guest's one vCPU took 3.8-4.2 s to reach their streams (portal log of a CI run), so
# a deadline of the streams' own 3 s missed the time both streamed.
sampled_while() {
	_until=$(($(date +%s%N) + $2 * 1000000000))
	while :; do
		_now=$(enabled)
		[ "$_now" = "$1" ] && break
		[ "$(date +%s%N)" -lt "$_until" ] || break
		sleep 0.1
	done
	echo "$_now"
}
qt_ok "$dev: accel0 (sysfs: accel_x = $EX_ACCEL, voltage0 = $EX_VOLT; scans: $BUF_ACCEL, $BUF_VOLT), trigger accel0-trig"

# ---- the package, appmgrd and appmgr-portald (pulled in by Wants=)
qt_install_package
trap 'systemctl stop appmgrd appmgr-portald' EXIT
printf 'board = "qemu-virt-x86_64"\n' >/etc/appmgr/appmgr.toml
qt_run 0 appmgr --json board show
qt_out | grep -q '"accel0"' || fail "appmgr board show does not list accel0 for the sensor portal"
systemctl start appmgrd || fail "systemctl start appmgrd failed"
portald_up() { [ "$(systemctl show -p ActiveState --value appmgr-portald)" = active ]; }
qt_wait 30 portald_up || fail "appmgr-portald did not start with appmgrd"
qt_ok "appmgrd and appmgr-portald active"

# ---- apps: S granted accel_x and voltage0 up to 20 Hz, T voltage0 up to 10 Hz
qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/rt.bundle
QT_MANIFEST_EXTRA='[permissions]
portals = ["sensors"]
[permissions.sensors]
channels = ["accel_x", "voltage0"]
max-rate-hz = 20' qt_bundle app $S 1.0.0 /tmp/s.bundle
QT_MANIFEST_EXTRA='[permissions]
portals = ["sensors"]
[permissions.sensors]
channels = ["voltage0"]
max-rate-hz = 10' qt_bundle app $T 1.0.0 /tmp/t.bundle
policy() { # S's channels
	qt_policy 50-sensors "[[rule]]
apps = [\"$S\"]
grant = { portals = [\"sensors\"], sensors = { channels = [$1], max-rate-hz = 20 } }
on-excess = \"drop\"
[[rule]]
apps = [\"$T\"]
grant = { portals = [\"sensors\"], sensors = { channels = [\"voltage0\"], max-rate-hz = 10 } }"
}
policy '"accel_x", "voltage0"'
qt_run 0 appmgr install /tmp/rt.bundle
qt_run 0 appmgr install /tmp/s.bundle
qt_run 0 appmgr install /tmp/t.bundle
qt_app_users $S $T
qt_run 0 appmgr permissions $S
qt_out | grep -q '^  portals sensors ' || fail "appmgr permissions $S lacks portals sensors"
qt_out | grep -q 'not provided' && fail "appmgr permissions $S: something is not provided"

# ---- List: exactly the granted channels, on accel0
probe $S /tmp/sl.json portal sensors list
[ "$(j ok /tmp/sl.json)" = true ] || fail "$S's List failed"
[ "$(j channels.# /tmp/sl.json)" = 2 ] || fail "$S's List has $(j channels.# /tmp/sl.json) channels, expected 2"
seen=
for i in 0 1; do
	c=$(j channels.$i.channel /tmp/sl.json)
	[ "$(j channels.$i.device /tmp/sl.json)" = accel0 ] || fail "$S's List: $c is on device '$(j channels.$i.device /tmp/sl.json)'"
	near "$(j channels.$i.scale /tmp/sl.json)" "$(scale_of "$c")" || fail "$S's List: $c has scale $(j channels.$i.scale /tmp/sl.json), sysfs $(scale_of "$c")"
	seen="$seen $c"
done
case "$seen" in " accel_x voltage0"|" voltage0 accel_x") ;; *) fail "$S's List shows$seen, expected accel_x voltage0" ;; esac
probe $T /tmp/tl.json portal sensors list
[ "$(j channels.# /tmp/tl.json)" = 1 ] && [ "$(j channels.0.channel /tmp/tl.json)" = voltage0 ] ||
	fail "$T's List is not exactly voltage0"
qt_ok "List: $S sees accel_x voltage0 on accel0, $T voltage0 only (scales as in sysfs)"

# ---- Read: (raw + offset) * scale; an ungranted channel is refused
probe $S /tmp/sr.json portal sensors read accel_x
near "$(j value /tmp/sr.json)" "$EX_ACCEL" || fail "$S read accel_x = $(j value /tmp/sr.json), sysfs gives $EX_ACCEL"
probe $S /tmp/sr.json portal sensors read voltage0
near "$(j value /tmp/sr.json)" "$EX_VOLT" || fail "$S read voltage0 = $(j value /tmp/sr.json), sysfs gives $EX_VOLT"
probe $S /tmp/sr.json portal sensors read voltage1-voltage2
denied /tmp/sr.json || fail "$S's read of the ungranted voltage1-voltage2 was not refused with $DENIED"
probe $T /tmp/sr.json portal sensors read accel_x
denied /tmp/sr.json || fail "$T's read of the ungranted accel_x was not refused with $DENIED"
qt_wait 5 sh -c "journalctl -t appmgr-portald MESSAGE_ID=$ID_DENIED APPMGR_APP=$S --no-pager -o cat | grep -q voltage1-voltage2" ||
	fail "no portal-denied ($ID_DENIED) journal entry for $S's voltage1-voltage2"
qt_ok "Read: accel_x $EX_ACCEL, voltage0 $EX_VOLT as sysfs computes them; ungranted channels refused and journaled"

# ---- streams from the buffer: only the stream's channels are sampled, the rate
# holds, the buffer stops with the last stream; above the granted rate is refused
[ "$(enabled)" = "buffer=0" ] || fail "before any stream: $(enabled)"
qt_portal_probe_bg $S /tmp/ss.json portal sensors stream accel_x 20 3
ps_=$!
during=$(sampled_while "accel_x timestamp buffer=1" 10)
wait $ps_
qt_portal_show_bg $S /tmp/ss.json
[ "$during" = "accel_x timestamp buffer=1" ] || fail "while $S streamed accel_x the device sampled: $during"
[ "$(enabled)" = "buffer=0" ] || fail "after the stream ended: $(enabled)"
stream_ok /tmp/ss.json 20 40
near "$(j first.0 /tmp/ss.json)" "$BUF_ACCEL" || fail "the stream's first accel_x is $(j first.0 /tmp/ss.json), the buffer's scans give $BUF_ACCEL (sysfs $EX_ACCEL)"
journalctl -t appmgr-portald MESSAGE_ID=$ID_GRANTED APPMGR_APP=$S --no-pager -o cat | grep 'stream' | tail -n 1 |
	grep -q 'from the IIO buffer of accel0 (trigger accel0-trig)' || fail "the grant of $S's stream does not say it is served from accel0's buffer"
probe $S /tmp/sx.json portal sensors stream accel_x 21 1
denied /tmp/sx.json || fail "$S's stream at 21 Hz (granted 20) was not refused with $DENIED"
probe $T /tmp/tx.json portal sensors stream voltage0 11 1
denied /tmp/tx.json || fail "$T's stream at 11 Hz (granted 10) was not refused with $DENIED"
qt_ok "buffered stream at 20 Hz for 3 s: $(j records /tmp/ss.json) records, at most $(j max_rate_hz /tmp/ss.json) in one second, min gap $(j min_gap_ms /tmp/ss.json) ms, sampling only '$during'; 21 Hz ($S) and 11 Hz ($T) refused"

# ---- two apps stream at once
qt_portal_probe_bg $S /tmp/s2.json portal sensors stream accel_x,voltage0 20 3
ps_=$!
qt_portal_probe_bg $T /tmp/t2.json portal sensors stream voltage0 10 3
pt_=$!
during=$(sampled_while "accel_x timestamp voltage0 buffer=1" 10)
wait $ps_
wait $pt_
qt_portal_show_bg $S /tmp/s2.json
qt_portal_show_bg $T /tmp/t2.json
[ "$during" = "accel_x timestamp voltage0 buffer=1" ] || fail "while both streamed the device sampled: $during"
stream_ok /tmp/s2.json 20 40
stream_ok /tmp/t2.json 10 20
near "$(j first.0 /tmp/s2.json)" "$BUF_ACCEL" && near "$(j first.1 /tmp/s2.json)" "$BUF_VOLT" ||
	fail "$S's records are not (accel_x, voltage0) = ($BUF_ACCEL, $BUF_VOLT)"
near "$(j first.0 /tmp/t2.json)" "$BUF_VOLT" || fail "$T's records are not voltage0 = $BUF_VOLT"
qt_ok "concurrent, one buffer fanned out: $S $(j records /tmp/s2.json) records of (accel_x, voltage0) at <= 20/s, $T $(j records /tmp/t2.json) of voltage0 at <= 10/s"

# ---- without a trigger the device has no buffered scans: streams poll sysfs
echo >"$dev/trigger/current_trigger" || fail "cannot clear accel0's trigger"
probe $S /tmp/sp.json portal sensors stream accel_x,voltage0 20 2
stream_ok /tmp/sp.json 20 25
near "$(j first.0 /tmp/sp.json)" "$EX_ACCEL" && near "$(j first.1 /tmp/sp.json)" "$EX_VOLT" ||
	fail "the polled stream's records are not (accel_x, voltage0) = ($EX_ACCEL, $EX_VOLT) as sysfs gives them"
[ "$(enabled)" = "buffer=0" ] || fail "a polled stream touched the buffer: $(enabled)"
journalctl -t appmgr-portald MESSAGE_ID=$ID_GRANTED APPMGR_APP=$S --no-pager -o cat | grep 'stream' | tail -n 1 |
	grep -q 'polling sysfs (accel0 has no current trigger)' || fail "the grant of the polled stream does not say why it polls"
echo accel0-trig >"$dev/trigger/current_trigger" || fail "cannot restore accel0's trigger"
qt_ok "no trigger: $(j records /tmp/sp.json) records polled from sysfs ($EX_ACCEL, $EX_VOLT)"

# ---- revocation: the policy stops granting S accel_x; `appmgr reload` ends S's
# stream, T's goes on
t_launch=$(cut -d' ' -f1 /proc/uptime)
qt_portal_probe_bg $S /tmp/s3.json portal sensors stream accel_x 20 10
ps_=$!
qt_portal_probe_bg $T /tmp/t3.json portal sensors stream voltage0 10 10
pt_=$!
streaming() { [ "$(journalctl -t appmgr-portald MESSAGE_ID=$ID_GRANTED APPMGR_APP=$1 --no-pager -o cat | grep -c 'stream')" -ge "$2" ]; }
qt_wait 20 streaming $S 3 || fail "$S's third stream did not start"
qt_wait 20 streaming $T 2 || fail "$T's second stream did not start"
sleep 1
policy '"voltage0"'
qt_run 0 appmgr reload
t_reload=$(cut -d' ' -f1 /proc/uptime)
# S's stream is gone: the buffer samples T's voltage0 only
narrowed() { [ "$(enabled)" = "timestamp voltage0 buffer=1" ]; }
qt_wait 3 narrowed || fail "after the revocation the device samples: $(enabled)"
wait $ps_
wait $pt_
qt_portal_show_bg $S /tmp/s3.json
qt_portal_show_bg $T /tmp/t3.json
[ "$(j eof /tmp/s3.json)" = true ] || fail "$S's stream did not end (eof $(j eof /tmp/s3.json)) after its grant was revoked"
awk -v t="$(j eof_after_s /tmp/s3.json)" 'BEGIN { exit !(t != "" && t + 0 < 8) }' ||
	fail "$S's stream ended after $(j eof_after_s /tmp/s3.json) s, not well before its 10 s"
# the stream began after t_launch: an EOF within 1 s of the reload returning has
# eof_after_s <= t_reload - t_launch + 1
lim=$(awk -v a="$t_launch" -v b="$t_reload" 'BEGIN { printf "%.2f", b - a + 1 }')
awk -v t="$(j eof_after_s /tmp/s3.json)" -v l="$lim" 'BEGIN { exit !(t + 0 <= l + 0) }' ||
	fail "$S's stream ended $(j eof_after_s /tmp/s3.json) s after it began, more than 1 s after appmgr reload returned (bound $lim s)"
[ "$(j records /tmp/s3.json)" -ge 1 ] || fail "$S's stream delivered nothing before the revocation"
[ "$(j eof /tmp/t3.json)" = false ] || fail "$T's stream ended too (its grant did not change)"
stream_ok /tmp/t3.json 10 60
[ "$(enabled)" = "buffer=0" ] || fail "after the last stream: $(enabled)"
qt_wait 5 sh -c "journalctl -t appmgr-portald MESSAGE_ID=$ID_REVOKED APPMGR_APP=$S --no-pager -o cat | grep -q revoked" ||
	fail "no portal-revoked ($ID_REVOKED) journal entry for $S's stream"
journalctl -t appmgr-portald MESSAGE_ID=$ID_REVOKED APPMGR_APP=$S --no-pager -o cat | sed 's/^/  | /'
probe $S /tmp/sr.json portal sensors read accel_x
denied /tmp/sr.json || fail "$S may still read accel_x after the revocation"
qt_ok "revoked: $S's stream hit EOF after $(j eof_after_s /tmp/s3.json) s of 10 (bound: within 1 s of the reload, $lim s) ($(j records /tmp/s3.json) records), journaled ($ID_REVOKED); $T's stream ran on ($(j records /tmp/t3.json) records)"
