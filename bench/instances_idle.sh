#!/usr/bin/env bash
# The idle cost of an instance set (docs/benchmarks.md, "Instance sets"): three
# `gateway-example workers --configs N --quiet` processes on a private loopback mesh (an
# environment of their own); once all N configurations run, the CPU time each process uses
# over SECS seconds, from /proc/PID/stat (utime + stime), as a percentage of one core.
#
#   bench/instances_idle.sh [N=100] [SECS=30] [BIN=target/release/gateway-example]
#
# Build first: cargo build --release -p gateway-example. Stops only the processes it started.
set -euo pipefail
N=${1:-100}
SECS=${2:-30}
BIN=${3:-target/release/gateway-example}
[[ -x $BIN ]] || { echo "no $BIN: cargo build --release -p gateway-example" >&2; exit 1; }
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export PLUME_ENV="idle-$$-$RANDOM"
unset PLUME_DISCOVERY PLUME_SEEDS PLUME_LISTEN PLUME_NATS_URL PLUME_REDIS_URL
for name in a b c; do
  "$BIN" workers --name "$name" --configs "$N" --quiet >"$WORK/$name.out" 2>/dev/null </dev/null &
  PIDS+=("$!")
done
# Ready once every configuration has started somewhere (a `start` line each), at most 60 s.
deadline=$((SECONDS + 60))
until (( $(cat "$WORK"/*.out | grep -c '^start ' || true) >= N )); do
  (( SECONDS < deadline )) || { echo "not all $N configurations started in 60 s" >&2; exit 1; }
  sleep 0.2
done
sleep 5 # settle: the first moves are over
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A before
for pid in "${PIDS[@]}"; do before[$pid]=$(ticks "$pid"); done
sleep "$SECS"
i=0
for pid in "${PIDS[@]}"; do
  used=$(( $(ticks "$pid") - before[$pid] ))
  name=$(echo a b c | cut -d' ' -f$((i + 1)))
  running=$(grep -c '^start ' "$WORK/$name.out" || true)
  stopped=$(grep -c '^stop ' "$WORK/$name.out" || true)
  awk -v u="$used" -v hz="$hz" -v s="$SECS" -v n="$name" -v r=$((running - stopped)) \
    'BEGIN { printf "node %s: %d instances, %.2f %% of one core over %d s\n", n, r, 100 * u / hz / s, s }'
  i=$((i + 1))
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
