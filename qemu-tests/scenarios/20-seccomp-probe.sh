#!/bin/sh
# arch: aarch64 x86_64
# needs: appmgr appmgr-probe
# timeout: 300
# The probe's seccomp results on this arch, from inside the sandbox; and the
# 32-bit compat ABI (AArch32 on aarch64, i386 on x86_64) is blocked there
# (00-boot shows the same binary runs outside).
# appmgr-probe (report mode) prints one JSON object; its "syscalls" map gives
# the errno of each call made with side-effect-free arguments: blocked calls
# must show EPERM/ENOSYS/EAFNOSUPPORT (EACCES for the uevent socket), the allowed controls (plain variants,
# UNIX/INET/INET6/NETLINK sockets, FIONREAD, PER_LINUX) anything else.
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
qt_out | grep '^{' >/tmp/report.json || qt_fail "the probe printed no JSON report"
sys=$(sed -n 's/.*"syscalls":{\([^}]*\)}.*/\1/p' /tmp/report.json | tr ',' '\n' | tr -d '"')
[ -n "$sys" ] || qt_fail "no syscalls map in the probe's report"
# kernel_at_least MAJOR MINOR: the running kernel is MAJOR.MINOR or newer
kernel_at_least() {
	r=$(uname -r)
	maj=${r%%.*} rest=${r#*.}
	min=${rest%%[!0-9]*}
	[ "$maj" -gt "$1" ] || { [ "$maj" -eq "$1" ] && [ "$min" -ge "$2" ]; }
}
bad=0 nblocked=0 nallowed=0
for kv in $sys; do
	k=${kv%%:*} v=${kv#*:}
	case $k in
	*_plain|ioctl_fionread|personality_linux|socket_unix|socket_inet|socket_inet6|socket_netlink) want=allowed ;;
	*) want=blocked ;;
	esac
	case $v in EPERM|ENOSYS|EAFNOSUPPORT) got=blocked ;; *) got=allowed ;; esac
	# the uevent socket's refusal is EACCES (docs/sandbox.md "Kernel uevents");
	# the unfiltered call's answer is EINVAL, so EACCES can only be the filter
	if [ "$k" = socket_netlink_uevent ] && [ "$v" = EACCES ]; then got=blocked; fi
	# fchmodat2 came with Linux 6.6: on an older guest kernel ENOSYS is the
	# kernel's own answer to the allowed call (the filter's refusal is EPERM)
	if [ "$k" = fchmodat2_plain ] && [ "$v" = ENOSYS ] && ! kernel_at_least 6 6; then got=allowed; fi
	printf '  %-26s %-13s %s\n' "$k" "$v" "$([ $want = $got ] && echo ok || echo "WRONG: should be $want")"
	[ $want = $got ] || bad=$((bad + 1))
	[ $got = blocked ] && nblocked=$((nblocked + 1)) || nallowed=$((nallowed + 1))
done
[ $bad = 0 ] || qt_fail "$bad syscall results wrong on $QT_ARCH (see above)"
for kv in '"NoNewPrivs":"1"' '"Seccomp":"2"' '"CapEff":"0000000000000000"'; do
	grep -q "$kv" /tmp/report.json || qt_fail "probe status lacks $kv"
done
grep -q '"interfaces":\["lo"\]' /tmp/report.json || qt_fail "network interfaces other than lo are visible"
qt_ok "probe on $QT_ARCH: $nblocked calls blocked, $nallowed controls allowed, NoNewPrivs 1, Seccomp 2, no caps, lo only"

# 32-bit code: either the exec fails or the process dies before printing.
appmgr run org.qt.Probe -- /app/bin/busybox32 echo compat-ran >/tmp/compat.out 2>&1
rc=$?
sed 's/^/  | /' /tmp/compat.out
grep -q '^compat-ran$' /tmp/compat.out && qt_fail "a 32-bit ($([ "$QT_ARCH" = aarch64 ] && echo AArch32 || echo i386)) binary ran inside the sandbox"
[ $rc != 0 ] || qt_fail "running a 32-bit binary in the sandbox exited 0"
qt_ok "32-bit compat syscalls blocked in the sandbox (exit $rc)"
if [ "$QT_ARCH" = x86_64 ]; then
	# the probe's own i386 (int 0x80) and x32 getpid: killed by SIGSYS (exit 159)
	for mode in int80 x32; do
		appmgr run org.qt.Probe -- /app/bin/appmgr-probe $mode >/tmp/m.out 2>&1
		rc=$?
		sed 's/^/  | /' /tmp/m.out
		[ $rc = 159 ] || qt_fail "probe $mode exited $rc, expected 159 (SIGSYS)"
	done
	qt_ok "i386 int 0x80 and x32 syscalls killed by SIGSYS"
fi
