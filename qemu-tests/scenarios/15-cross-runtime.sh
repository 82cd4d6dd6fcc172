#!/bin/sh
# arch: aarch64 x86_64
# needs: appmgr xruntime
# timeout: 300
# A runtime bundle made on the x86_64 host for this arch (issue 10 item 13):
# busybox-static with applet symlinks plus the GNU C library and its loader,
# about 2 MB, signed by the host's appmgr (lib/xruntime.sh), installed with the
# state dir on tmpfs. The install must take about as long as verifying the same
# file (both read and hash the whole payload): it must end within
# max(30 s, 10 x verify) or the scenario fails with each thread's state. The
# measured times are printed ("measured: ..."). Then an app on that runtime
# runs the runtime's own glibc (libc.so.6 executed through its loader).
. /qt/lib.sh
qt_need_appmgr appmgr-ops appmgr-launch
status=$(cat /qt/xruntime/STATUS 2>/dev/null)
case $status in
ok*) echo "host-made runtime: $status" ;;
*) qt_fail "no host-made runtime bundle: ${status:-/qt/xruntime/STATUS is missing}" ;;
esac
B=/qt/xruntime/runtime.bundle
export APPMGR_STATE_DIR=/var/lib/appmgr APPMGR_CONFIG_DIR=/etc/appmgr
mkdir -p $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR
fs=$(stat -f -c %T $APPMGR_STATE_DIR)
[ "$fs" = tmpfs ] || qt_fail "the state dir is on '$fs', this scenario is about tmpfs"

# uptime in centiseconds
now_cs() {
	read -r u _ </proc/uptime
	echo "${u%.*}${u#*.}"
}
secs() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }

qt_run 0 appmgr trust add /qt/xruntime/signer.pub
t0=$(now_cs)
qt_run 0 appmgr bundle verify $B
verify=$(($(now_cs) - t0))
limit=$((verify * 10))
[ $limit -ge 3000 ] || limit=3000

# The install in the background, polled, so a spin is seen and described
# instead of running into the scenario's timeout.
echo "+ appmgr install $B (limit $(secs $limit)s)"
t0=$(now_cs)
appmgr install $B >/tmp/xr-install.out 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null && [ $(($(now_cs) - t0)) -lt $limit ]; do sleep 0.1; done
if kill -0 $pid 2>/dev/null; then
	echo "install still running after $(secs $(($(now_cs) - t0)))s; its threads:"
	# appmgr execs appmgr-ops in place: $pid is the installing process
	echo "  pid $pid: $(tr '\0' ' ' </proc/$pid/cmdline)"
	for t in "/proc/$pid/task/"*; do
		# name, state, utime and stime in clock ticks; the syscall it is in, or "running"
		echo "    tid ${t##*/}: $(cut -d' ' -f2,3,14,15 "$t/stat") syscall: $(cat "$t/syscall" 2>/dev/null)"
	done
	kill -KILL $pid 2>/dev/null
	wait $pid
	sed 's/^/  | /' /tmp/xr-install.out
	qt_fail "installing the host-made runtime took more than $(secs $limit)s (verify of the same file: $(secs $verify)s)"
fi
wait $pid
rc=$?
install=$(($(now_cs) - t0))
sed 's/^/  | /' /tmp/xr-install.out
[ $rc = 0 ] || qt_fail "exit $rc, expected 0: appmgr install $B"
echo "measured: $QT_ARCH bundle $(stat -c %s $B) bytes: verify $(secs $verify)s, install $(secs $install)s"

qt_run 0 appmgr --json info org.qt.XRuntime
[ "$(qt_json_field arch)" = "$QT_ARCH" ] || qt_fail "info: arch is '$(qt_json_field arch)'"
[ "$(qt_json_field kind)" = runtime ] || qt_fail "info: kind is '$(qt_json_field kind)'"

# An app on it: the runtime's glibc runs in the sandbox (libc.so.6 is executable;
# the kernel loads it through the runtime's loader at /lib/ld-linux-*).
qt_setup_keys /tmp/qt-keys
qt_bundle app org.qt.XApp 1.0.0 /tmp/xapp.bundle org.qt.XRuntime
qt_run 0 appmgr install /tmp/xapp.bundle
qt_run 0 appmgr run org.qt.XApp -- "/usr/lib/$QT_ARCH-linux-gnu/libc.so.6"
qt_out | grep -q '^GNU C Library' || qt_fail "the runtime's libc.so.6 did not run in the sandbox"
qt_run 0 appmgr run org.qt.XApp -- sh -c 'ls /usr/bin/ | wc -l'
qt_run 0 appmgr fsck
