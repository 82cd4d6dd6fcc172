#!/bin/sh
# arch: x86_64
# guest: debootstrap
# needs: appmgr
# timeout: 480
# The GPU portal end to end on real parts: appmgr, appmgrd and appmgr-portald
# installed as the Yocto recipe installs them, under systemd and the system
# dbus-daemon, with a real DRM render node (vgem). Proves: appmgrd's Wants=
# starts appmgr-portald, which runs with its unit's hardening (CapBnd only
# CAP_KILL, NoNewPrivs, seccomp); an app granted `portals = ["gpu"]` gets, over
# the bus, a descriptor of the board profile's render node (DRM_IOCTL_VERSION
# on it says vgem, char 226:>=128) while it still cannot open /dev/dri/* by
# path; an app whose policy does not grant gpu, root outside any app and uid
# 65534 are refused with org.appmgr.Error.AccessDenied; grants and denials are
# journal events with their MESSAGE_IDs; revoking the grant (`appmgr reload`)
# stops an app that holds the node.
. /qt/lib.sh
qt_need_appmgr appmgr-launch appmgrd appmgr-portald appmgr-probe

G=org.qt.GpuApp
N=org.qt.NoGpu
DENIED=$QT_PORTAL_DENIED
ID_GRANTED=$QT_PORTAL_ID_GRANTED
ID_DENIED=$QT_PORTAL_ID_DENIED
ID_REVOKED=$QT_PORTAL_ID_REVOKED
fail() { qt_portal_fail "$@"; }
# probe ID OUT ARGS...: appmgr-probe ARGS in ID's sandbox; its JSON in OUT
probe() { qt_portal_probe "$@"; }
j() { qt_json_get "$@"; }
# granted_items: the "permissions:" section of the last qt_run's `appmgr permissions`
granted_items() { qt_out | sed -n '/^permissions:/,/^[a-z]/p' | grep '^  '; }
# journaled EVENT_ID [FIELD=VALUE...]: the portal logged that event (bounded wait:
# journald receives the datagrams asynchronously)
journaled() {
	_id=$1
	shift
	qt_wait 5 sh -c "journalctl -t appmgr-portald MESSAGE_ID=$_id $* --no-pager -o cat | grep -q ."
}
show() { systemctl show -p "$2" --value "$1"; }

state=$(timeout 120 systemctl is-system-running --wait 2>&1)
case $state in running|degraded) ;; *) qt_fail "systemd state: $state" ;; esac

# ---- install as appmgr_git.bb do_install does; the portal unit verifies
qt_install_package
# a scenario after this one in the same boot must not find them running
trap 'systemctl stop appmgrd appmgr-portald' EXIT
qt_run 0 systemd-analyze verify /usr/lib/systemd/system/appmgr-portald.service
qt_out | grep -v 'qt-runner\|^ *$' | grep -q . && fail "systemd-analyze verify complains about appmgr-portald.service"
[ -L /etc/systemd/system/dbus-org.appmgr.Portal1.service ] || fail "enable did not create the dbus-org.appmgr.Portal1.service alias"
[ "$(show appmgr-portald ActiveState)" = inactive ] || fail "appmgr-portald is $(show appmgr-portald ActiveState) before appmgrd starts"
qt_ok "installed like the package; appmgr-portald.service verifies; enabled with its D-Bus alias; not running yet"

