#!/bin/sh
# arch: x86_64
# guest: debootstrap
# needs: appmgr appmgr-probe
# timeout: 300
# Per-app networks on the guest's own kernel (cgroup v2, systemd, Debian's nftables):
# an app granted an egress allowlist runs in its own network namespace behind a veth
# pair and NAT. From inside (the static probe): the allowed destination in a "remote"
# network namespace answers, by address and by a name appmgr resolved from the host's
# /etc/hosts; an unlisted port, the host's own address and the host's loopback and
# abstract sockets do not. The refused attempt is in the kernel's journal, and
# nothing of the network (namespace, veth, nft rules) is left after the app ends,
# nor after its launcher is SIGKILLed and the app runs again.
. /qt/lib.sh
qt_need_appmgr appmgr-launch appmgr-probe
command -v nft >/dev/null || qt_fail "nft is not in the guest image (ROOTFS_PKGS)"
export APPMGR_STATE_DIR=/var/lib/appmgr-net APPMGR_CONFIG_DIR=/etc/appmgr-net
mkdir -p $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR
probe=$(command -v appmgr-probe)

# ---- the remote end: its own namespace and veth, routed through the guest
ip netns add qt-remote
ip link add qt-r0 type veth peer name eth0 netns qt-remote
ip addr add 10.236.1.1/30 dev qt-r0
ip link set qt-r0 up
ip -n qt-remote link set lo up
ip -n qt-remote link set eth0 up
ip -n qt-remote addr add 10.236.1.2/30 dev eth0
ip -n qt-remote route add default via 10.236.1.1
# qt-r0 is left as the guest made it (not forwarding), like an uplink: appmgr makes the
# replies to its apps come back through it.
fwd_before=$(cat /proc/sys/net/ipv4/ip_forward)
echo "10.236.1.2 remote.qt" >>/etc/hosts
# serve PORT: one connection answered "hello" by the probe inside the remote namespace
serve() { ip netns exec qt-remote "$probe" net "listen:$1" >/tmp/qt-serve-$1 2>&1 & }
# wait_listening PORT
wait_listening() {
	n=50
	until grep -q listening /tmp/qt-serve-$1 2>/dev/null; do
		n=$((n - 1))
		[ $n -gt 0 ] || qt_fail "the remote server on $1 did not start"
		sleep 0.1
	done
}
qt_ok "remote namespace 10.236.1.2 (remote.qt) routed through the guest"

qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/runtime.bundle
QT_MANIFEST_EXTRA='[permissions]
network = { egress = ["10.236.1.2:7001", "remote.qt:7002"] }' \
	qt_bundle app org.qt.Net 1.0.0 /tmp/net.bundle
qt_policy 10-net '[[rule]]
apps = ["org.qt.Net"]
grant = { network = { egress = ["10.236.1.0/24:7001", "remote.qt:7002"] } }'
qt_run 0 appmgr install /tmp/runtime.bundle
qt_run 0 appmgr install /tmp/net.bundle

# ---- shown: every entry provided
qt_run 0 appmgr permissions org.qt.Net --json
for v in 10.236.1.2:7001/tcp remote.qt:7002/tcp; do
	qt_out | tr -d ' \n' | tr '{}' '\n\n' | grep '"network.egress"' | grep "\"$v\"" | grep -q '"provided"' ||
		qt_fail "permissions does not show network.egress $v provided"
done
qt_ok "permissions shows both egress entries provided"

# ---- enforced: from inside
gw=$(appmgr run org.qt.Net --print-plan 2>/dev/null | sed -n 's/.*"host-addr": *"\([0-9.]*\)".*/\1/p' | head -n 1)
[ -n "$gw" ] || qt_fail "no host-addr in the launch plan"
# Listeners (each takes one connection within 60 s): the remote's, and host services the
# app must not reach, a TCP port on every host address and an abstract socket.
serve 7001
serve 7002
"$probe" net listen:7009 >/tmp/qt-host-7009 2>&1 &
hostsrv=$!
"$probe" net abstract-listen:qt-host-abstract >/tmp/qt-host-abstract 2>&1 &
hostabs=$!
wait_listening 7001
wait_listening 7002
n=50
until grep -q listening /tmp/qt-host-7009 && grep -q listening /tmp/qt-host-abstract; do
	n=$((n - 1))
	[ $n -gt 0 ] || qt_fail "the host's listeners did not start"
	sleep 0.1
