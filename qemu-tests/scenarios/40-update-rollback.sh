#!/bin/sh
# arch: aarch64 x86_64
# needs: appmgr
# timeout: 300
# Update then rollback: v1 -> v2 (info shows the previous deployment) ->
# rollback to v1; a downgrade bundle is refused (exit 6); remove; fsck clean
# at every step.
. /qt/lib.sh
qt_need_appmgr appmgr-launch
export APPMGR_STATE_DIR=/var/lib/appmgr APPMGR_CONFIG_DIR=/etc/appmgr
mkdir -p $APPMGR_STATE_DIR $APPMGR_CONFIG_DIR
qt_setup_keys /tmp/qt-keys
qt_bundle runtime org.qt.Runtime 1.0.0 /tmp/runtime.bundle
qt_bundle app org.qt.Hello 1.0.0 /tmp/hello-1.bundle
qt_bundle app org.qt.Hello 2.0.0 /tmp/hello-2.bundle
qt_run 0 appmgr install /tmp/runtime.bundle
qt_run 0 appmgr install /tmp/hello-1.bundle
qt_run 0 appmgr run org.qt.Hello
qt_out | grep -q '^hello from version 1.0.0' || qt_fail "v1 does not run"

qt_run 0 appmgr install /tmp/hello-2.bundle
qt_run 0 appmgr run org.qt.Hello
qt_out | grep -q '^hello from version 2.0.0' || qt_fail "v2 does not run after the update"
qt_run 0 appmgr --json info org.qt.Hello
[ "$(qt_json_field version)" = 2.0.0 ] || qt_fail "info after update: version $(qt_json_field version)"
qt_out | grep -q '1\.0\.0' || qt_fail "info after update does not show the previous deployment 1.0.0"
qt_run 0 appmgr fsck

qt_run 0 appmgr rollback org.qt.Hello
qt_run 0 appmgr run org.qt.Hello
qt_out | grep -q '^hello from version 1.0.0' || qt_fail "v1 does not run after rollback"
qt_run 0 appmgr --json info org.qt.Hello
[ "$(qt_json_field version)" = 1.0.0 ] || qt_fail "info after rollback: version $(qt_json_field version)"
qt_run 0 appmgr fsck

qt_run 0 appmgr install /tmp/hello-2.bundle
qt_run 6 appmgr install /tmp/hello-1.bundle
qt_run 0 appmgr run org.qt.Hello
qt_out | grep -q '^hello from version 2.0.0' || qt_fail "the refused downgrade changed the running version"

qt_run 6 appmgr remove org.qt.Runtime
qt_run 0 appmgr remove org.qt.Hello
qt_run 5 appmgr info org.qt.Hello
qt_run 6 appmgr install /tmp/hello-1.bundle
qt_run 0 appmgr fsck
