#!/bin/sh
# arch: x86_64
# (the machinery under test is the harness's: one arch proves it; aarch64's
# power-cut minutes go to 50-powercut-appmgr)
# powercut: replace remove
# timeout: 60
# cuts: 4
# Proves the power-cut machinery without appmgr: a reference atomic file
# replacement (write temp, fsync, rename, fsync dir) on the state disk must be
# exactly old or new after any cut, and new once it reported completion.
. /qt/lib.sh
phase=$1 op=$2
D=/state/data F=/state/fixtures
MB=6

mk() { # FILE TAG: MB MiB of data that depends on TAG, with its sha256 beside
	{ i=0; while [ $i -lt $MB ]; do echo "$2 block $i"; head -c 1048576 /dev/urandom; i=$((i + 1)); done; } >"$1"
	sha256sum "$1" | cut -d' ' -f1 >"$1.sha"
}
state_of() { # -> absent | v1 | v2 | corrupt
	[ -e "$D/current" ] || { echo absent; return; }
	s=$(sha256sum "$D/current" | cut -d' ' -f1)
	if [ "$s" = "$(cat $F/v1.sha)" ]; then echo v1
	elif [ "$s" = "$(cat $F/v2.sha)" ]; then echo v2
	else echo corrupt; fi
}

case $phase in
setup)
	mkdir -p $D $F
	mk $F/v1 v1
	mk $F/v2 v2
	case $op in replace|remove) cp $F/v1 $D/current ;; esac
	sync
	echo "setup $op: $(state_of)"
	;;
prepare) : ;;
op)
	case $op in
	replace) src=$F/v2 ;;
	create) src=$F/v1 ;;
	remove) rm $D/current; sync $D; exit 0 ;;
	esac
	cp $src $D/current.tmp
	sync $D/current.tmp      # fsync the data
	mv $D/current.tmp $D/current
	sync $D                  # fsync the directory: the rename is durable
	;;
check)
	st=$(state_of)
	case $op:$st in
	replace:v1|create:absent|remove:v1) echo "@@STATE old" ;;
	replace:v2|create:v1|remove:absent) echo "@@STATE new" ;;
	*) echo "@@STATE bad"; qt_fail "$op: data is $st" ;;
	esac
	[ -e $D/current.tmp ] && echo "leftover temp file (allowed: a staging leftover)"
	echo "$op: $st"
	;;
esac
