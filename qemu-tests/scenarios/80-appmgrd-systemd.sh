#!/bin/sh
# arch: x86_64
# guest: debootstrap
# needs: appmgr
# timeout: 480
# appmgrd as the systemd service the Yocto recipe ships (appmgr/daemon/data),
# installed in the guest as the package installs it: Type=notify start (READY,
# STATUS), factory bundles from preinstall.d, an autostart service app running
# sandboxed in appmgr.slice, the CLI and busctl going through the daemon (bus
# policy: everyone may call, appmgrd refuses non-root mutations itself), the
# cgroup limits surviving systemd realizing its own units, the watchdog
# restarting a SIGSTOPped daemon, and the service coming back after a restart.
# x86_64 only: the stage's time budget (docs/qemu-tests.md).
. /qt/lib.sh
qt_need_appmgr appmgr-launch appmgrd

show() { systemctl show -p "$1" --value appmgrd; }
# fail with the daemon's journal: what went wrong is usually there
fail() {
	echo "--- journalctl -u appmgrd (last 40 lines)"
	journalctl -u appmgrd --no-pager -n 40 -o short-monotonic 2>&1 | sed 's/^/  | /'
	qt_fail "$*"
}
# wait_for SECONDS CMD...: poll every second until CMD succeeds
wait_for() {
	n=$1
	shift
	while [ "$n" -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 1
		n=$((n - 1))
	done
	return 1
}
svc_pid() { pgrep -x -f 'sleep 4242424' | head -n 1; }
svc_running() { [ -n "$(svc_pid)" ]; }
svc_gone() { [ -z "$(svc_pid)" ]; }
daemon_ready() { [ "$(show ActiveState)" = active ] && [ "$(show StatusText)" = "serving org.appmgr.Manager1" ]; }

state=$(timeout 120 systemctl is-system-running --wait 2>&1)
case $state in running|degraded) ;; *) qt_fail "systemd state: $state" ;; esac

# ---- install as yocto-layer's appmgr_git.bb do_install does
L=/usr/libexec/appmgr
D=/qt/data/appmgrd
[ -f $D/appmgrd.service ] || qt_fail "appmgr/daemon/data was not staged into /qt/data/appmgrd"
mkdir -p $L /usr/share/dbus-1/system.d /usr/share/dbus-1/system-services
for b in appmgr appmgr-ops appmgr-launch; do
	[ -f /opt/appmgr/bin/$b ] && install -m 0755 /opt/appmgr/bin/$b $L/$b
done
# appmgrd is the appmgr executable run under that name (appmgr/multicall)
ln -sfn appmgr $L/appmgrd
ln -sf ../libexec/appmgr/appmgr /usr/bin/appmgr
install -m 0644 $D/appmgrd.service /usr/lib/systemd/system/
install -m 0644 $D/org.appmgr.Manager1.conf /usr/share/dbus-1/system.d/
install -m 0644 $D/org.appmgr.Manager1.service /usr/share/dbus-1/system-services/
install -m 0644 $D/appmgr.tmpfiles.conf /usr/lib/tmpfiles.d/appmgr.conf
export PATH=$L:$PATH APPMGR_STATE_DIR=/var/lib/appmgr APPMGR_CONFIG_DIR=/etc/appmgr
qt_run 0 systemd-tmpfiles --create /usr/lib/tmpfiles.d/appmgr.conf
[ "$(stat -c %a:%U /var/lib/appmgr)" = 755:root ] || qt_fail "tmpfiles: /var/lib/appmgr is $(stat -c %a:%U /var/lib/appmgr)"
qt_run 0 systemctl daemon-reload
qt_run 0 systemctl reload dbus
qt_run 0 systemd-analyze verify /usr/lib/systemd/system/appmgrd.service
qt_out | grep -v 'qt-runner\|^ *$' | grep -q . && qt_fail "systemd-analyze verify complains about the units"
qt_run 0 systemctl enable appmgrd
[ -L /etc/systemd/system/dbus-org.appmgr.Manager1.service ] || qt_fail "enable did not create the D-Bus activation alias"
qt_ok "installed like the package; units verify; enabled with its D-Bus alias"