# ---- a real render node: vgem
qt_run 0 modprobe vgem
RN=
for d in /sys/class/drm/renderD*; do
	# vgem registers a platform device named vgem (and no platform driver)
	[ "$(basename "$(readlink -f "$d/device" 2>/dev/null)")" = vgem ] && RN=/dev/dri/${d##*/}
done
ls -l /dev/dri
[ -n "$RN" ] || fail "modprobe vgem made no render node ($(ls /sys/class/drm | tr '\n' ' '))"
qt_wait 10 test -c "$RN" || fail "$RN is not a character device"
MAJ=$(printf %d "0x$(stat -c %t "$RN")") MIN=$(printf %d "0x$(stat -c %T "$RN")")
[ "$MAJ" = 226 ] && [ "$MIN" -ge 128 ] || fail "$RN is $MAJ:$MIN"
qt_ok "vgem render node $RN ($MAJ:$MIN)"

# ---- the board profile names it
printf 'board = "qemu-virt-x86_64"\n' >/etc/appmgr/appmgr.toml
qt_run 0 appmgr board show
qt_run 0 appmgr --json board show
[ "$(j gpu.present)" = "$RN" ] || fail "appmgr board show: the gpu portal's node is '$(j gpu.present)', not $RN"
qt_ok "appmgr board show: gpu portal render node $RN"

# ---- appmgrd pulls in appmgr-portald (Wants=); the portal's hardening is in effect
systemctl start appmgrd || fail "systemctl start appmgrd failed"
portald_up() { [ "$(show appmgr-portald ActiveState)" = active ]; }
qt_wait 30 portald_up || fail "appmgr-portald is $(show appmgr-portald ActiveState) after systemctl start appmgrd"
qt_run 0 systemctl show -p ActiveState,SubState,StatusText,MainPID,TriggeredBy appmgr-portald
[ "$(show appmgr-portald StatusText)" = "serving org.appmgr.Portal1" ] || fail "appmgr-portald's STATUS is '$(show appmgr-portald StatusText)'"
show appmgrd Wants | grep -qw appmgr-portald.service || fail "appmgrd does not want appmgr-portald.service: $(show appmgrd Wants)"
pp=$(show appmgr-portald MainPID)
[ "$(cat /proc/$pp/comm)" = appmgr-portald ] || fail "MainPID $pp is $(cat /proc/$pp/comm)"
grep -E '^(Uid|Cap|NoNewPrivs|Seccomp)' /proc/$pp/status | sed 's/^/  | /'
st=/proc/$pp/status
# CAP_KILL is bit 5
grep -q '^CapBnd:	0000000000000020$' $st || fail "appmgr-portald's bounding set is not CAP_KILL alone: $(grep CapBnd $st)"
grep -q '^CapEff:	0000000000000020$' $st || fail "appmgr-portald's effective set is not CAP_KILL alone: $(grep CapEff $st)"
grep -q '^NoNewPrivs:	1$' $st || fail "NoNewPrivileges=yes is not in effect"
grep -q '^Seccomp:	2$' $st || fail "SystemCallFilter is not in effect"
qt_ok "appmgr-portald started with appmgrd (Wants=): pid $pp, CapBnd CAP_KILL only, NoNewPrivs 1, Seccomp 2"

# ---- apps: G requests and is granted gpu; N requests gpu and sensors, the
# policy grants it sensors only (on-excess = "drop")
qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/rt.bundle
QT_MANIFEST_EXTRA='[permissions]
portals = ["gpu"]' qt_bundle app $G 1.0.0 /tmp/g.bundle
QT_MANIFEST_EXTRA='[permissions]
portals = ["gpu", "sensors"]
[permissions.sensors]
channels = ["accel_x"]
max-rate-hz = 10' qt_bundle app $N 1.0.0 /tmp/n.bundle
qt_policy 50-portal "[[rule]]
apps = [\"$G\"]
grant = { portals = [\"gpu\"] }
[[rule]]
apps = [\"$N\"]
grant = { portals = [\"sensors\"], sensors = { channels = [\"accel_x\"], max-rate-hz = 10 } }
on-excess = \"drop\""
qt_run 0 appmgr install /tmp/rt.bundle
qt_run 0 appmgr install /tmp/g.bundle
qt_run 0 appmgr install /tmp/n.bundle
qt_app_users $G $N
qt_run 0 appmgr permissions $G
granted_items | grep -q '^  portals gpu ' || fail "appmgr permissions $G does not list portals gpu"
granted_items | grep '^  portals gpu ' | grep -q 'not provided' && fail "appmgr permissions $G: portals gpu is not provided"
qt_run 0 appmgr permissions $N
granted_items | grep -q '^  portals gpu' && fail "appmgr permissions $N grants portals gpu"
granted_items | grep -q '^  portals sensors ' || fail "appmgr permissions $N does not list portals sensors"
qt_ok "$G: portals gpu provided; $N: sensors only"

# ---- G gets the render node over the bus, and still no /dev/dri path
probe $G /tmp/g.json portal gpu
[ "$(j open.ok /tmp/g.json)" = true ] || fail "$G's OpenRenderNode failed: $(j open.error /tmp/g.json) $(j open.message /tmp/g.json)"
[ "$(j open.driver /tmp/g.json)" = vgem ] || fail "the portal named driver '$(j open.driver /tmp/g.json)', not vgem"
[ "$(j open.ioctl_driver /tmp/g.json)" = vgem ] || fail "DRM_IOCTL_VERSION on the handed fd says '$(j open.ioctl_driver /tmp/g.json)', not vgem"
[ "$(j open.type /tmp/g.json)" = char ] || fail "the handed fd is a '$(j open.type /tmp/g.json)', not a character device"
[ "$(j open.rdev.0 /tmp/g.json)" = 226 ] && [ "$(j open.rdev.1 /tmp/g.json)" = "$MIN" ] ||
	fail "the handed fd is $(j open.rdev.0 /tmp/g.json):$(j open.rdev.1 /tmp/g.json), not the render node $MAJ:$MIN"
[ "$(j info.driver /tmp/g.json)" = vgem ] && [ "$(j info.render-node /tmp/g.json)" = "$RN" ] &&
	[ "$(j info.family /tmp/g.json)" = virtio ] || fail "Info is not {driver vgem, render-node $RN, family virtio}"
np=$(j by_path.# /tmp/g.json) || fail "no by_path in the probe's report"
[ "$np" -ge 1 ] || fail "the probe tried no /dev/dri path"
i=0
while [ $i -lt "$np" ]; do
	p=$(j by_path.$i.path /tmp/g.json)
	[ "$(j by_path.$i.ok /tmp/g.json)" = false ] || fail "$G opened $p by path"
	case $(j by_path.$i.errno /tmp/g.json) in 1|2|13) ;; *) fail "opening $p by path failed with errno $(j by_path.$i.errno /tmp/g.json), expected ENOENT/EACCES/EPERM" ;; esac
	i=$((i + 1))
done
qt_ok "$G: fd of $RN over the bus (driver vgem by the portal and by DRM_IOCTL_VERSION, 226:$MIN); $np /dev/dri paths refused in its sandbox"
journaled $ID_GRANTED APPMGR_APP=$G || fail "no portal-granted ($ID_GRANTED) journal entry for $G"
journalctl -t appmgr-portald MESSAGE_ID=$ID_GRANTED APPMGR_APP=$G --no-pager -o cat | grep -q "$RN" ||
	fail "the portal-granted entry does not name $RN"
qt_ok "journal: portal-granted ($ID_GRANTED) for $G naming $RN"

# ---- N, root and uid 65534 are refused
probe $N /tmp/n.json portal gpu
[ "$(j open.ok /tmp/n.json)" = false ] && [ "$(j open.error /tmp/n.json)" = $DENIED ] ||
	fail "$N's OpenRenderNode was not refused with $DENIED"
[ "$(j info.error /tmp/n.json)" = $DENIED ] || fail "$N's Gpu1.Info was not refused with $DENIED"
journaled $ID_DENIED APPMGR_APP=$N || fail "no portal-denied ($ID_DENIED) journal entry for $N"
qt_ok "$N (gpu requested, not granted): $DENIED, journaled ($ID_DENIED)"
send_gpu() { dbus-send --system --print-reply --reply-timeout=10000 --dest=org.appmgr.Portal1 /org/appmgr/portal org.appmgr.portal.Gpu1.OpenRenderNode; }
qt_run 1 send_gpu
qt_out | grep -q "^Error $DENIED" || fail "root's OpenRenderNode was not refused with $DENIED"
qt_out | grep -q "no app's cgroup" || fail "root's refusal does not say it is in no app's cgroup"
qt_run 1 setpriv --reuid=65534 --regid=65534 --clear-groups dbus-send --system --print-reply --reply-timeout=10000 \
	--dest=org.appmgr.Portal1 /org/appmgr/portal org.appmgr.portal.Gpu1.OpenRenderNode
qt_out | grep -q "^Error $DENIED" || fail "uid 65534's OpenRenderNode was not refused with $DENIED"
qt_wait 5 sh -c "journalctl -t appmgr-portald MESSAGE_ID=$ID_DENIED --no-pager -o cat | grep -q \"no app's cgroup\"" ||
	fail "no portal-denied journal entry for the caller outside any app"
qt_ok "root and uid 65534 outside any app: $DENIED, journaled"

# ---- revocation: a process of G that got the node keeps running; the policy
# stops granting gpu, `appmgr reload`: the portal stops G (an open descriptor
# cannot be taken back). The probe is kept alive after its call by a full
# stdout pipe: 64 KiB are written into it first and its reader only sleeps, so
# the probe blocks printing its report with the portal's handout to its pid open.
g_pids() { grep -l "app-$G.scope" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3; }
granted_n() { journalctl -t appmgr-portald MESSAGE_ID=$ID_GRANTED APPMGR_APP=$G --no-pager -o cat | grep -c .; }
n0=$(granted_n)
appmgr run $G -- /usr/bin/sh -c '{ yes | head -c 65536; exec /app/bin/appmgr-probe portal gpu; } | sleep 120' \
	>/tmp/hold.out 2>&1 &
hold=$!
holding() { [ "$(granted_n)" -gt "$n0" ]; }
qt_wait 30 holding || { kill $hold; fail "the holding probe did not get the node: $(cat /tmp/hold.out)"; }
pids=$(g_pids | tr '\n' ' ')
[ -n "$pids" ] || fail "$G is not running"
grep -l appmgr-probe $(for p in $pids; do echo /proc/$p/comm; done) >/dev/null 2>&1 || fail "the probe of $G is not running (pids $pids)"
echo "  $G runs pids $pids, its probe holds the node"
qt_policy 50-portal "[[rule]]
apps = [\"$N\"]
grant = { portals = [\"sensors\"], sensors = { channels = [\"accel_x\"], max-rate-hz = 10 } }
on-excess = \"drop\"
[[rule]]
apps = [\"$G\"]
on-excess = \"drop\""
qt_run 0 appmgr reload
t0=$(cut -d' ' -f1 /proc/uptime)
i=0
while [ -n "$(g_pids)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
t1=$(cut -d' ' -f1 /proc/uptime)
[ -z "$(g_pids)" ] || { kill $hold; fail "$G (pids $(g_pids | tr '\n' ' ')) still runs 5 s after appmgr reload revoked its gpu grant"; }
wait $hold
echo "  appmgr run $G: exit $? ($(head -c 200 /tmp/hold.out | tr '\n' ' '))"
dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
awk -v d="$dt" 'BEGIN { exit !(d <= 1.0) }' || fail "$G was stopped ${dt} s after appmgr reload returned, not within 1 s"
journaled $ID_REVOKED APPMGR_APP=$G || fail "no portal-revoked ($ID_REVOKED) journal entry for $G"
journalctl -t appmgr-portald MESSAGE_ID=$ID_REVOKED APPMGR_APP=$G --no-pager -o cat | sed 's/^/  | /'
qt_run 0 appmgr permissions $G
granted_items | grep -q '^  portals gpu' && fail "appmgr permissions $G still lists portals gpu"
# with no bus grant left, G's sandbox has no bus socket at all; were it still
# there, the portal would refuse
qt_run 1 appmgr run $G -- /app/bin/appmgr-probe portal gpu
qt_out | grep -q 'bus at /run/dbus/system_bus_socket: No such file' ||
	fail "$G still reaches the bus after its only bus grant (gpu) was revoked"
qt_ok "revoked: $G (holding $RN) stopped ${dt} s after appmgr reload returned; journaled ($ID_REVOKED); no bus in its sandbox afterwards"

qt_run 0 systemctl stop appmgrd appmgr-portald
