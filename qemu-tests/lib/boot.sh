# shellcheck shell=bash
# Booting guests under TCG and running scenario groups in them.

BOOT_ALLOWANCE_aarch64=60   # seconds a boot may take before the first scenario
BOOT_ALLOWANCE_x86_64=120

# qemu_argv ARCH SMP MEM INITRD SERIALLOG [DISK:SERIAL...] -> QEMU_ARGV array.
# QEMU_NET: the guest's network, "none" (default: no NIC at all) or "registry"
# (a user-mode NIC that reaches only the host's registry: lib/registry.sh).
qemu_argv() {
	local a=$1 smp=$2 mem=$3 initrd=$4 log=$5
	shift 5
	local kd=${KDIR[$a]} kv=${KVER[$a]}
	local append="panic=-1 quiet loglevel=3 rdinit=/init ${QEMU_APPEND_EXTRA:-}"
	case $a in
	aarch64)
		QEMU_ARGV=(qemu-system-aarch64 -M virt -cpu cortex-a57 -accel tcg,thread=multi)
		append="console=ttyAMA0 $append"
		;;
	x86_64)
		QEMU_ARGV=(qemu-system-x86_64 -M pc -cpu max -accel tcg,thread=multi)
		append="console=ttyS0 $append"
		;;
	esac
	QEMU_ARGV+=(-smp "$smp" -m "$mem" -kernel "$kd/boot/vmlinuz-$kv" -initrd "$initrd"
		-append "$append" -display none -monitor none -serial "file:$log" -no-reboot
		-device virtio-rng-pci)
	local NIC_ARGV
	qemu_nic_argv "${QEMU_NET:-none}"
	QEMU_ARGV+=("${NIC_ARGV[@]}")
	local i=0 d
	for d in "$@"; do
		local fmt=raw
		case ${d%%:*} in *.qcow2) fmt=qcow2 ;; esac
		QEMU_ARGV+=(-drive "file=${d%%:*},format=$fmt,if=none,id=d$i,cache=writeback"
			-device "virtio-blk-pci,drive=d$i,serial=${d##*:}")
		i=$((i + 1))
	done
}

# start_qemu: runs QEMU_ARGV in the background; QEMU_PID
start_qemu() {
	local log=$1
	: >"$log"
	"${QEMU_ARGV[@]}" >"$log.qemu" 2>&1 &
	QEMU_PID=$!
	if [ "$VERBOSE" = 1 ]; then
		tail -n +1 -f "$log" --pid="$QEMU_PID" | sed -u 's/\r$//; s/^/      > /' &
	fi
}

# wait_qemu TIMEOUT: wait for exit, kill -9 after TIMEOUT seconds. Returns 124 on timeout.
wait_qemu() {
	local t=$1 i=0
	while kill -0 "$QEMU_PID" 2>/dev/null; do
		if [ $i -ge $((t * 10)) ]; then
			kill -9 "$QEMU_PID" 2>/dev/null
			wait "$QEMU_PID" 2>/dev/null
			return 124
		fi
		sleep 0.1
		i=$((i + 1))
	done
	wait "$QEMU_PID" 2>/dev/null || true
	return 0
}

clean_log() { tr -d '\r' <"$1"; }