done
qt_run 0 appmgr run org.qt.Net -- /app/bin/appmgr-probe net \
	tcp:10.236.1.2:7001 tcp:remote.qt:7002 tcp:10.236.1.2:7003 "tcp:$gw:7009" \
	tcp:127.0.0.1:7009 "abstract:qt-host-abstract" links
r=$(qt_out | grep '^{')
check() { # TARGET EXPECTED
	echo "$r" | grep -q "\"$1\":\"$2\"" || qt_fail "$1: expected $2 in $r"
}
check tcp:10.236.1.2:7001 "ok hello"
check tcp:remote.qt:7002 "ok hello"
check tcp:10.236.1.2:7003 EHOSTUNREACH
check "tcp:$gw:7009" EHOSTUNREACH
check tcp:127.0.0.1:7009 ECONNREFUSED
check abstract:qt-host-abstract ECONNREFUSED
check links "eth0 lo"
# The host's listeners were there all along (still waiting: nothing reached them).
kill -0 $hostsrv 2>/dev/null && kill -0 $hostabs 2>/dev/null ||
	qt_fail "a host listener ended before the checks: $(cat /tmp/qt-host-7009 /tmp/qt-host-abstract)"
qt_ok "allowed destinations answer (by address and by name); unlisted port, host address, host loopback refused"
grep -q "accepted 10.236.1.1" /tmp/qt-serve-7001 || qt_fail "the remote did not see the guest's address (NAT): $(cat /tmp/qt-serve-7001)"
qt_ok "the remote saw the guest's address (NAT)"
[ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || qt_fail "ip_forward is not on after an app network"
if [ "$fwd_before" = 0 ]; then
	nft list table inet appmgr-forward-guard >/dev/null || qt_fail "forwarding turned on without the guard table"
	qt_ok "forwarding turned on for apps only (guard table loaded first)"
fi

# the refused attempts are in the kernel's journal, tagged with the app
n=20
until journalctl -k --no-pager 2>/dev/null | grep -q "appmgr drop org.qt.Net"; do
	n=$((n - 1))
	[ $n -gt 0 ] || qt_fail "no 'appmgr drop org.qt.Net' line in the kernel journal"
	sleep 0.2
done
qt_ok "refused connection attempts are logged (kernel journal)"

# ---- nothing is left after the app
# the app's rules: its chains (aUID_*) and map elements (am-UID) in the shared table
# inet appmgr; tables of their own (appmgr-UID) are what older versions made
leftovers() {
	ip netns list | grep "appmgr-[0-9]"
	ip -o link | grep ' am-'
	nft list tables | grep "appmgr-[0-9]"
	nft list table inet appmgr 2>/dev/null | grep -E 'chain a[0-9]+_|"am-[0-9]+"'
}
# gone WHEN: nothing left within 5 s (the kernel destroys a removed namespace's pair in
# the background)
gone() {
	n=50
	while [ -n "$(leftovers)" ]; do
		n=$((n - 1))
		[ $n -gt 0 ] || qt_fail "left $1: $(leftovers)"
		sleep 0.1
	done
}
gone "after the app ended"
qt_ok "namespace, veth pair and nft rules removed after the app"

# ---- SIGKILL of the launcher: the network stays stale until the next launch
appmgr run org.qt.Net -- /app/bin/appmgr-probe sleep >/tmp/qt-sleep 2>&1 &
n=50
until grep -q ready /tmp/qt-sleep; do
	n=$((n - 1))
	[ $n -gt 0 ] || qt_fail "the sleeping app did not start: $(cat /tmp/qt-sleep)"
	sleep 0.1
done
[ -n "$(leftovers)" ] || qt_fail "no network while the app runs"
pkill -KILL -x appmgr-launch || qt_fail "no appmgr-launch to kill"
sleep 1
pgrep -f 'appmgr-probe sleep' && qt_fail "the app survived its launcher"
[ -n "$(leftovers)" ] || qt_fail "expected a stale network after SIGKILL"
serve 7001
wait_listening 7001
qt_run 0 appmgr run org.qt.Net -- /app/bin/appmgr-probe net tcp:10.236.1.2:7001
qt_out | grep -q '"tcp:10.236.1.2:7001":"ok hello"' || qt_fail "the next launch has no working network"
gone "after the next launch ended"
qt_ok "a stale network (SIGKILLed launcher) is replaced by the next launch and removed after it"

kill $hostsrv $hostabs 2>/dev/null
ip netns del qt-remote
exit 0
