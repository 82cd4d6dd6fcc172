#!/bin/sh
# arch: aarch64 x86_64
# needs: appmgr
# powercut: install update rollback remove
# timeout: 240
# Forced reset without sync during appmgr install, update, rollback and
# remove: after reboot the state is exactly the old or the new one, appmgr
# fsck is clean, and whatever version is installed runs. (lib/powercut.sh
# drives this script: setup / prepare / op / check OP.)
. /qt/lib.sh
phase=$1 op=$2
F=/state/fixtures
ID=org.qt.Cut

case $phase in
setup)
	qt_need_appmgr appmgr-launch
	mkdir -p $F
	QT_KEY=$F/test.key
	qt_setup_keys $F
	qt_bundle runtime org.qt.Runtime 1.0.0 $F/runtime.bundle
	qt_bundle app $ID 1.0.0 $F/app-1.bundle
	qt_bundle app $ID 2.0.0 $F/app-2.bundle
	qt_run 0 appmgr install $F/runtime.bundle
	case $op in
	install) ;;
	update|remove) qt_run 0 appmgr install $F/app-1.bundle ;;
	rollback) qt_run 0 appmgr install $F/app-1.bundle; qt_run 0 appmgr install $F/app-2.bundle ;;
	esac
	sync
	echo "setup $op: $ID is $(qt_version_of $ID)"
	;;
prepare)
	qt_need_appmgr
	;;
op)
	case $op in
	install) exec appmgr install $F/app-1.bundle ;;
	update) exec appmgr install $F/app-2.bundle ;;
	rollback) exec appmgr rollback $ID ;;
	remove) exec appmgr remove $ID ;;
	esac
	;;
check)
	qt_need_appmgr
	v=$(qt_version_of $ID) || qt_fail "appmgr info failed after the cut"
	case $op:$v in
	install:absent|update:1.0.0|rollback:2.0.0|remove:1.0.0) echo "@@STATE old" ;;
	install:1.0.0|update:2.0.0|rollback:1.0.0|remove:absent) echo "@@STATE new" ;;
	*) echo "@@STATE bad"; qt_fail "$op: $ID is '$v' after the cut" ;;
	esac
	qt_run 0 appmgr fsck
	if [ "$v" != absent ]; then
		qt_run 0 appmgr run $ID
		qt_out | grep -q "^hello from version $v" || qt_fail "installed $v does not run"
	fi
	qt_run 0 appmgr --json info org.qt.Runtime
	;;
esac
