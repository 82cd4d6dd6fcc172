#!/bin/sh
# arch: x86_64
# needs: iio
# timeout: 60
# The iio_dummy building block: load the out-of-tree modules, create a dummy
# accelerometer through configfs, read its raw channels from sysfs (what the
# Sensors portal's Read and polled streams read), and take scans from its IIO
# buffer on an hrtimer trigger (what the portal's buffered streams read): only
# the enabled channels, at the trigger's rate, with the driver's buffered values.
. /qt/lib.sh
cfg=$(qt_iio_load)
dev=$(qt_iio_device "$cfg" accel0)
ls "$dev"
n=0
for f in "$dev"/*_raw; do
	v=$(cat "$f") || qt_fail "cannot read $f"
	echo "$(basename "$f") = $v"
	n=$((n + 1))
done
[ $n -gt 0 ] || qt_fail "no raw channels on $dev"
qt_ok "$dev ($n raw channels)"

# The buffer: accel_x (le:s16/16>>0) and the timestamp (le:s64/64>>0) make a
# 16-byte scan; iio_dummy's buffered accel_x is 344 (0x0158).
qt_iio_trigger "$cfg" accel0-trig "$dev"
trig=$(grep -lx accel0-trig /sys/bus/iio/devices/trigger*/name)
trig=${trig%/name}
echo 50 >"$trig/sampling_frequency" || qt_fail "cannot set the trigger's sampling_frequency"
se=$dev/scan_elements
for e in "$se"/*_en; do echo 0 >"$e"; done
echo 1 >"$se/in_accel_x_en" && echo 1 >"$se/in_timestamp_en" || qt_fail "cannot enable scan elements"
echo "  accel_x: $(cat "$se/in_accel_x_type"), timestamp: $(cat "$se/in_timestamp_type")"
echo 64 >"$dev/buffer/length"
echo 1 >"$dev/buffer/enable" || qt_fail "cannot enable the buffer"
node=/dev/$(basename "$dev")
[ -c "$node" ] || qt_fail "no character device $node"
dd if="$node" of=/tmp/scans bs=160 count=1 2>/dev/null
echo 0 >"$dev/buffer/enable"
size=$(wc -c </tmp/scans)
[ "$size" -ge 16 ] && [ $((size % 16)) = 0 ] || qt_fail "read $size bytes from $node, not whole 16-byte scans"
# the first two bytes of each scan: 58 01
bad=$(od -A n -t x1 -w16 -v /tmp/scans | awk '$1 != "58" || $2 != "01"' | wc -l)
[ "$bad" = 0 ] || qt_fail "$bad scans do not carry accel_x = 344: $(od -A n -t x1 -w16 -v /tmp/scans | head -n 3)"
qt_ok "buffer: $((size / 16)) scans of accel_x = 344 + timestamp from $node on the hrtimer trigger at 50 Hz"
rmdir "$cfg/iio/devices/dummy/accel0"
