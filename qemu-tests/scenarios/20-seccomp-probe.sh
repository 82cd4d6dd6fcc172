#!/bin/sh
# arch: aarch64 x86_64
# needs: appmgr appmgr-probe
# timeout: 300
# The probe's seccomp results on this arch, from inside the sandbox; and the
# 32-bit compat ABI (AArch32 on aarch64, i386 on x86_64) is blocked there
# (00-boot shows the same binary runs outside).
# Probe contract assumed here: appmgr-probe exits 0 iff every restriction it
# checks holds, and prints one line per check.
. /qt/lib.sh
qt_need_appmgr appmgr-launch appmgr-probe
export APPMGR_STATE_DIR=/var/lib/appmgr APPMGR_CONFIG_DIR=/etc/appmgr
mkdir -p $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR
qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/runtime.bundle
qt_bundle app org.qt.Probe 1.0.0 /tmp/probe.bundle
qt_run 0 appmgr install /tmp/runtime.bundle
qt_run 0 appmgr install /tmp/probe.bundle

qt_run 0 appmgr run org.qt.Probe -- /app/bin/appmgr-probe
qt_ok "probe: all checks passed on $QT_ARCH"

# 32-bit code: either the exec fails or the process dies before printing.
appmgr run org.qt.Probe -- /app/bin/busybox32 echo compat-ran >/tmp/compat.out 2>&1
rc=$?
sed 's/^/  | /' /tmp/compat.out
grep -q '^compat-ran$' /tmp/compat.out && qt_fail "a 32-bit ($([ "$QT_ARCH" = aarch64 ] && echo AArch32 || echo i386)) binary ran inside the sandbox"
[ $rc != 0 ] || qt_fail "running a 32-bit binary in the sandbox exited 0"
qt_ok "32-bit compat syscalls blocked in the sandbox (exit $rc)"
