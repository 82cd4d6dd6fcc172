#!/bin/sh
# arch: aarch64 x86_64
# needs: appmgr
# timeout: 400
# Memory exhaustion on cgroup v2 (issue 10, item 5): the sandbox's /tmp is
# sized from memory-max (the writer gets ENOSPC, nothing is OOM-killed);
# tmpfs pages plus an allocation OOM-kill the app, never the launcher or init
# (oom_score_adj -1000; the app's is 0 and it cannot lower it), and the
# launcher reports the kill and removes the cgroup; `appmgr kill` kills the
# app's cgroup but not the launcher, which cleans up; the counts of a cgroup
# left behind by a killed launcher are not reported by the next run.
. /qt/lib.sh
qt_need_appmgr appmgr-launch
export APPMGR_STATE_DIR=/var/lib/appmgr APPMGR_CONFIG_DIR=/etc/appmgr
mkdir -p $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR
qt_setup_keys /tmp/qt-keys
qt_policy 10-qt '[[rule]]
apps = ["org.qt.*"]
resources = { memory-max = "32M", pids-max = 32 }'
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/runtime.bundle
QT_MANIFEST_EXTRA='[resources]
memory-max = "32M"' qt_bundle app org.qt.Oom 1.0.0 /tmp/oom.bundle
qt_run 0 appmgr install /tmp/runtime.bundle
qt_run 0 appmgr install /tmp/oom.bundle
cg=/sys/fs/cgroup/appmgr.slice/app-org.qt.Oom.scope

# wait_for SECONDS CMD...: poll until CMD succeeds.
wait_for() {
	n=$(($1 * 10))
	shift
	while ! "$@"; do
		n=$((n - 1))
		[ $n -gt 0 ] || return 1
		sleep 0.1
	done
}
ppid_of() { sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f2; }

# 1. /tmp is 16M under memory-max 32M: ENOSPC, no OOM kill, no event.
qt_run 0 appmgr run org.qt.Oom -- sh -c 'dd if=/dev/zero of=/tmp/f bs=1M count=64 2>&1; echo size=$(wc -c </tmp/f)'
qt_out | grep -q 'No space left' || qt_fail "filling /tmp did not end in ENOSPC"
size=$(sed -n 's/^size=//p' /tmp/qt-out)
[ -n "$size" ] && [ "$size" -le 16777216 ] || qt_fail "/tmp took $size bytes under memory-max 32M"
qt_out | grep -q limit-hit && qt_fail "a full /tmp was reported as a limit hit"
[ -d $cg ] && qt_fail "$cg left behind"
qt_ok "/tmp full at $size bytes (ENOSPC), cgroup removed"

# 2. oom_score_adj: launcher and init -1000, app 0 and not lowerable;
#    `appmgr kill` leaves the launcher alive to report and clean up.
appmgr run org.qt.Oom -- sh -c 'echo adj=$(cat /proc/self/oom_score_adj); if (echo -1000 >/proc/self/oom_score_adj) 2>/dev/null; then echo lowered; fi; echo started; exec sleep 60' >/tmp/adj.out 2>&1 &
launcher=$!
wait_for 20 grep -q started /tmp/adj.out || qt_fail "the app did not start: $(cat /tmp/adj.out)"
sed 's/^/  | /' /tmp/adj.out
grep -qx 'adj=0' /tmp/adj.out || qt_fail "the app's oom_score_adj is not 0"
grep -q lowered /tmp/adj.out && qt_fail "the app lowered its own oom_score_adj"
[ "$(cat /proc/$launcher/oom_score_adj)" = -1000 ] || qt_fail "launcher oom_score_adj $(cat /proc/$launcher/oom_score_adj)"
grep -qx "$launcher" $cg/cgroup.procs && qt_fail "the launcher is in the app's cgroup"
# init lives beside the launcher in launch-ID.scope, never in the app's cgroup.
helper=/sys/fs/cgroup/appmgr.slice/launch-org.qt.Oom.scope
init=
for p in $(cat $helper/cgroup.procs); do
	[ "$(ppid_of "$p")" = "$launcher" ] && init=$p
done
[ -n "$init" ] || qt_fail "no init (child of the launcher) in $helper"
grep -qx "$init" $cg/cgroup.procs && qt_fail "init is in the app's cgroup"
[ "$(cat /proc/$init/oom_score_adj)" = -1000 ] || qt_fail "init oom_score_adj $(cat /proc/$init/oom_score_adj)"
qt_ok "launcher $launcher and init $init at -1000, app at 0 and refused -1000"
qt_run 0 appmgr kill org.qt.Oom
wait $launcher
rc=$?
[ $rc = 137 ] || qt_fail "appmgr run exited $rc after appmgr kill (expected 137 from the launcher)"
[ -d $cg ] && qt_fail "$cg left behind after appmgr kill"
qt_ok "appmgr kill: the launcher reported 137 and removed the cgroup"

# 3. 24M of tmpfs pages (nobody's RSS) and a 64M allocation: the app is killed.
appmgr run org.qt.Oom -- sh -c 'dd if=/dev/zero of=/tmp/f bs=1M count=64 2>/dev/null; dd if=/dev/zero of=/dev/shm/f bs=1M count=64 2>/dev/null; exec dd if=/dev/zero of=/dev/null bs=64M count=1' >/tmp/oom.out 2>&1
rc=$?
sed 's/^/  | /' /tmp/oom.out
[ $rc = 137 ] || qt_fail "expected the app to be OOM-killed (137), got $rc"
grep -q 'limit-hit memory-max' /tmp/oom.out || qt_fail "the OOM kill was not reported"
[ -d $cg ] && qt_fail "$cg left behind after the OOM kill"
grep -q 'MemTotal' /proc/meminfo || qt_fail "the guest itself died"
qt_ok "tmpfs + allocation: the app was OOM-killed, reported, cgroup removed"

# 4. A launcher stopped while its app is OOM-killed (memory.oom.group kills the
#    whole app, init survives at -1000 and ends), then killed: its cgroup stays
#    behind with the oom_kill count, and the next run must not report it.
appmgr run org.qt.Oom -- sh -c 'echo started; sleep 2; exec dd if=/dev/zero of=/dev/null bs=64M count=1' >/tmp/stale.out 2>&1 &
launcher=$!
wait_for 20 grep -q started /tmp/stale.out || qt_fail "the app did not start: $(cat /tmp/stale.out)"
kill -STOP $launcher
wait_for 30 grep -q '^oom_kill [1-9]' $cg/memory.events || qt_fail "no OOM kill in $cg/memory.events"
wait_for 10 sh -c "[ -z \"\$(cat $cg/cgroup.procs)\" ]" || qt_fail "the OOM-killed sandbox did not end"
kill -9 $launcher
wait $launcher
[ -d $cg ] || qt_fail "precondition: the killed launcher's cgroup is gone"
qt_run 0 appmgr run org.qt.Oom -- true
qt_out | grep -q limit-hit && qt_fail "a stale limit event was reported"
[ -d $cg ] && qt_fail "$cg left behind"
qt_ok "a leftover cgroup's oom_kill count was not reported again"
qt_run 0 appmgr fsck
