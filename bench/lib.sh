# Helpers for bench/run. Sourced, not executed.

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
warn() { log "WARNING: $*"; echo "- $*" >> "$NOTES"; }
note() { echo "- $*" >> "$NOTES"; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# hf NAME MODE [hyperfine options...] -- COMMAND...
#   MODE: rt (hyperfine under SCHED_FIFO 10 when BENCH_RT=1) or other (SCHED_OTHER).
#   Children inherit hyperfine's policy, so nothing extra runs inside the timed command.
#   Writes $J/NAME.json; returns non-zero (and logs) if hyperfine fails.
hf() {
  local name="$1" mode="$2"; shift 2
  local pfx=()
  if [ "$mode" = rt ] && [ "$BENCH_RT" = 1 ]; then pfx=(chrt -f 10); fi
  log "  $name (load $(load1))"
  echo "$name $(load1) $mode" >> "$J/loadavg.txt"
  rm -f "$J/$name.json"
  if ! "${pfx[@]}" hyperfine --style none --export-json "$J/$name.json" "$@" >/dev/null 2>"$J/$name.err"; then
    log "  $name FAILED: $(tail -3 "$J/$name.err" | tr '\n' ' ')"
    rm -f "$J/$name.json"
    return 1
  fi
}

# med NAME [UNIT]: median of a hyperfine result in ms (UNIT=s for seconds); empty if absent.
# If the benchmark ran in several rounds (NAME@1.json, NAME@2.json, ...), the median of the
# per-round medians.
med() {
  local mul=1000 f
  [ "${2:-ms}" = s ] && mul=1
  if [ -f "$J/$1.json" ]; then
    jq -r --argjson m "$mul" '.results[0].median * $m' "$J/$1.json"; return
  fi
  ls "$J/$1@"*.json >/dev/null 2>&1 || return 0
  for f in "$J/$1@"*.json; do jq -r --argjson m "$mul" '.results[0].median * $m' "$f"; done |
    sort -g | awk '{a[NR]=$1} END{ if (NR) printf "%.6f\n", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }'
}
# range NAME: "min–max" of the per-round medians in ms (empty unless several rounds)
range() {
  ls "$J/$1@"*.json >/dev/null 2>&1 || return 0
  for f in "$J/$1@"*.json; do jq -r '.results[0].median * 1000' "$f"; done | sort -g |
    awk '{a[NR]=$1} END{ if (NR>1) printf "%.2f–%.2f", a[1], a[NR] }'
}

# ratio A B: A/B with 2 decimals; empty if either is empty or B is 0
ratio() {
  [ -n "${1:-}" ] && [ -n "${2:-}" ] || return 0
  awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 == 0) exit; printf "%.2f", a/b }'
}
# fmt NUM [DECIMALS]
fmt() { [ -n "${1:-}" ] && awk -v a="$1" -v d="${2:-2}" 'BEGIN{printf "%.*f", d, a}' || true; }
# le A B: "pass" if A <= B, "miss" otherwise, "n/a" if A is empty
le() {
  [ -n "${1:-}" ] || { echo "n/a"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN{ print (a+0 <= b+0) ? "**pass**" : "**miss**" }'
}

# PID and all its descendants
descendants() { local p="$1" c; echo "$p"; for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do descendants "$c"; done; }
# kill a process tree by explicit PIDs (never by name)
kill_tree() {
  local pids; pids=$(descendants "$1")
  kill $pids 2>/dev/null || true; sleep 0.3; kill -9 $pids 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Sum of st_blocks (bytes) of the inodes under DIR that are not listed in SNAPSHOT
# (a file made by `snap_inodes`): the space newly allocated between the two.
snap_inodes() { find "$1" -xdev -printf '%i %b\n' 2>/dev/null | sort -u -k1,1 > "$2"; }
new_bytes() {
  local dir="$1" before="$2" after; after=$(mktemp)
  snap_inodes "$dir" "$after"
  join -v2 -j1 "$before" "$after" | awk '{s+=$2} END{printf "%d", s*512}'
  rm -f "$after"
}

# PSS/RSS (KiB) of one pid from smaps_rollup: prints "rss pss"
pss_of() { awk '/^Rss:/{r=$2} /^Pss:/{p=$2} END{print r+0, p+0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo "0 0"; }
