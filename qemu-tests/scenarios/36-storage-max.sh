#!/bin/sh
# arch: x86_64
# guest: debootstrap
# needs: appmgr
# timeout: 300
# storage-max (issue 10, item 5) on a Debian userland (its e2fsprogs), systemd's
# cgroup v2 and the distribution kernel's loop driver: the app's HOME is its own
# ext4 image of that size, so filling it ends in ENOSPC for that app only while
# another app and an update proceed; the loop device goes away with the app; a
# shrink below the app's data is refused and changes nothing; dropping the limit
# brings the files back into the plain data dir.
# (x86_64 only: the debootstrap guest's time budget, see 60-debootstrap-systemd.)
. /qt/lib.sh
qt_need_appmgr appmgr-launch
export APPMGR_STATE_DIR=/var/lib/qt36 APPMGR_CONFIG_DIR=/etc/qt36
mkdir -p $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR
for t in mkfs.ext4 resize2fs debugfs losetup; do
	command -v $t >/dev/null || qt_fail "$t is missing from the Debian guest"
done
qt_setup_keys /tmp/qt36-keys
QT_KEY=/tmp/qt36-keys/test.key
export QT_KEY
limit() {
	if [ -n "$1" ]; then r="resources = { storage-max = \"$1\" }"; else r=; fi
	qt_policy 10-qt36 "[[rule]]
apps = [\"org.qt.Big\"]
resources = { pids-max = 64 }

[[rule]]
apps = [\"org.qt.Small\"]
$r"
}
limit 8M
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/qt36-rt.bundle
qt_bundle app org.qt.Small 1.0.0 /tmp/qt36-small.bundle
qt_bundle app org.qt.Big 1.0.0 /tmp/qt36-big.bundle
qt_bundle app org.qt.Big 1.1.0 /tmp/qt36-big-1.1.bundle
qt_run 0 appmgr install /tmp/qt36-rt.bundle
qt_run 0 appmgr install /tmp/qt36-small.bundle
qt_run 0 appmgr install /tmp/qt36-big.bundle
img=$APPMGR_STATE_DIR/storage/org.qt.Small.img
data=$APPMGR_STATE_DIR/data/org.qt.Small

# 1. shown == enforced: permissions says 8M; inside, HOME is a file system of
#    at most 8M owned by the app; the image is 8M, root-only, allocated.
qt_run 0 appmgr --json permissions org.qt.Small
qt_out | grep -q '"storage-max": *"8M"' || qt_fail "permissions does not show storage-max 8M"
qt_run 0 appmgr run org.qt.Small -- sh -c 'echo "fs=$(/usr/bin/busybox stat -f -c "%b %S" "$HOME") owner=$(/usr/bin/busybox stat -c %u "$HOME") uid=$(id -u)"'
set -- $(sed -n 's/^fs=\([0-9]*\) \([0-9]*\) owner=\([0-9]*\) uid=\([0-9]*\)$/\1 \2 \3 \4/p' /tmp/qt-out)
[ $# = 4 ] || qt_fail "no statfs line"
total=$(($1 * $2))
[ $total -le 8388608 ] && [ $total -ge 6291456 ] || qt_fail "HOME is $total bytes under storage-max 8M"
[ "$3" = "$4" ] || qt_fail "HOME is owned by $3, the app runs as $4"
[ "$(stat -c '%s %u %a' $img)" = "8388608 0 600" ] || qt_fail "image: $(stat -c '%s %u %a' $img)"
[ $(($(stat -c %b $img) * 512)) -ge 8388608 ] || qt_fail "the image's space is not allocated ($(stat -c %b $img) blocks of 512 bytes)"
qt_ok "HOME: $total bytes of ext4 owned by uid $3 (storage-max 8M), image 8M root 0600"

# 2. filling HOME: ENOSPC at the limit, in this app only; no loop device stays.
qt_run 0 appmgr run org.qt.Small -- sh -c 'dd if=/dev/zero of="$HOME/fill" bs=64k count=256 2>&1; echo size=$(wc -c <"$HOME/fill")'
qt_out | grep -q 'No space left' || qt_fail "filling HOME did not end in ENOSPC"
size=$(sed -n 's/^size=//p' /tmp/qt-out)
[ "$size" -le 8388608 ] && [ "$size" -ge 4194304 ] || qt_fail "wrote $size bytes under storage-max 8M"
[ -z "$(losetup -j $img)" ] || qt_fail "a loop device still holds the image after the app ended: $(losetup -j $img)"
[ $(($(stat -c %b $img) * 512)) -ge 8388608 ] || qt_fail "the image lost allocated space while mounted ($(stat -c %b $img) blocks of 512 bytes)"
grep -q " $APPMGR_STATE_DIR" /proc/self/mountinfo && qt_fail "a mount below the state dir is visible on the host"
qt_run 0 appmgr run org.qt.Big -- sh -c 'dd if=/dev/zero of="$HOME/fill" bs=64k count=256 2>&1; echo size=$(wc -c <"$HOME/fill")'
[ "$(sed -n 's/^size=//p' /tmp/qt-out)" = 16777216 ] || qt_fail "the other app could not write 16M"
qt_run 0 appmgr install /tmp/qt36-big-1.1.bundle
qt_ok "Small full at $size bytes (ENOSPC); Big wrote 16M and updated; no loop device left"

# 3. a shrink below the data is refused, image untouched; a fitting one works.
limit 2M
sum=$(md5sum <$img)
qt_run 4 appmgr run org.qt.Small -- true
qt_out | grep -q 'does not fit storage-max=2M' || qt_fail "no clear refusal of the shrink"
[ "$(md5sum <$img)" = "$sum" ] || qt_fail "the refused shrink changed the image"
limit 12M
qt_run 0 appmgr run org.qt.Small -- sh -c 'echo size=$(wc -c <"$HOME/fill")'
[ "$(sed -n 's/^size=//p' /tmp/qt-out)" = "$size" ] || qt_fail "the file changed size across the grow"
[ "$(stat -c %s $img)" = 12582912 ] || qt_fail "image not grown to 12M"
qt_ok "shrink to 2M refused (image unchanged), grow to 12M kept the file"

# 4. no limit: the files come back into the plain data dir, owned by the app.
limit ""
qt_run 0 appmgr run org.qt.Small -- sh -c 'echo size=$(wc -c <"$HOME/fill")'
[ "$(sed -n 's/^size=//p' /tmp/qt-out)" = "$size" ] || qt_fail "the file was lost when the limit went"
[ -e $img ] && qt_fail "the image stayed after the limit went"
[ "$(stat -c %u $data/fill)" = "$(stat -c %u $data)" ] || qt_fail "exported file not owned by the app"
qt_ok "limit dropped: $data/fill back in the plain data dir, image removed"
rm -rf $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR /tmp/qt36-*