# ---- factory bundles: a runtime and a service app, in preinstall.d
mkdir -p /etc/appmgr/preinstall.d /usr/share/appmgr/preinstall
qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /usr/share/appmgr/preinstall/org.qt.Runtime.bundle
t=/tmp/qt-svc
mkdir -p $t/root/bin
cat >$t/root/bin/qt-svc <<-'EOS'
	#!/usr/bin/sh
	echo "qt-svc up uid=$(id -u)"
	exec sleep 4242424
EOS
chmod 755 $t/root/bin/qt-svc
qt_manifest $t/manifest.toml org.qt.Svc app 1.0.0 org.qt.Runtime qt-svc
printf '[service]\nready = "started"\nstop-timeout = 5\n' >>$t/manifest.toml
qt_run 0 appmgr bundle create --manifest $t/manifest.toml --root $t/root --key /tmp/qt-keys/test.key \
	--out /usr/share/appmgr/preinstall/org.qt.Svc.bundle
for e in 20:runtime:org.qt.Runtime 50:app:org.qt.Svc; do
	n=${e%%:*} k=${e#*:} k=${k%%:*} id=${e##*:}
	b=/usr/share/appmgr/preinstall/$id.bundle
	printf 'bundle = "%s"\nid = "%s"\nkind = "%s"\nversion = "1.0.0"\nsha256 = "%s"\n' \
		"$b" "$id" "$k" "$(sha256sum "$b" | cut -d' ' -f1)" >/etc/appmgr/preinstall.d/$n-$id.toml
done
qt_policy 10-qt '[[rule]]
apps = ["org.qt.*"]
resources = { memory-max = "64M", pids-max = 32 }
service = { autostart = true, restart = "on-failure" }'

# ---- (a) Type=notify: active only once appmgrd said READY=1
t0=$(cut -d. -f1 /proc/uptime)
systemctl start appmgrd || fail "systemctl start appmgrd failed"
echo "  started in $(($(cut -d. -f1 /proc/uptime) - t0)) s"
qt_run 0 systemctl show -p ActiveState,SubState,StatusText,MainPID,NRestarts,Result appmgrd
daemon_ready || fail "appmgrd is not active with its STATUS= text"
pid=$(show MainPID)
[ "$(cat /proc/$pid/comm)" = appmgrd ] || fail "MainPID $pid is $(cat /proc/$pid/comm)"
grep -q '^NoNewPrivs:	1' /proc/$pid/status || fail "NoNewPrivileges=yes is not in effect"
qt_ok "systemctl start: active, STATUS \"$(show StatusText)\", pid $pid, NoNewPrivs 1"
# ProtectSystem=strict leaves /etc/dbus-1/system.d writable for the per-app rules
[ -s /etc/dbus-1/system.d/appmgr-apps.conf ] || fail "appmgrd did not write /etc/dbus-1/system.d/appmgr-apps.conf"
journalctl -u appmgrd --no-pager | grep -q 'bus policy not updated\|ReloadConfig' && fail "appmgrd could not update the bus policy"
ls /run/userdb/appmgr-70000.user >/dev/null || fail "appmgrd did not publish /run/userdb/appmgr-70000.user: $(ls /run/userdb 2>&1)"
journalctl -u appmgrd --no-pager | grep -q 'Read-only file system' && fail "appmgrd hit the unit's read-only file system"
qt_ok "per-app bus policy written and reloaded; app uid published in /run/userdb"
journalctl -u appmgrd -o verbose --no-pager | grep -q '^ *MESSAGE_ID=' || fail "no MESSAGE_ID fields in appmgrd's journal"
qt_ok "appmgrd logs to journald natively (MESSAGE_ID)"

# ---- (b) the CLI goes through the daemon
flock -n -s /var/lib/appmgr/daemon/lock true 2>/dev/null && fail "STATE/daemon/lock is not held"
qt_run 0 busctl --system call org.appmgr.Manager1 /org/appmgr/Manager1 org.appmgr.Manager1 List
qt_out | grep -q org.qt.Svc || fail "List over the bus lacks org.qt.Svc (preinstall)"
qt_run 0 appmgr list
qt_out | grep -q org.qt.Runtime || fail "appmgr list lacks org.qt.Runtime"
# status exists only through appmgrd
qt_run 0 appmgr status org.qt.Svc
qt_out | grep -qi running || fail "appmgr status does not show org.qt.Svc running"
qt_ok "lock held; busctl List and appmgr list/status answered by appmgrd"

# ---- the bus policy: anyone may call; appmgrd itself refuses what they may not do
qt_run 0 setpriv --reuid=65534 --regid=65534 --clear-groups \
	busctl --system call org.appmgr.Manager1 /org/appmgr/Manager1 org.appmgr.Manager1 List
qt_run 0 setpriv --reuid=65534 --regid=65534 --clear-groups \
	busctl --system introspect org.appmgr.Manager1 /org/appmgr/Manager1
qt_out | grep -q InstallProgress || fail "introspection lacks the InstallProgress signal"
qt_run 1 setpriv --reuid=65534 --regid=65534 --clear-groups \
	busctl --system call org.appmgr.Manager1 /org/appmgr/Manager1 org.appmgr.Manager1 Stop s org.qt.Svc
qt_out | grep -q 'rejected send message' && fail "the bus, not appmgrd, refused the call"
qt_ok "uid 65534 may List and introspect; its Stop is refused by appmgrd"

# ---- the service app: sandboxed, in appmgr.slice, limits in place
wait_for 30 svc_running || fail "the autostart service org.qt.Svc is not running"
sp=$(svc_pid)
uid=$(stat -c %u /proc/$sp)
[ "$uid" -ge 70000 ] && [ "$uid" -le 79999 ] || fail "the service runs as uid $uid"
cg=$(sed -n 's/^0:://p' /proc/$sp/cgroup)
echo "  service pid $sp uid $uid cgroup $cg"
case $cg in /appmgr.slice/app-org.qt.Svc.scope*) ;; *) fail "the service is in cgroup $cg" ;; esac
scope=/sys/fs/cgroup/appmgr.slice/app-org.qt.Svc.scope
[ "$(cat $scope/memory.max)" = 67108864 ] || fail "memory.max is $(cat $scope/memory.max 2>&1)"
qt_ok "org.qt.Svc autostarted: pid $sp, uid $uid, $cg, memory.max 64M"
# systemd realizes the cgroups of -.slice's children when units start or on
# daemon-reload: it must not take the controllers away from the app scopes (it
# does when appmgr.slice is a unit of its own: there is none)
[ -e /usr/lib/systemd/system/appmgr.slice ] && fail "an appmgr.slice unit is installed"
qt_run 0 systemctl show -p LoadState,ActiveState,FragmentPath appmgr.slice
for op in "systemctl daemon-reload" "systemd-run --wait --quiet true" "systemctl restart systemd-journald" "systemctl daemon-reexec"; do
	qt_run 0 $op
	[ "$(cat $scope/memory.max 2>&1)" = 67108864 ] || fail "after $op: memory.max is '$(cat $scope/memory.max 2>&1)'; appmgr.slice/cgroup.subtree_control '$(cat /sys/fs/cgroup/appmgr.slice/cgroup.subtree_control)', root '$(cat /sys/fs/cgroup/cgroup.subtree_control)'"
