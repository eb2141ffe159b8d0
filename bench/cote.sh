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

NS=""
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  PIDS=()
  [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null || true
  NS=""
}
trap 'cleanup; rm -rf "$WORK"' EXIT

topology_start() { # a fresh loopback-only namespace
  cleanup
  NS="cote-bench-$$-$RANDOM"
  ip netns add "$NS"
  ip -n "$NS" link set lo up
}

spawn() { # NAME CMD...: run CMD in the namespace, output in $WORK/NAME.log
  local name=$1
  shift
  ip netns exec "$NS" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}

wait_line() { # NAME TEXT: wait (30 s at most) until NAME's log has TEXT
  local i
  for i in $(seq 300); do
    grep -q "$2" "$WORK/$1.log" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$1 never printed '$2':"
  cat "$WORK/$1.log" >&2
  exit 1
}

COTE_ENV=(env COTE_HELLO_INTERVAL=500 COTE_CHECK_INTERVAL=1000 COTE_NODE_TIMEOUT=1500)
plume_replica() { spawn "$1" "${COTE_ENV[@]}" PLUME_DISCOVERY=cote "$GX" todos --name "$1" --port "$2" --store memory; wait_line "$1" listening; }
node_replica() { spawn "$1" env PORT="$2" NAME="$1" node "$WORK/node/replica.mjs"; wait_line "$1" LISTENING; }
node_gateway() { spawn gateway env PORT=3030 node "$WORK/node/gateway.mjs"; wait_line gateway "SERVICE todos"; }
plume_gateway() { spawn gateway "${COTE_ENV[@]}" "$GX" cote-gateway --port 3030; wait_line gateway "SERVICE todos"; }

URL='http://127.0.0.1:3030/todos?$limit=1'

warm_up() { # until every replica named in $@ has answered (200 calls at most)
  local seen="" i r
  for i in $(seq 200); do
    r=$(ip netns exec "$NS" curl -s "$URL" | python3 -c 'import json,sys; b=json.load(sys.stdin); b=b if isinstance(b,list) else b["data"]; print(b[0]["replica"])' || true)
    case " $seen " in *" $r "*) ;; *) seen="$seen $r" ;; esac
    local missing=0 want
    for want in "$@"; do case " $seen " in *" $want "*) ;; *) missing=1 ;; esac; done
    [ "$missing" = 0 ] && return 0
  done
  log "replicas $* did not all answer (saw:$seen)"
  exit 1
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

cleanup
cat "$RESULTS"
