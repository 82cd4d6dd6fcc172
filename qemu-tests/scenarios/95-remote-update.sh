#!/bin/sh
# arch: aarch64
# needs: appmgr registry
# powercut: update
# timeout: 300
# cuts: 3
# An aarch64 device updated from an OCI registry: Debian's docker-registry on
# the host, reached through a user-mode NIC that can reach nothing else
# (lib/registry.sh; the guest sees it at 10.0.2.100:5000). The setup boot
# installs the runtime and app 1.0.0 from files, publishes app 2.0.0 (padded
# to ≈ 2 MiB, so the stream lasts long enough for cuts to land inside it) and
# adds the remote; `remote ls` must offer 2.0.0, trusted. The remote is
# TUF-verified (docs/remotes.md "Trust"): one key per role, `tuf root`, the
# bundle listed in the targets with `publish --tuf-root`, the device's remote
# added with `--root`, so tough's checks and the TUF state's swap (a cut may
# land in it) run on the aarch64 device. The op is
# `appmgr update` of the app, and the power is cut at random points of it,
# mostly mid-stream. After each cut: the app is exactly 1.0.0 or 2.0.0, fsck is
# clean, the installed version runs; then the device recovers: `update` again
# (the registry is still there) succeeds and gives 2.0.0, which runs.
# (lib/powercut.sh drives this script: setup / prepare / op / check OP.)
. /qt/lib.sh
phase=$1 op=$2
F=/state/fixtures
ID=org.qt.Remote
URL=oci://$QT_REGISTRY/fleet/apps

# registry_up: the network up and the remote answering (a listing; no payload)
registry_up() {
	qt_net_up
	qt_wait 20 appmgr remote ls fleet || { qt_run 0 appmgr remote ls fleet; qt_fail "the registry does not answer"; }
}

# runs_as VERSION: the app runs and says it is VERSION
runs_as() {
	qt_run 0 appmgr run $ID
	qt_out | grep -q "^hello from version $1 " || qt_fail "installed $1 does not run as $1"
}

case $phase in
setup)
	qt_need_appmgr appmgr-launch
	qt_net_up
	mkdir -p $F
	QT_KEY=$F/test.key
	qt_setup_keys $F
	qt_bundle runtime org.qt.Runtime 1.0.0 $F/runtime.bundle
	qt_bundle app $ID 1.0.0 $F/app-1.bundle
	# 2.0.0 exists only on the registry: the update can come from nowhere else
	QT_BUNDLE_PAD_KB=2048
	qt_bundle app $ID 2.0.0 /tmp/app-2.bundle
	QT_BUNDLE_PAD_KB=
	echo "app 2.0.0 bundle: $(wc -c </tmp/app-2.bundle) bytes"
	qt_run 0 appmgr install $F/runtime.bundle
	qt_run 0 appmgr install $F/app-1.bundle
	for role in root targets snapshot timestamp; do
		qt_run 0 appmgr key generate --out /tmp/tuf-$role
	done
	qt_run 0 appmgr tuf root /tmp/root.json --version 1 \
		--key root=/tmp/tuf-root.key --key targets=/tmp/tuf-targets.key \
		--key snapshot=/tmp/tuf-snapshot.key --key timestamp=/tmp/tuf-timestamp.key \
		--sign /tmp/tuf-root.key
	qt_run 0 appmgr publish /tmp/app-2.bundle "$URL" --tuf-root /tmp/root.json \
		--tuf-key /tmp/tuf-targets.key --tuf-key /tmp/tuf-snapshot.key --tuf-key /tmp/tuf-timestamp.key
	qt_run 0 appmgr remote add fleet "$URL" --root /tmp/root.json
	qt_run 0 appmgr remote list
	qt_run 0 appmgr --json remote ls fleet
	n=$(qt_json_get offers.#) || qt_fail "remote ls: no offers array"
	i=0 found=0
	while [ $i -lt "$n" ]; do
		if [ "$(qt_json_get offers.$i.id)" = $ID ] && [ "$(qt_json_get offers.$i.version)" = 2.0.0 ]; then
			[ "$(qt_json_get offers.$i.trusted)" = true ] || qt_fail "remote ls: $ID 2.0.0 is not trusted"
			[ "$(qt_json_get offers.$i.release)" = 1 ] || qt_fail "remote ls: $ID 2.0.0 is not TUF release 1"
			found=1
		fi
		i=$((i + 1))
	done
	[ $found = 1 ] || qt_fail "remote ls fleet does not offer $ID 2.0.0"
	qt_ok "the registry offers $ID 2.0.0, trusted"
	sync
	echo "setup $op: $ID is $(qt_version_of $ID)"
	;;
prepare)
	qt_need_appmgr
	registry_up
	;;
op)
	exec appmgr update $ID
	;;
check)
	qt_need_appmgr appmgr-launch
	v=$(qt_version_of $ID) || qt_fail "appmgr info failed after the cut"
	case $v in
	1.0.0) echo "@@STATE old" ;;
	2.0.0) echo "@@STATE new" ;;
	*) echo "@@STATE bad"; qt_fail "$ID is '$v' after the cut" ;;
	esac
	qt_run 0 appmgr fsck
	runs_as "$v"
	qt_run 0 appmgr --json info org.qt.Runtime
	# the device recovers: the same update, network and registry still there
	registry_up
	qt_run 0 appmgr --json update $ID
	want=1
	[ "$v" = 2.0.0 ] && want=0
	[ "$(qt_json_get updated.#)" = $want ] || qt_fail "update after the cut at $v updated $(qt_json_get updated.#) refs, not $want"
	[ "$(qt_version_of $ID)" = 2.0.0 ] || qt_fail "after the update $ID is '$(qt_version_of $ID)', not 2.0.0"
	runs_as 2.0.0
	qt_run 0 appmgr fsck
	qt_ok "recovered: $v -> 2.0.0"
	;;
esac