done
qt_ok "limits survive daemon-reload, a transient unit, a journald restart, daemon-reexec"

# ---- (d) systemctl restart: appmgrd stops the service and starts it again
qt_run 0 systemctl restart appmgrd
daemon_ready || fail "not active after restart"
wait_for 30 svc_running || fail "org.qt.Svc is not running after systemctl restart appmgrd"
[ "$(svc_pid)" != "$sp" ] || fail "the service process $sp survived the restart (not stopped by appmgrd)"
qt_run 0 appmgr status org.qt.Svc
qt_out | grep -qi running || fail "appmgr status does not show org.qt.Svc running after the restart"
qt_ok "after systemctl restart appmgrd: org.qt.Svc running again (pid $(svc_pid), was $sp)"

# ---- (c) the watchdog: a stopped daemon is killed and restarted
mkdir -p /etc/systemd/system/appmgrd.service.d
printf '[Service]\nWatchdogSec=5s\n' >/etc/systemd/system/appmgrd.service.d/qt-watchdog.conf
qt_run 0 systemctl daemon-reload
qt_run 0 systemctl restart appmgrd
daemon_ready || fail "not active with WatchdogSec=5s"
[ "$(show WatchdogUSec)" = 5s ] || fail "WatchdogUSec is $(show WatchdogUSec)"
wait_for 30 svc_running || fail "org.qt.Svc is not running before the watchdog test"
p0=$(show MainPID) n0=$(show NRestarts)
sleep 6 # a healthy daemon pings: no restart
[ "$(show MainPID)" = "$p0" ] || fail "appmgrd was restarted although it pinged the watchdog"
kill -STOP "$p0"
t0=$(cut -d. -f1 /proc/uptime)
restarted() { p=$(show MainPID); [ "$p" != 0 ] && [ "$p" != "$p0" ] && daemon_ready; }
wait_for 45 restarted || fail "appmgrd (pid $p0, SIGSTOPped) was not restarted within 45 s: $(systemctl show -p ActiveState,SubState,Result,NRestarts appmgrd | tr '\n' ' ')"
n1=$(show NRestarts)
[ "$n1" -gt "$n0" ] || fail "NRestarts $n0 -> $n1"
qt_ok "SIGSTOPped appmgrd killed by the watchdog and restarted in $(($(cut -d. -f1 /proc/uptime) - t0)) s (pid $p0 -> $(show MainPID), NRestarts $n0 -> $n1)"
journalctl -u appmgrd --no-pager | grep -i watchdog | tail -n 2 | sed 's/^/  | /'
svc_supervised() { appmgr status org.qt.Svc 2>&1 | grep -qi running; }
if wait_for 20 svc_supervised; then
	qt_ok "org.qt.Svc supervised and running after the watchdog restart (pid $(svc_pid))"
