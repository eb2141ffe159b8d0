#!/usr/bin/env bash
# The scale curves of issue 22 for nodes, services and the NATS backend (docs/benchmarks.md,
# "Scale curves: nodes, services, NATS"): bench/curve_nodes.sh, bench/curve_services.sh and
# bench/curve_nats.sh, then bench/scale_report.py, which rewrites only that section and draws
# one SVG per curve in docs/img/ from the run's own figures.
#
#   bench/scale.sh                           # build, measure all three, rewrite the section
#   BENCH_SCALE=nodes,nats bench/scale.sh    # only some curves (the others' rows say "no number")
#
# Sizes: BENCH_NODES (default "2 8 16 32 64"), BENCH_SERVICES ("1 100 1000"), BENCH_NATS_NODES
# ("2 8 16"); BENCH_RUNS (3) runs per point, BENCH_SECONDS (5) s per wrk run,
# BENCH_IDLE_SECONDS (10) s of idle window for the nodes; BENCH_PROFILE=debug uses debug builds
# (to check the script: its figures do not count); BENCH_DOC another file than
# docs/benchmarks.md; BENCH_KEEP=1 keeps the logs.
# Everything runs on 127.0.0.1, the nodes curve in a network namespace this script creates (lo
# only) and deletes. Exits non-zero when a figure could not be measured. Kills only the
# processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECONDS:-5}
CURVES=${BENCH_SCALE:-nodes,services,nats}
WORK=$(mktemp -d /tmp/plume-scale.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=bench/scale_lib.sh
source "$ROOT/bench/scale_lib.sh"
trap 'scale_netns_down; cleanup' EXIT

need_wrk
command -v ip >/dev/null || { log "ip (iproute2) is required for the nodes curve"; exit 1; }
# 64 nodes keep 63 links each, and wrk 64 connections: more descriptors than a default shell's.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

PROFILE=${BENCH_PROFILE:-release}
build_bench "$PROFILE"
GX="$TARGET/$PROFILE/gateway-example"
PROBE="$TARGET/$PROFILE/probe"
MESH_NODE="$TARGET/$PROFILE/mesh-node"
SERVICES_NODE="$TARGET/$PROFILE/services-node"

export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export RUST_LOG=${RUST_LOG:-warn}
unset PLUME_DISCOVERY PLUME_DISCOVERY_PORT PLUME_NATS_URL PLUME_ENV

wait_for() { # URL NEEDLE TIMEOUT_MS [TOKEN]: wait for a 200 carrying NEEDLE
  PROBE_TOKEN=${4:-} "$PROBE" until "$1" "$2" "$3" >/dev/null
}

GW=""
TOKEN=""
login() { # log in as the demo user at $GW (30 s at most); sets TOKEN
  local out
  out=$(curl -s -m 30 --retry 20 --retry-connrefused --retry-delay 1 -X POST "$GW/authentication" \
    -H 'content-type: application/json' \
    -d '{"strategy":"local","email":"demo@plume.local","password":"plume-demo"}' || true)
  TOKEN=$(printf '%s' "$out" | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["accessToken"])
except Exception: pass' 2>/dev/null || true)
  [[ -n $TOKEN ]] || { log "login at $GW failed: $out"; return 1; }
}

put machine_nproc "$(nproc)"
put date "$(date -u +%Y-%m-%dT%H:%MZ)"
put commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
put profile "$PROFILE"
put curves "$CURVES"
put idle_seconds "${BENCH_IDLE_SECONDS:-10}"

# shellcheck source=bench/curve_nodes.sh
source "$ROOT/bench/curve_nodes.sh"
# shellcheck source=bench/curve_services.sh
source "$ROOT/bench/curve_services.sh"
# shellcheck source=bench/curve_nats.sh
source "$ROOT/bench/curve_nats.sh"

if [[ ,$CURVES, == *,nodes,* ]]; then
  scale_netns_up
  run_nodes_curve
  scale_netns_down
fi
[[ ,$CURVES, == *,services,* ]] && run_services_curve
[[ ,$CURVES, == *,nats,* ]] && run_nats_curve

log "writing the scale curves section of ${BENCH_DOC:-docs/benchmarks.md}"
python3 bench/scale_report.py "$RESULTS" "${BENCH_DOC:-docs/benchmarks.md}"
