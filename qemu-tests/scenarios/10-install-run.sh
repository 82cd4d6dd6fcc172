#!/bin/sh
# arch: aarch64 x86_64
# needs: appmgr
# timeout: 300
# Install a signed runtime (busybox-static of this arch) and app, list/info
# them, run the app sandboxed: own unprivileged uid, no capabilities,
# NoNewPrivs 1, Seccomp 2, read-only /usr and /app, private /proc.
. /qt/lib.sh
qt_need_appmgr appmgr-launch
export APPMGR_STATE_DIR=/var/lib/appmgr APPMGR_CONFIG_DIR=/etc/appmgr
mkdir -p $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR

qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/runtime.bundle
qt_bundle app org.qt.Hello 1.0.0 /tmp/hello-1.bundle
qt_run 0 appmgr bundle verify /tmp/hello-1.bundle
qt_run 0 appmgr install /tmp/runtime.bundle
qt_run 0 appmgr install /tmp/hello-1.bundle

qt_run 0 appmgr --json list
qt_out | grep -q '"org.qt.Hello"' || qt_fail "list --json lacks org.qt.Hello"
qt_out | grep -q '"org.qt.Runtime"' || qt_fail "list --json lacks org.qt.Runtime"
qt_run 0 appmgr --json info org.qt.Hello
[ "$(qt_json_field version)" = 1.0.0 ] || qt_fail "info: version is '$(qt_json_field version)'"
[ "$(qt_json_field arch)" = "$QT_ARCH" ] || qt_fail "info: arch is '$(qt_json_field arch)'"
[ "$(qt_json_field kind)" = app ] || qt_fail "info: kind is '$(qt_json_field kind)'"
qt_run 5 appmgr info org.qt.Missing

qt_run 0 appmgr run org.qt.Hello
qt_out | grep -q '^hello from version 1.0.0 uid=' || qt_fail "the app did not print its greeting"
uid=$(qt_out | sed -n 's/^hello from version 1.0.0 uid=//p')
[ -n "$uid" ] && [ "$uid" != 0 ] || qt_fail "the app runs as uid '$uid', not an unprivileged app uid"
qt_ok "app runs as uid $uid"

qt_run 0 appmgr run org.qt.Hello -- cat /proc/self/status
for kv in "NoNewPrivs:	1" "Seccomp:	2" "CapEff:	0000000000000000" "CapPrm:	0000000000000000" "CapBnd:	0000000000000000"; do
	qt_out | grep -q "^$kv\$" || qt_fail "sandbox /proc/self/status lacks '$kv'"
done
qt_ok "no capabilities, no_new_privs, seccomp filter"

# the guest has dozens of processes (kernel threads included); the sandbox
# sees itself only: its init/launcher, sh, ls, grep
qt_run 0 appmgr run org.qt.Hello -- sh -c 'ls /proc | grep -c "^[0-9]"'
[ "$(qt_out | tail -n 1)" -le 6 ] || qt_fail "sandbox /proc shows $(qt_out | tail -n1) processes: not a private pid namespace"
for p in /usr/qt-write /app/qt-write /sys/qt-write; do
	appmgr run org.qt.Hello -- sh -c "echo x > $p" >/dev/null 2>&1 && qt_fail "the app could write $p"
done
qt_ok "/usr, /app, /sys read-only; private /proc"
qt_run 0 appmgr fsck
