# shellcheck shell=bash
# Shared helpers of qemu-tests/run: logging, scenario headers, selection, report.

step() { CURRENT_STEP=$*; printf '\n=== [%4ss] %s\n' "$(( $(date +%s) - ${T0:-$(date +%s)} ))" "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'qemu-tests: ERROR: %s\n' "$*" >&2; exit 3; }

# Debian architecture name of an appmgr/Rust arch.
deb_arch() { case $1 in aarch64) echo arm64 ;; x86_64) echo amd64 ;; esac; }
rust_target() { echo "$1-unknown-linux-gnu"; }
gnu_triplet() { echo "$1-linux-gnu"; }
# The 32-bit Debian arch whose binaries the compat checks run on ARCH.
compat_arch() { case $1 in aarch64) echo armhf ;; x86_64) echo i386 ;; esac; }

# hdr FILE KEY DEFAULT: value of a "# KEY: value" line in the first 30 lines.
hdr() {
	local v
	v=$(head -n 30 "$1" | sed -n "s/^# *$2: *//p" | head -n 1)
	echo "${v:-$3}"
}

# A bench (qemu-tests/bench/NAME.sh, --bench) has the same headers and runs the
# same way; its names never start with a digit, so they never collide with a
# scenario's and all_scenarios never lists them.
scenario_file() {
	if [ -f "$QT_DIR/scenarios/$1.sh" ]; then echo "$QT_DIR/scenarios/$1.sh"; else echo "$QT_DIR/bench/$1.sh"; fi
}
scenario_arches() { hdr "$(scenario_file "$1")" arch "aarch64 x86_64"; }
scenario_guest() { hdr "$(scenario_file "$1")" guest initramfs; }
scenario_timeout() {
	local t
	t=$(hdr "$(scenario_file "$1")" timeout 120)
	awk -v t="$t" -v s="${APPMGR_QEMU_TIMEOUT_SCALE:-1}" 'BEGIN { printf "%d\n", t * s }'
}
scenario_smp() { hdr "$(scenario_file "$1")" smp 1; }
scenario_mem() { hdr "$(scenario_file "$1")" mem 512; }
scenario_powercut() { hdr "$(scenario_file "$1")" powercut ""; }
scenario_needs() { hdr "$(scenario_file "$1")" needs ""; }
# scenarios_need WORD ARCH: does a selected scenario for ARCH declare "needs: WORD"?
scenarios_need() {
	local s
	for s in "${SEL[@]}"; do
		scenario_runs_on "$s" "$2" || continue
		case " $(scenario_needs "$s") " in *" $1 "*) return 0 ;; esac
	done
	return 1
}
scenario_runs_on() { case " $(scenario_arches "$1") " in *" $2 "*) return 0 ;; esac; return 1; }

all_scenarios() {
	local f
	for f in "$QT_DIR"/scenarios/[0-9]*.sh; do
		basename "$f" .sh
	done
}

all_benches() {
	local f
	for f in "$QT_DIR"/bench/*.sh; do
		[ -f "$f" ] && basename "$f" .sh
	done
}

list_scenarios() {
	local s
	printf '%-28s %-18s %-12s %-8s %s\n' SCENARIO ARCH GUEST TIMEOUT "POWERCUT / NEEDS"
	for s in $(all_scenarios) $(all_benches); do
		printf '%-28s %-18s %-12s %-8s %s\n' "$s" "$(scenario_arches "$s" | tr ' ' ,)" \
			"$(scenario_guest "$s")" "$(scenario_timeout "$s")" \
			"$(scenario_powercut "$s") $(scenario_needs "$s")"
	done
}

SEL=()
select_scenarios() {
	local s p hit
	for p in ${BENCHES[@]+"${BENCHES[@]}"}; do
		case $p in [0-9]*|*/*|'') echo "qemu-tests: no bench '$p' (see --list)" >&2; exit 2 ;; esac
		[ -f "$QT_DIR/bench/$p.sh" ] || { echo "qemu-tests: no bench '$p' (see --list)" >&2; exit 2; }
		SEL+=("$p")
	done
	[ ${#SEL[@]} -gt 0 ] && [ ${#SCENARIOS[@]} -eq 0 ] && return
	if [ ${#SCENARIOS[@]} -eq 0 ]; then
		mapfile -t SEL < <(all_scenarios)
		return
	fi
	for p in "${SCENARIOS[@]}"; do
		hit=0
		for s in $(all_scenarios); do
			# shellcheck disable=SC2053
			if [[ $s == $p ]] || [[ $s == $p-* ]] || [[ ${s#[0-9][0-9]-} == $p ]]; then
				case " ${SEL[*]} " in *" $s "*) ;; *) SEL+=("$s") ;; esac
				hit=1
			fi
		done
		[ $hit = 1 ] || { echo "qemu-tests: no scenario matches '$p' (see --list)" >&2; exit 2; }
	done
}

# Results: one line per (arch, scenario): "ARCH SCENARIO STATUS SECONDS LOG REASON..."
RESULTS_FILE=
result() {
	local arch=$1 s=$2 status=$3 secs=$4 log=$5
	shift 5
	printf '%s %s %s %s %s %s\n' "$arch" "$s" "$status" "$secs" "$log" "$*" >>"$RESULTS_FILE"
	printf '    %-8s %-7s %-28s %4ss  %s\n' "$status" "$arch" "$s" "$secs" "$*"
}

report() {
	local total=$1 pass fail arch s status secs log reason
	pass=$(awk '$3=="PASS"' "$RESULTS_FILE" | wc -l)
	fail=$(awk '$3!="PASS"' "$RESULTS_FILE" | wc -l)
	if [ "$fail" -gt 0 ]; then
		step "logs of failed scenarios"
		while read -r arch s status secs log reason; do
			[ "$status" = PASS ] && continue
			printf '\n----- %s %s: %s (%s) -----\n' "$status" "$arch/$s" "$reason" "$log"
			if [ -f "$log" ]; then tail -n 80 "$log"; else echo "(no log)"; fi
		done <"$RESULTS_FILE"
	fi
	step "summary (results: $RESULTS_FILE, logs: $RUN_OUT)"
	while read -r arch s status secs log reason; do
		printf '    %-5s %-7s %-28s %4ss %s\n' "$status" "$arch" "$s" "$secs" "$reason"
	done <"$RESULTS_FILE"
	echo
	echo "qemu-tests: $pass passed, $fail failed"
	echo "qemu-tests: total ${total}s"
	# The plain closing line CI readers understand.
	echo "$pass passed, $fail failed"
	REPORTED=1
	[ "$fail" -eq 0 ] || exit 1
}
