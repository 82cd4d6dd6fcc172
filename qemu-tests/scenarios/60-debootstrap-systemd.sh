#!/bin/sh
# arch: x86_64
# (x86_64 only in CI: a foreign arm64 debootstrap costs 5 to 17 minutes on a
# fresh 2-core machine, beyond the stage's budget; the aarch64 kernel's cgroup
# v2, seccomp and namespaces are covered by the initramfs scenarios. Run it on
# aarch64 by adding the arch here.)
# guest: debootstrap
# timeout: 180
# The debootstrap guest as a building block: systemd is PID 1 and reaches a
# running state, the D-Bus system bus answers, bluez and libostree are
# installed, systemd mounted the unified cgroup v2 hierarchy.
. /qt/lib.sh
[ "$(cat /proc/1/comm)" = systemd ] || qt_fail "PID 1 is $(cat /proc/1/comm), not systemd"
state=$(timeout 120 systemctl is-system-running --wait 2>&1)
echo "system state: $state"
case $state in running|degraded) ;; *) qt_fail "systemd state: $state" ;; esac
[ "$state" = degraded ] && systemctl --failed --no-legend
qt_ok "systemd $(systemctl --version | head -n1 | cut -d' ' -f2) is PID 1 ($state)"
busctl --system list --no-legend | grep -q '^org.freedesktop.DBus ' || qt_fail "the system bus does not answer"
busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetId || qt_fail "GetId on the system bus failed"
qt_ok "D-Bus system bus answers"
command -v bluetoothd >/dev/null || [ -x /usr/libexec/bluetooth/bluetoothd ] || qt_fail "bluez not installed"
command -v btvirt >/dev/null || qt_fail "btvirt (bluez-test-tools) not installed"
ls /usr/lib/*-linux-gnu/libostree-1.so.1 >/dev/null || qt_fail "libostree-1-1 not installed"
qt_ok "bluez, btvirt and libostree present"
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || qt_fail "/sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup), not cgroup2"
qt_ok "cgroup v2 unified: $(cat /sys/fs/cgroup/cgroup.controllers)"
modprobe -n -v configfs >/dev/null 2>&1 || qt_fail "modprobe cannot find the kernel modules"
qt_ok "kernel modules available to modprobe"
