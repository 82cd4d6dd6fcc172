#!/bin/sh
# arch: aarch64 x86_64
# needs: appmgr
# timeout: 300
# cgroup v2, issue 10 items 11-12. Device grants: a granted 0660 root:GROUP node
# opens read-write as the app's own private node, and the BPF device program the
# launcher attaches to the app's cgroup refuses a node that was not granted even
# when it appears in the sandbox's /dev (EPERM). pids-max counts only the app's
# tasks: pids-max = 1 runs the app, pids-max = 4 allows exactly 3 forks.
. /qt/lib.sh
qt_need_appmgr appmgr-launch
export APPMGR_STATE_DIR=/var/lib/appmgr APPMGR_CONFIG_DIR=/etc/appmgr
mkdir -p $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR/board-support
qt_setup_keys /tmp/qt-keys
grep -q ' - cgroup2 ' /proc/self/mountinfo || qt_fail "no cgroup v2 in the guest"

# Test nodes: the numbers of a char device this guest's kernel serves and root
# can open harmlessly (cpu_dma_latency is built in; opening it adds a default,
# i.e. no-op, latency request), as a 0660 root:4242 "gpu"; /dev/net/tun's
# numbers (10:200) never granted.
pick=
for c in /dev/cpu_dma_latency /dev/rtc0 /dev/hpet /dev/loop-control /dev/fuse /dev/net/tun; do
	if [ -c "$c" ] && (exec 3<>"$c") 2>/dev/null; then pick=$c; break; fi
done
[ -n "$pick" ] || qt_fail "no harmless char device to test with"
maj=$((0x$(stat -c %t "$pick"))) min=$((0x$(stat -c %T "$pick")))
echo "test device: $pick ($maj:$min)"
mkdir -p /dev/qt-devices
mknod /dev/qt-devices/gpu0 c $maj $min
chown 0:4242 /dev/qt-devices/gpu0
chmod 0660 /dev/qt-devices/gpu0
cat >$APPMGR_CONFIG_DIR/board-support/qt-board.toml <<EOB
name = "qt-board"
arch = "$QT_ARCH"
[devices.gpu]
nodes = ["/dev/qt-devices/gpu*"]
EOB
echo 'board = "qt-board"' >$APPMGR_CONFIG_DIR/appmgr.toml
qt_policy 10-qt '[[rule]]
apps = ["org.qt.Dev"]
grant = { devices = ["gpu"] }
resources = { memory-max = "64M", pids-max = 16 }

[[rule]]
apps = ["org.qt.Pids"]
resources = { memory-max = "64M", pids-max = 1 }'
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/runtime.bundle
QT_MANIFEST_EXTRA='[permissions]
devices = ["gpu"]' qt_bundle app org.qt.Dev 1.0.0 /tmp/dev.bundle
qt_bundle app org.qt.Pids 1.0.0 /tmp/pids.bundle
qt_run 0 appmgr install /tmp/runtime.bundle
qt_run 0 appmgr install /tmp/dev.bundle
qt_run 0 appmgr install /tmp/pids.bundle

# granted node: opens read-write, and it is the app's own crw------- node
appmgr run org.qt.Dev -- sh -c 'if err=$( (exec 3<>/dev/qt-devices/gpu0) 2>&1 ); then echo open=ok; else echo "open=$err"; fi; ls -ln /dev/qt-devices/gpu0; id -u' >/tmp/dev.out 2>&1
sed 's/^/  | /' /tmp/dev.out
grep -q '^open=ok' /tmp/dev.out || qt_fail "the granted 0660 root:4242 node did not open"
uid=$(tail -n1 /tmp/dev.out)
grep -q "^crw------- *1 $uid *$uid *$maj, *$min " /tmp/dev.out || qt_fail "not a private 0600 node owned by $uid"
[ "$(stat -c '%u:%g %a' /dev/qt-devices/gpu0)" = "0:4242 660" ] || qt_fail "the host node was changed"
qt_ok "granted node opens read-write as the app's own node"

# ungranted node appearing in the sandbox: the BPF program refuses it
appmgr run org.qt.Dev -- sh -c 'n=0; while [ ! -e /dev/sneaky ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done; if err=$( (exec 3<>/dev/sneaky) 2>&1 ); then echo open=ok; else echo "open=$err"; fi' >/tmp/sneaky.out 2>&1 &
bg=$!
cg=/sys/fs/cgroup/appmgr.slice/app-org.qt.Dev.scope
n=0
while [ -z "$(head -n1 $cg/cgroup.procs 2>/dev/null)" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
app=$(head -n1 $cg/cgroup.procs)
[ -n "$app" ] || qt_fail "the app did not start"
command -v bpftool >/dev/null 2>&1 && bpftool cgroup show $cg 2>/dev/null | sed 's/^/  | bpftool: /'
mknod -m 0666 /proc/$app/root/dev/sneaky c 10 200 || qt_fail "could not make the test node in the sandbox"
wait $bg
sed 's/^/  | /' /tmp/sneaky.out
grep -q '^open=.*Operation not permitted' /tmp/sneaky.out || qt_fail "an ungranted node opened"
qt_ok "ungranted node refused with EPERM by the device program"

# pids-max = 1: the app runs its single process, and one fork is refused
qt_run 0 appmgr run org.qt.Pids -- true
appmgr run org.qt.Pids -- sh -c 'sleep 5 & echo forked' >/tmp/p1.out 2>&1
sed 's/^/  | /' /tmp/p1.out
grep -q forked /tmp/p1.out && qt_fail "a fork succeeded under pids-max 1"
grep -q "can't fork" /tmp/p1.out || qt_fail "no fork failure under pids-max 1"
qt_ok "pids-max 1: the app runs, its first fork fails"

# pids-max = 4: exactly 3 forks succeed, the 4th fails with EAGAIN
qt_policy 10-qt '[[rule]]
apps = ["org.qt.Pids"]
resources = { memory-max = "64M", pids-max = 4 }'
appmgr run org.qt.Pids -- sh -c 'sleep 5 & sleep 5 & sleep 5 & echo forked=3; sleep 5 & echo forked=4' >/tmp/p4.out 2>&1
sed 's/^/  | /' /tmp/p4.out
grep -q '^forked=3' /tmp/p4.out || qt_fail "3 forks did not succeed under pids-max 4"
grep -q '^forked=4' /tmp/p4.out && qt_fail "a 4th fork succeeded under pids-max 4"
grep -q "can't fork: Resource temporarily unavailable" /tmp/p4.out || qt_fail "the 4th fork did not fail with EAGAIN"
qt_ok "pids-max 4: exactly 3 forks, the 4th EAGAIN"
[ ! -d $cg ] && [ ! -d /sys/fs/cgroup/appmgr.slice/launch-org.qt.Pids.scope ] || qt_fail "cgroups left behind"
qt_run 0 appmgr fsck
