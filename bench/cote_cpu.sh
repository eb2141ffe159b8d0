#!/usr/bin/env bash
# The Node feathers-distributed gateway's CPU per request (docs/benchmarks.md, "Node gateway CPU
# per request"): GET /todos?$limit=1 with wrk through a Node gateway in front of
#   plume   one Plume replica (gateway-example todos, PLUME_DISCOVERY=cote);
#   node    one Node replica (tests/cote/replica.mjs);
#   before  (with BENCH_GX_BEFORE=<another gateway-example>) one Plume replica of that binary.
# Each topology has its own loopback-only network namespace (cote broadcasts); all are started
# first, then measured in turns (plume, node[, before]) BENCH_RUNS times (default 5) for
# BENCH_SECONDS (default 5) s each, so a change of the machine's load hits every kind alike.
# For each run: the gateway's (and the replica's) utime+stime from /proc/<pid>/stat over the
# run, divided by the requests wrk completed, in µs per request; then the medians and the ratios
# (plume against node: throughput, gateway CPU per request).
#
#   bench/cote_cpu.sh                     # needs root, node, npm, wrk, ip
#   BENCH_PROFILE=DIR bench/cote_cpu.sh   # also `node --cpu-prof` on every gateway: profiles
#                                         # in DIR, and their top functions printed
#   BENCH_GX=PATH                         # use that gateway-example instead of building one
#   BENCH_KINDS="plume node"              # the replica kinds measured (default: both)
#
# Namespaces and processes are removed on exit, on failure too. Kills only what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${BENCH_RUNS:-5}
SECS=${BENCH_SECONDS:-5}
PROFILE=${BENCH_PROFILE:-}
WORK=$(mktemp -d /tmp/plume-cote-cpu.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=scripts/lib/npm.sh
source "$ROOT/scripts/lib/npm.sh"
# shellcheck source=bench/cote_lib.sh
source "$ROOT/bench/cote_lib.sh"
trap 'cote_cleanup; rm -rf "$WORK"' EXIT

need_tools bench/cote_cpu.sh node npm ip python3
need_wrk
if [ "${BENCH_KINDS:-}" = node ]; then
  GX=/nonexistent # no Plume process in this run
elif [ -n "${BENCH_GX:-}" ]; then
  GX=$BENCH_GX
else
  log "building the release gateway-example"
  cargo build --release -q -p gateway-example
  GX="$(cargo_target_dir)/release/gateway-example"
fi
mkdir -p "$WORK/node"
npm_ci_copy tests/cote "$WORK/node" >/dev/null
TCK=$(getconf CLK_TCK)

read -r -a KINDS <<<"${BENCH_KINDS:-plume node}"
[ -n "${BENCH_GX_BEFORE:-}" ] && KINDS+=(before)
declare -A NS_OF=()

if [ -n "$PROFILE" ]; then
  mkdir -p "$PROFILE"
  PROFILE=$(cd "$PROFILE" && pwd)
  # A profile is written when node exits normally: SIGTERM makes the gateway exit.
  printf "process.on('SIGTERM', () => process.exit(0))\n" >"$WORK/node/exit-on-term.cjs"
fi

for kind in "${KINDS[@]}"; do
  netns_new
  NS_OF[$kind]=$NS
  case $kind in
    plume) plume_replica "replica-$kind" 3033 ;;
    before) plume_replica "replica-$kind" 3033 "$BENCH_GX_BEFORE" ;;
    node) node_replica "replica-$kind" 3034 ;;
  esac
  gateway_opts=()
  [ -n "$PROFILE" ] && gateway_opts=(--cpu-prof --cpu-prof-dir="$PROFILE/$kind" -r "$WORK/node/exit-on-term.cjs")
  node_gateway "gateway-$kind" "${gateway_opts[@]}"
  warm_up "replica-$kind"
  ip netns exec "$NS" wrk -t2 -c32 -d1s "$COTE_URL" >/dev/null
done

ticks() { # PID: utime+stime so far
  sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

for run in $(seq "$RUNS"); do
  for kind in "${KINDS[@]}"; do
    gw=${COTE_PID_OF[gateway-$kind]}
    rep=${COTE_PID_OF[replica-$kind]}
    g0=$(ticks "$gw")
    r0=$(ticks "$rep")
    ip netns exec "${NS_OF[$kind]}" wrk -t2 -c32 -d"${SECS}s" "$COTE_URL" >"$WORK/wrk.txt"
    g1=$(ticks "$gw")
    r1=$(ticks "$rep")
    if grep -q 'Non-2xx\|Socket errors' "$WORK/wrk.txt"; then
      log "$kind: failed calls"
      cat "$WORK/wrk.txt" >&2
      exit 1
    fi
    n=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
    rps=$(awk '/Requests\/sec/ {print int($2)}' "$WORK/wrk.txt")
    gus=$(((g1 - g0) * 1000000 / TCK / n))
    rus=$(((r1 - r0) * 1000000 / TCK / n))
    printf '%s %s %s %s %s %s\n' "$kind" "$run" "$rps" "$gus" "$rus" "$(loadavg)" >>"$RESULTS"
    log "run $run $kind: $rps req/s, gateway $gus µs CPU/request, replica $rus µs (load $(loadavg))"
  done
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
kinds = list(dict.fromkeys(r[0] for r in rows))
col = lambda k, i: [float(r[i]) for r in rows if r[0] == k]
print(f"{'replica':8} {'req/s':>8} {'gateway µs/req':>15} {'replica µs/req':>15}   (medians of {len(col(kinds[0], 2))} runs)")
med = {}
for k in kinds:
    med[k] = [statistics.median(col(k, i)) for i in (2, 3, 4)]
    print(f"{k:8} {med[k][0]:8.0f} {med[k][1]:15.1f} {med[k][2]:15.1f}")
for k in [k for k in kinds if k != "node" and "node" in kinds]:
    print(f"{k} / node: throughput {med[k][0] / med['node'][0]:.2f} x, gateway CPU per request "
          f"{med[k][1] / med['node'][1]:.2f} x")
    per_run = [a / b for a, b in zip(col(k, 2), col("node", 2))]
    print(f"  throughput ratio per run: {' '.join(f'{x:.2f}' for x in per_run)}")
print(f"load average at the end: {rows[-1][5]}")
EOF

if [ -n "$PROFILE" ]; then
  for kind in "${KINDS[@]}"; do
    pid=${COTE_PID_OF[gateway-$kind]}
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "== gateway in front of the $kind replica: top self time (node --cpu-prof)"
    python3 "$ROOT/bench/cpuprofile_top.py" "$PROFILE/$kind"/*.cpuprofile
  done
fi