# boot_scenarios ARCH GUEST SMP MEM NAME...: one boot runs the named scenarios in order.
boot_scenarios() {
	local a=$1 guest=$2 smp=$3 mem=$4
	shift 4
	local dir=$RUN_OUT/$a plan spec="" total n t
	# a group shares its network (run_arch groups by it): a NIC only for the registry's
	local QEMU_NET
	QEMU_NET=$(scenario_net "$1")
	mkdir -p "$dir"
	local tag=$1
	[ $# -gt 1 ] && tag="$1+$(($# - 1))"
	eval "total=\$BOOT_ALLOWANCE_$a"
	[ "$guest" = debootstrap ] && total=$((total + 240))
	for n in "$@"; do
		t=$(scenario_timeout "$n")
		spec="$spec $n $t"
		total=$((total + t))
	done
	plan=$dir/plan-$tag.sh
	printf 'MODE=scenarios\nSCENARIOS="%s"\n' "$spec" >"$plan"
	# calls per measure for the benches (qemu-tests/bench), which read the plan
	case ${APPMGR_QEMU_BENCH_CALLS:-} in
	'') ;;
	*[!0-9]*) die "APPMGR_QEMU_BENCH_CALLS is a number of calls, not '$APPMGR_QEMU_BENCH_CALLS'" ;;
	*) echo "BENCH_CALLS=$APPMGR_QEMU_BENCH_CALLS" >>"$plan" ;;
	esac
	case ${APPMGR_QEMU_BENCH_NOTIFY_SECONDS:-} in
	'') ;;
	*[!0-9]*) die "APPMGR_QEMU_BENCH_NOTIFY_SECONDS is a number of seconds, not '$APPMGR_QEMU_BENCH_NOTIFY_SECONDS'" ;;
	*) echo "BENCH_NOTIFY_SECONDS=$APPMGR_QEMU_BENCH_NOTIFY_SECONDS" >>"$plan" ;;
	esac
	local initrd=$dir/initrd-$tag.img serial=$dir/serial-$tag.log disks=()
	if [ "$guest" = debootstrap ]; then
		build_rootfs "$a"
		echo "ROOTFS=1" >>"$plan"
		rm -f "$dir/rootfs-$tag.qcow2"
		qemu-img create -q -f qcow2 -b "${ROOTFS_IMG[$a]}" -F raw "$dir/rootfs-$tag.qcow2"
		payload_disk "$a" "$dir/payload-$tag.tar" "$plan"
		disks=("$dir/rootfs-$tag.qcow2:rootfs" "$dir/payload-$tag.tar:payload")
	fi
	boot_initrd "$a" "$plan" "$initrd"
	QEMU_APPEND_EXTRA=
	[ "$guest" = debootstrap ] && QEMU_APPEND_EXTRA="systemd.show_status=false"
	qemu_argv "$a" "$smp" "$mem" "$initrd" "$serial" "${disks[@]}"
	QEMU_APPEND_EXTRA=
	step "$a: boot $guest (smp $smp, ${mem}M) running: $*"
	local b0 b1 trc=0
	b0=$(date +%s)
	start_qemu "$serial"
	wait_qemu "$total" || trc=$?
	b1=$(date +%s)
	rm -f "$initrd" "$dir/rootfs-$tag.qcow2" "$dir/payload-$tag.tar"
	local clean=$dir/serial-$tag.txt
	clean_log "$serial" >"$clean"
	info "guest ran $((b1 - b0))s$([ $trc = 124 ] && echo ", killed after ${total}s")"
	if ! grep -q '^@@QT READY' "$clean"; then
		info "the guest never reached the runner; serial log: $clean"
		tail -n 30 "$clean" | sed 's/^/      | /'
		tail -n 5 "$serial.qemu" 2>/dev/null | sed 's/^/      qemu| /'
	fi
	for n in "$@"; do
		local log=$dir/$n.log rc secs
		awk -v n="$n" '$0 == "@@QT BEGIN " n { on = 1; next } index($0, "@@QT END " n " ") == 1 { on = 0 } on' "$clean" >"$log"
		rc=$(sed -n "s/^@@QT END $n rc=\([0-9]*\) secs=\([0-9]*\)$/\1/p" "$clean")
		secs=$(sed -n "s/^@@QT END $n rc=[0-9]* secs=\([0-9]*\)$/\1/p" "$clean")
		if [ -z "$rc" ]; then
			if grep -q "^@@QT BEGIN $n\$" "$clean"; then
				result "$a" "$n" FAIL "${secs:-?}" "$log" "guest died or was killed during the scenario (see $clean)"
			else
				cp "$clean" "$log"
				result "$a" "$n" FAIL "?" "$log" "not run: the guest did not get to it (see $clean)"
			fi
		elif [ "$rc" = 0 ]; then
			result "$a" "$n" PASS "$secs" "$log"
		elif [ "$rc" = 137 ]; then
			result "$a" "$n" FAIL "$secs" "$log" "timed out"
		else
			result "$a" "$n" FAIL "$secs" "$log" "exit $rc: $(grep -m1 '^FAIL' "$log" || tail -n1 "$log")"
		fi
	done
}

run_arch() {
	local a=$1 s group=() gkey="" key
	RESULTS_FILE=${RESULTS_FILE:-$RUN_OUT/results.txt}
	touch "$RESULTS_FILE"
	stage_initramfs "$a"
	flush_group() {
		[ ${#group[@]} -eq 0 ] && return 0
		local g smp mem
		read -r g smp mem _ <<<"$gkey"
		boot_scenarios "$a" "$g" "$smp" "$mem" "${group[@]}"
		group=()
	}
	for s in "${SEL[@]}"; do
		scenario_runs_on "$s" "$a" || continue
		if [ -n "$(scenario_powercut "$s")" ]; then
			flush_group
			run_powercut "$a" "$s"
		else
			key="$(scenario_guest "$s") $(scenario_smp "$s") $(scenario_mem "$s") $(scenario_net "$s")"
			[ "$key" = "$gkey" ] || flush_group
			gkey=$key
			group+=("$s")
		fi
	done
	flush_group
}
