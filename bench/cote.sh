#!/usr/bin/env bash
# Benchmarks of the cote interop (docs/benchmarks.md, "feathers-distributed fleets", and
# docs/cote.md): GET /todos?$limit=1 with wrk through
#   1. a Node feathers-distributed gateway → one Plume replica   vs   → one Node replica;
#   2. a Plume gateway (cote-gateway) → two Node replicas         vs   a Node gateway → the same.
#
#   bench/cote.sh        # needs root (a network namespace), node, npm, wrk; prints a table
#
# Every topology runs in its own loopback-only network namespace (cote broadcasts), deleted on
# exit. Each figure is the median of BENCH_RUNS (default 3) runs of BENCH_SECONDS (default 5) s,
# after a warm-up. Kills only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECONDS:-5}
WORK=$(mktemp -d /tmp/plume-cote-bench.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=scripts/lib/npm.sh
source "$ROOT/scripts/lib/npm.sh"

need_tools bench/cote.sh node npm ip
need_wrk
log "building the release gateway-example"
cargo build --release -q -p gateway-example
GX="$(cargo_target_dir)/release/gateway-example"
mkdir -p "$WORK/node"
npm_ci_copy tests/cote "$WORK/node" >/dev/null

# shellcheck source=bench/cote_lib.sh
source "$ROOT/bench/cote_lib.sh"
trap 'cote_cleanup; rm -rf "$WORK"' EXIT
URL=$COTE_URL

topology_start() { # a fresh loopback-only namespace (the previous one's processes gone)
  cote_cleanup
  netns_new
}

measure() { # LABEL: the median req/s of RUNS wrk runs, with the load average
  local label=$1 run rps all=()
  ip netns exec "$NS" wrk -t2 -c32 -d1s "$URL" >/dev/null
  for run in $(seq "$RUNS"); do
    ip netns exec "$NS" wrk -t2 -c32 -d"${SECS}s" "$URL" >"$WORK/wrk.txt"
    if grep -q 'Non-2xx\|Socket errors' "$WORK/wrk.txt"; then
      log "$label: failed calls"
      cat "$WORK/wrk.txt" >&2
      exit 1
    fi
    rps=$(awk '/Requests\/sec/ {print int($2)}' "$WORK/wrk.txt")
    all+=("$rps")
  done
  rps=$(printf '%s\n' "${all[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")
  put "$label" "$rps (load $(loadavg))"
  log "$label: $rps req/s (runs: ${all[*]}, load $(loadavg))"
}

topology_start
plume_replica todos-r 3033
node_gateway
warm_up todos-r
measure "node-gateway→plume-replica"

topology_start
node_replica node-1 3034
node_gateway
warm_up node-1
measure "node-gateway→node-replica"

topology_start
node_replica node-1 3034
node_replica node-2 3035
plume_gateway
warm_up node-1 node-2
measure "plume-gateway→2-node-replicas"

topology_start
node_replica node-1 3034
node_replica node-2 3035
node_gateway
warm_up node-1 node-2
measure "node-gateway→2-node-replicas"

cote_cleanup
cat "$RESULTS"
