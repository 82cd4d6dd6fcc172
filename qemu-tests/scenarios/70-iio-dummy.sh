#!/bin/sh
# arch: x86_64
# needs: iio
# timeout: 60
# The iio_dummy building block: load the out-of-tree modules, create a dummy
# accelerometer through configfs, read its raw channels from sysfs (what the
# Sensors portal reads).
. /qt/lib.sh
for m in industrialio-configfs industrialio-sw-device iio_dummy; do
	insmod /qt/extra/iio/$m.ko || qt_fail "insmod $m failed"
done
mkdir -p /config
mount -t configfs none /config || qt_fail "mount configfs failed"
mkdir /config/iio/devices/dummy/accel0 || qt_fail "cannot create a dummy IIO device"
dev=$(grep -l '^accel0$' /sys/bus/iio/devices/iio:device*/name | head -n1)
[ -n "$dev" ] || qt_fail "no iio:device named accel0"
dev=${dev%/name}
ls "$dev"
n=0
for f in "$dev"/*_raw; do
	v=$(cat "$f") || qt_fail "cannot read $f"
	echo "$(basename "$f") = $v"
	n=$((n + 1))
done
[ $n -gt 0 ] || qt_fail "no raw channels on $dev"
qt_ok "$dev ($n raw channels)"
rmdir /config/iio/devices/dummy/accel0
