# shellcheck shell=bash
# Power-cut loop. A power-cut scenario declares "# powercut: OP..." and handles
#   setup OP    bring a fresh state disk to the state before OP (synced, unmounted)
#   prepare OP  anything before the cut window (not cut)
#   op OP       the operation under test (the power is cut during it)
#   check OP    after the cut: print "@@STATE old" or "@@STATE new", exit 0 when
#               the state is consistent (e.g. appmgr fsck clean)
#
# 1. one setup boot prepares base-OP.img (ext4, raw, virtio-blk) for every OP;
# 2. cut i: copy base-OP.img, boot with it as "victim"; when the guest prints
#    OP-START the host waits a random delay and kills qemu with SIGKILL: the
#    guest's page cache and in-flight I/O are lost, nothing was synced;
# 3. the next boot attaches that disk as "check" (ext4 replays its journal on
#    mount) and runs "check OP" before starting cut i+1 on a fresh copy;
#    a final boot checks the last cut.
# The first cut of each OP is not cut early: it measures how long the OP takes
# (OP-START to OP-DONE) and later delays are drawn from [0, 1.2 x that]. A cut
# that lands after OP-DONE requires "new": a completed operation must be durable.

DISK_SIZE=${APPMGR_QEMU_DISK_SIZE:-256M}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# wait_marker LOG REGEX TIMEOUT_S: poll the serial log; 0 when found, 1 when qemu
# exited, 124 on timeout.
wait_marker() {
	local log=$1 re=$2 t=$3 end
	end=$(($(now_ms) + t * 1000))
	while :; do
		tr -d '\r' <"$log" | grep -q -- "$re" && return 0
		kill -0 "$QEMU_PID" 2>/dev/null || { tr -d '\r' <"$log" | grep -q -- "$re" && return 0; return 1; }
		[ "$(now_ms)" -lt "$end" ] || return 124
		sleep 0.02
	done
}

cut_power() {
	kill -9 "$QEMU_PID" 2>/dev/null || true
	wait "$QEMU_PID" 2>/dev/null || true
}

# Cuts per scenario and arch: --cuts / APPMGR_QEMU_CUTS, else the scenario's
# "# cuts: N" header, else 8 on aarch64 (our boards) and 5 on x86_64: what fits
# the CI budget on a fresh machine; raise it with --cuts for a soak run.
default_cuts() { case $1 in aarch64) echo 8 ;; *) echo 5 ;; esac; }

