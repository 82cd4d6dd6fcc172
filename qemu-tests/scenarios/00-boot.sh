#!/bin/sh
# arch: aarch64 x86_64
# timeout: 60
# What every other scenario relies on: the guest is the expected arch and has
# cgroup v2 with the cpu/memory/pids controllers usable in a child, seccomp
# filtering, and the persistent-disk drivers; on aarch64 the CPU runs AArch32.
. /qt/lib.sh
want=$(cat /qt/arch)
[ "$QT_ARCH" = "$want" ] || qt_fail "uname -m is $QT_ARCH, expected $want"
qt_ok "arch $QT_ARCH, kernel $(uname -r)"

grep -q '^cgroup2 /sys/fs/cgroup cgroup2' /proc/mounts || qt_fail "cgroup2 not mounted at /sys/fs/cgroup"
ctrl=$(cat /sys/fs/cgroup/cgroup.controllers)
for c in cpu memory pids; do
	case " $ctrl " in *" $c "*) ;; *) qt_fail "cgroup v2 controller $c missing (have: $ctrl)" ;; esac
done
echo "+cpu +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control || qt_fail "cannot enable cpu/memory/pids in subtree_control"
mkdir -p /sys/fs/cgroup/qt-boot
echo 64M >/sys/fs/cgroup/qt-boot/memory.max || qt_fail "memory.max not writable"
echo 10 >/sys/fs/cgroup/qt-boot/pids.max || qt_fail "pids.max not writable"
echo "50000 100000" >/sys/fs/cgroup/qt-boot/cpu.max || qt_fail "cpu.max not writable"
[ "$(cat /sys/fs/cgroup/qt-boot/memory.max)" = 67108864 ] || qt_fail "memory.max reads back $(cat /sys/fs/cgroup/qt-boot/memory.max)"
rmdir /sys/fs/cgroup/qt-boot
qt_ok "cgroup v2: $ctrl; memory.max/pids.max/cpu.max writable in a child"

grep -q '^Seccomp:' /proc/self/status || qt_fail "no Seccomp: line in /proc/self/status (CONFIG_SECCOMP off)"
grep -q '^Seccomp_filters:' /proc/self/status || qt_fail "no Seccomp_filters: line (CONFIG_SECCOMP_FILTER off)"
[ "$(sed -n 's/^Seccomp:[[:space:]]*//p' /proc/self/status)" = 0 ] || qt_fail "init already runs under seccomp"
qt_ok "seccomp filter support present (Seccomp: 0 outside any sandbox)"
grep -q '^NoNewPrivs:' /proc/self/status || qt_fail "no NoNewPrivs: line"

for m in virtio_blk ext4; do
	grep -q "^$m " /proc/modules || qt_fail "module $m not loaded"
done
grep -qw ext4 /proc/filesystems || qt_fail "ext4 not registered"
qt_ok "virtio_blk and ext4 loaded"

for ns in mnt pid net ipc uts user cgroup; do
	[ -e /proc/self/ns/$ns ] || qt_fail "namespace $ns unsupported"
done
qt_ok "namespaces: mnt pid net ipc uts user cgroup"

if [ "$QT_ARCH" = aarch64 ]; then
	# AArch32 at EL0 is what the sandbox must block; make sure the guest CPU
	# actually has it, or the compat test would prove nothing.
	grep -qi 'CPU architecture: 8' /proc/cpuinfo || qt_fail "unexpected /proc/cpuinfo"
	qt_ok "aarch64 cpu: $(sed -n 's/^CPU part[[:space:]]*: //p' /proc/cpuinfo | head -n1) (cortex-a57 = 0xd07, which has AArch32 EL0)"
fi
# The 32-bit compat ABI must work outside any sandbox, or the checks that the
# sandbox blocks it (20-seccomp-probe) would prove nothing.
out=$(/qt/compat/busybox32 echo compat-ok 2>&1) || qt_fail "32-bit busybox does not run outside the sandbox: $out"
[ "$out" = compat-ok ] || qt_fail "32-bit busybox printed: $out"
qt_ok "32-bit static busybox (armhf/i386 build) runs outside the sandbox"
echo "uptime at end: $(cut -d" " -f1 /proc/uptime)s"
