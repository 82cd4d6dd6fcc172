#!/bin/sh
# arch: aarch64 x86_64
# needs: appmgr
# timeout: 400
# cgroup v2 limits on a sandboxed app: memory-max (OOM kill confined to the
# app, reported in memory.events), pids-max (fork bomb stops), cpu-max 50 %
# (measured CPU share within ±10 % of the quota); the front end appmgr-run serves
# a launch under the same limits without the full CLI.
. /qt/lib.sh
qt_need_appmgr appmgr-launch appmgr-run
export APPMGR_STATE_DIR=/var/lib/appmgr APPMGR_CONFIG_DIR=/etc/appmgr
mkdir -p $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR
qt_setup_keys /tmp/qt-keys
qt_policy 10-qt '[[rule]]
apps = ["org.qt.*"]
resources = { memory-max = "32M", pids-max = 16, cpu-max = "50%" }'
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/runtime.bundle
QT_MANIFEST_EXTRA='[resources]
memory-max = "32M"
pids-max = 16
cpu-max = "50%"' qt_bundle app org.qt.Limits 1.0.0 /tmp/limits.bundle
qt_run 0 appmgr install /tmp/runtime.bundle
qt_run 0 appmgr install /tmp/limits.bundle
qt_run 0 appmgr run org.qt.Limits

# memory: a 64 MiB buffer in a 32 MiB cgroup
oom0=$(grep -h '^oom_kill' /sys/fs/cgroup/memory.events 2>/dev/null | cut -d' ' -f2)
appmgr run org.qt.Limits -- dd if=/dev/zero of=/dev/null bs=64M count=1 >/tmp/oom.out 2>&1
rc=$?
sed 's/^/  | /' /tmp/oom.out
[ $rc != 0 ] || qt_fail "a 64 MiB allocation succeeded under memory-max 32M"
grep -q 'MemTotal' /proc/meminfo && [ -d /proc/1 ] || qt_fail "the guest itself died"
qt_ok "memory hog failed (exit $rc) and the host side is alive"
ev=$(find /sys/fs/cgroup -path '*org.qt.Limits*' -name memory.events 2>/dev/null | head -n1)
if [ -n "$ev" ]; then
	grep -q '^oom_kill [1-9]' "$ev" || qt_fail "$ev shows no oom_kill"
	qt_ok "OOM kill recorded in $ev"
else
	echo "note: the app's cgroup is gone after exit; OOM seen via exit code only"
fi

# pids: 40 background sleeps under pids-max 16
# An inner shell forks until it fails (ash exits on "can't fork"); the outer
# one then counts with a glob and echo, builtins: at the limit nothing forks.
# /proc/1 is init, which is not the app's (pids-max counts the app's tasks only).
appmgr run org.qt.Limits -- sh -c 'sh -c "for i in \$(seq 40); do sleep 5 & done" 2>/dev/null; set -- /proc/[0-9]*; echo procs=$(($# - 1)); exit 0' >/tmp/pids.out 2>&1
sed 's/^/  | /' /tmp/pids.out
started=$(sed -n 's/^procs=//p' /tmp/pids.out)
[ -n "$started" ] && [ "$started" -le 16 ] || qt_fail "pids-max 16 did not stop the forks (processes seen: $started)"
qt_ok "40 forks attempted, $started processes in the sandbox under pids-max 16"

# The front end (appmgr/run, /usr/bin/appmgr on a device) serves the same launch from the
# plan kept at install, under the same limit, without the full CLI: a wrapper in
# APPMGR_CLI would record a hand-over.
printf '#!/bin/sh\necho "$*" >> /tmp/handed\nexec %s "$@"\n' "$(command -v appmgr)" >/tmp/full-cli
chmod 0755 /tmp/full-cli
rm -f /tmp/handed
APPMGR_CLI=/tmp/full-cli appmgr-run run org.qt.Limits -- sh -c 'sh -c "for i in \$(seq 40); do sleep 5 & done" 2>/dev/null; set -- /proc/[0-9]*; echo procs=$(($# - 1)); exit 0' >/tmp/pids-front.out 2>&1
sed 's/^/  | /' /tmp/pids-front.out
started=$(sed -n 's/^procs=//p' /tmp/pids-front.out)
[ -n "$started" ] && [ "$started" -le 16 ] || qt_fail "through the front end, pids-max 16 did not stop the forks (processes seen: $started)"
[ ! -e /tmp/handed ] || qt_fail "the front end handed the launch to the full CLI: $(cat /tmp/handed)"
# A command line it does not serve reaches the full CLI unchanged.
APPMGR_CLI=/tmp/full-cli appmgr-run list >/tmp/front-list.out 2>&1 || qt_fail "appmgr-run list failed: $(cat /tmp/front-list.out)"
grep -q 'org.qt.Limits' /tmp/front-list.out || qt_fail "appmgr-run list did not list the app: $(cat /tmp/front-list.out)"
[ "$(cat /tmp/handed)" = "list" ] || qt_fail "appmgr-run list was not handed over as it was: $(cat /tmp/handed 2>/dev/null)"
qt_ok "the front end served the launch ($started processes under pids-max 16) and handed 'list' to the full CLI"

# cpu: busy loop for 6 s of wall time; its CPU time must be 50 % ±10 %
appmgr run org.qt.Limits -- sh -c 'timeout -s KILL 6 sh -c "while :; do :; done"; read -r l < /proc/self/stat; set -- $l; echo ticks=$(( ${16} + ${17} ))' >/tmp/cpu.out 2>&1
sed 's/^/  | /' /tmp/cpu.out
ticks=$(sed -n 's/^ticks=//p' /tmp/cpu.out)
[ -n "$ticks" ] || qt_fail "no CPU measurement"
pct=$((ticks * 100 / 600))
[ $pct -ge 45 ] && [ $pct -le 55 ] || qt_fail "busy loop got ${pct}% CPU under cpu-max 50% (allowed 45..55)"
qt_ok "cpu-max 50%: measured ${pct}%"
qt_run 0 appmgr fsck