else
	echo "  DIAG: appmgr status: $(appmgr status org.qt.Svc 2>&1)"
	for p in $(pgrep -x -f 'sleep 4242424'); do echo "  DIAG: pid $p ppid $(ps -o ppid= -p $p) cgroup $(sed -n 's/^0:://p' /proc/$p/cgroup)"; done
	echo "  DIAG: launchers: $(pgrep -a appmgr-launch | tr '\n' ';')"
	journalctl -u appmgrd --no-pager -n 6 -o short-monotonic | sed 's/^/  DIAG: /'
	# (before appmgrd killed what a dead instance left, the old service stayed
	# orphaned and the new autostart failed on the busy cgroup)
	fail "org.qt.Svc is not supervised and running after the watchdog restart"
fi
rm -rf /etc/systemd/system/appmgrd.service.d
systemctl daemon-reload

# ---- stop: appmgrd stops its services; the CLI works locally again
qt_run 0 systemctl stop appmgrd
wait_for 10 svc_gone || fail "org.qt.Svc (pid $(svc_pid)) still runs after systemctl stop appmgrd"
qt_run 0 appmgr list
qt_out | grep -q org.qt.Svc || fail "appmgr list (local) lacks org.qt.Svc"
qt_ok "systemctl stop: service stopped; appmgr list works without the daemon"

# ---- D-Bus activation: a call to the stopped daemon starts the unit
qt_run 0 busctl --system call org.appmgr.Manager1 /org/appmgr/Manager1 org.appmgr.Manager1 List
qt_out | grep -q org.qt.Svc || fail "List through D-Bus activation lacks org.qt.Svc"
wait_for 30 daemon_ready || fail "D-Bus activation did not start appmgrd.service"
qt_ok "D-Bus activation started appmgrd.service ($(show StatusText))"
qt_run 0 systemctl stop appmgrd