run_powercut() {
	local a=$1 s=$2 ops n cuts dir t allowance
	read -ra ops <<<"$(scenario_powercut "$s")"
	n=${#ops[@]}
	cuts=${CUTS:-$(hdr "$(scenario_file "$s")" cuts "$(default_cuts "$a")")}
	dir=$RUN_OUT/$a/$s
	rm -rf "$dir"
	mkdir -p "$dir"
	t=$(scenario_timeout "$s")
	eval "allowance=\$BOOT_ALLOWANCE_$a"
	# every boot of the scenario (setup, cuts, checks) on the same network
	local QEMU_NET
	QEMU_NET=$(scenario_net "$s")
	local seed=${APPMGR_QEMU_SEED:-$(( $(date +%s) % 32768 ))}
	RANDOM=$seed
	local t0 log=$dir/summary.log
	t0=$(date +%s)
	step "$a: $s: power cuts ($cuts cuts over: ${ops[*]}; seed $seed; logs: $dir)"
	: >"$log"

	# 1. setup boot
	local op disks=()
	for op in "${ops[@]}"; do
		truncate -s "$DISK_SIZE" "$dir/base-$op.img"
		mkfs.ext4 -q -F -L qtstate "$dir/base-$op.img"
		disks+=("$dir/base-$op.img:base-$op")
	done
	printf 'MODE=pc-setup\nSCENARIO=%s\nOPS="%s"\nTIMEOUT=%s\n' "$s" "${ops[*]}" "$t" >"$dir/plan-setup.sh"
	boot_initrd "$a" "$dir/plan-setup.sh" "$dir/initrd.img"
	qemu_argv "$a" "$(scenario_smp "$s")" "$(scenario_mem "$s")" "$dir/initrd.img" "$dir/setup.serial" "${disks[@]}"
	start_qemu "$dir/setup.serial"
	wait_qemu $((allowance + n * t)) || true
	clean_log "$dir/setup.serial" >"$dir/setup.txt"
	local bad=""
	for op in "${ops[@]}"; do
		grep -q "^@@QT SETUP $op rc=0\$" "$dir/setup.txt" || bad="$bad $op"
	done
	if [ -n "$bad" ]; then
		cp "$dir/setup.txt" "$log"
		rm -f "$dir"/*.img
		result "$a" "$s" FAIL "$(($(date +%s) - t0))" "$log" "setup failed for:$bad"
		return 0
	fi
	echo "setup ok for: ${ops[*]}" >>"$log"

	# 2. cuts
	declare -A dur=()
	local i prev_img="" prev_op="" prev_done=0 prev_delay="" fails=0 olds=0 news=0 afterdone=0
	local dirty serial txt plan started delay done_ rc st
	for ((i = 0; i <= cuts; i++)); do
		plan=$dir/plan-$i.sh
		disks=()
		[ -n "$prev_img" ] && disks+=("$prev_img:check")
		if [ $i -lt $cuts ]; then
			op=${ops[$((i % n))]}
			cp --sparse=always "$dir/base-$op.img" "$dir/cut-$i.img"
			disks+=("$dir/cut-$i.img:victim")
			dirty=default
			[ $((RANDOM % 2)) = 1 ] && dirty=fast
		else
			op="" dirty=default
		fi
		printf 'MODE=pc-iter\nSCENARIO=%s\nTIMEOUT=%s\nCHECK_OP=%s\nRUN_OP=%s\nDIRTY=%s\n' \
			"$s" "$t" "$prev_op" "$op" "$dirty" >"$plan"
		serial=$dir/boot-$i.serial
		txt=$dir/boot-$i.txt
		boot_initrd "$a" "$plan" "$dir/initrd.img"
		qemu_argv "$a" "$(scenario_smp "$s")" "$(scenario_mem "$s")" "$dir/initrd.img" "$serial" "${disks[@]}"
		start_qemu "$serial"
		done_=0 delay="-"
		if [ -n "$op" ]; then
			if wait_marker "$serial" '^@@QT OP-START' $((allowance + 2 * t)); then
				started=$(now_ms)
				if [ -z "${dur[$op]:-}" ]; then
					# calibration: let it finish, measure, then cut (after done)
					if wait_marker "$serial" '^@@QT OP-DONE' "$t"; then
						dur[$op]=$(($(now_ms) - started))
						delay="after-done(${dur[$op]}ms)"
					else
						dur[$op]=$((t * 1000))
						delay="op-timeout"
					fi
				else
					local max=$((dur[$op] * 12 / 10 + 1))
					delay=$(( (RANDOM * 32768 + RANDOM) % max ))
					sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
					delay="${delay}ms/${dur[$op]}ms"
				fi
				cut_power
				tr -d '\r' <"$serial" | grep -q '^@@QT OP-DONE' && done_=1
			else
				cut_power
				delay="no-op-start"
			fi
		else
			wait_qemu $((allowance + t)) || true
		fi
		clean_log "$serial" >"$txt"
		rm -f "$serial"
		# verdict on the previous cut (checked in this boot)
		if [ -n "$prev_op" ]; then
			rc=$(sed -n 's/^@@QT CHECK rc=\([0-9]*\).*/\1/p' "$txt")
			st=$(sed -n 's/^@@STATE \([a-z]*\).*/\1/p' "$txt" | tail -n 1)
			local verdict=ok why=""
			if [ -z "$rc" ]; then verdict=FAIL why="check did not complete"
			elif [ "$rc" != 0 ]; then verdict=FAIL why="check exit $rc (inconsistent state or fsck not clean)"
			elif [ "$st" != old ] && [ "$st" != new ]; then verdict=FAIL why="state is '${st:-none}', neither old nor new"
			elif [ "$prev_done" = 1 ] && [ "$st" != new ]; then verdict=FAIL why="the operation had completed before the cut but its result was lost"
			fi
			[ "$st" = old ] && olds=$((olds + 1))
			[ "$st" = new ] && news=$((news + 1))
			[ "$prev_done" = 1 ] && afterdone=$((afterdone + 1))
			printf 'cut %2d %-9s cut at %-22s done=%s -> state=%-4s %s %s\n' $((i - 1)) "$prev_op" "$prev_delay" "$prev_done" "${st:--}" "$verdict" "$why" >>"$log"
			if [ "$verdict" != ok ]; then
				fails=$((fails + 1))
				cp "$prev_img" "$dir/failed-cut-$((i - 1)).img" 2>/dev/null || true
				{ echo "--- check of cut $((i - 1)) (boot $i):"; sed -n '/^@@QT READY/,/^@@QT CHECK/p' "$txt"; } >>"$log"
			fi
			rm -f "$prev_img"
		fi
		if [ -n "$op" ]; then
			local prc
			prc=$(sed -n 's/^@@QT PREPARED rc=\([0-9]*\).*/\1/p' "$txt")
			if [ "${prc:-x}" != 0 ] || grep -q '^@@QT OP-DONE rc=[1-9]' "$txt"; then
				printf 'cut %2d %-9s FAIL: prepare rc=%s, %s\n' "$i" "$op" "${prc:-none}" "$(grep '^@@QT OP-DONE' "$txt" || echo 'op not completed')" >>"$log"
				sed -n '/^@@QT READY/,$p' "$txt" | tail -n 40 >>"$log"
				fails=$((fails + 1))
				rm -f "$dir/cut-$i.img"
				result "$a" "$s" FAIL "$(($(date +%s) - t0))" "$log" "$op failed without any cut (cut $i)"
				rm -f "$dir"/base-*.img "$dir/initrd.img"
				return 0
			fi
			prev_img=$dir/cut-$i.img prev_op=$op prev_done=$done_ prev_delay=$delay
		fi
	done
	rm -f "$dir"/base-*.img "$dir/initrd.img"
	local summary="$cuts cuts: $olds old, $news new ($afterdone after completion), $fails failed"
	echo "$summary" >>"$log"
	if [ $fails = 0 ] && [ $((olds + news)) = "$cuts" ]; then
		result "$a" "$s" PASS "$(($(date +%s) - t0))" "$log" "$summary"
	else
		result "$a" "$s" FAIL "$(($(date +%s) - t0))" "$log" "$summary"
	fi
}
