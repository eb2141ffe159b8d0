#!/usr/bin/env bash
# What a socket.io call through the gateway costs the gateway (issue 22; docs/benchmarks.md,
# "Socket calls through the gateway"). One release binary of gateway-example: a gateway and one
# replica (todos-a, --store memory) on a private loopback mesh, ten todos on the replica (a
# `find` answers about 1.2 KB), and the socket call probe (bench/relay/calls.js, the official
# socket.io-client on a websocket) logged in on the gateway with the JWT:
#
#   1. CPU: SOCKET_CLIENTS (default 4) probes at once, SOCKET_CALLS (default 5000) calls each, 16
#      in flight per probe; the gateway's CPU µs per call (utime + stime from /proc, which hardly
#      depends on the load) and the calls per second (which does: the Node probes share the
#      cores).
#   2. instructions: the gateway under valgrind's callgrind, a warm-up probe of 200 calls, the
#      counters zeroed, then one probe of SOCKET_CG_CALLS (default 3000) calls one at a time;
#      the gateway's instructions per call (the probe's connect and login are counted in: well
#      under 1 %).
#
#   bench/socket_calls.sh                                 # builds the release binaries first
#   BENCH_GATEWAY_BIN=path SOCKET_BUILD=0 bench/socket_calls.sh
#
# Kills only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/plume-bench-socket-calls.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
CLIENTS=${SOCKET_CLIENTS:-4}
CALLS=${SOCKET_CALLS:-5000}
CG_CALLS=${SOCKET_CG_CALLS:-3000}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

command -v node >/dev/null || { log "node is required for the socket call probe"; exit 1; }
command -v valgrind >/dev/null || { log "valgrind is missing (apt-get install valgrind)"; exit 1; }
bench_bins release "${SOCKET_BUILD:-1}"
log "installing the socket.io client for the probe (npm ci, bench/relay/package-lock.json)"
mkdir -p "$WORK/relay"
npm_ci_copy bench/relay "$WORK/relay" >/dev/null || { log "npm ci failed"; exit 1; }

export PLUME_DISCOVERY=loopback
export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export RUST_LOG=${RUST_LOG:-warn}

pair() { # SUFFIX [WRAPPER...]: a gateway and one replica with ten todos; sets GW and TOKEN
  local sfx=$1 pg pa i
  shift
  local env=(env "PLUME_ENV=bench-calls-$sfx-$$-$RANDOM" "PLUME_DISCOVERY_PORT=$(free_port udp)")
  pg=$(free_port tcp)
  pa=$(free_port tcp)
  start "gateway-$sfx" "${env[@]}" "$@" ${1:+--callgrind-out-file="$WORK/gateway-$sfx.out"} \
    "$GX" gateway --port "$pg"
  start "todos-a-$sfx" "${env[@]}" "$GX" todos --name todos-a --port "$pa" --store memory
  GW="http://127.0.0.1:$pg"
  wait_for "http://127.0.0.1:$pa/todos" "Hello from todos-a" 30000
  for i in $(seq 1 9); do
    curl -sf -m 10 -o /dev/null -X POST "http://127.0.0.1:$pa/todos" \
      -H 'content-type: application/json' -d "{\"text\":\"Buy milk and eggs, item $i of the list\"}"
  done
  TOKEN=$(token "$GW" 300 5)
  wait_for "$GW/todos" "item 9 of the list" 120000 "$TOKEN"
}

probe() { # COUNT IN_FLIGHT: one probe; prints its JSON line, fails on an error
  local out
  out=$(node "$WORK/relay/calls.js" "$GW" "$TOKEN" "$1" "$2")
  printf '%s\n' "$out" | grep -q '"calls"' || { log "probe failed: $out"; exit 1; }
  printf '%s\n' "$out"
}

log "CPU: $CLIENTS probes of $CALLS calls, 16 in flight each"
pair cpu
probe 500 16 >/dev/null
before=$(user_sys_ticks "${PID_OF[gateway-cpu]}")
start_us=$(now_us)
pids=()
for i in $(seq 1 "$CLIENTS"); do
  probe "$CALLS" 16 >"$WORK/probe-$i.json" &
  pids+=("$!")
done
for p in "${pids[@]}"; do wait "$p"; done
end_us=$(now_us)
after=$(user_sys_ticks "${PID_OF[gateway-cpu]}")
put cpu_calls "$((CLIENTS * CALLS))"
put cpu_wall_us "$((end_us - start_us))"
put cpu_ticks_before "${before// /,}"
put cpu_ticks_after "${after// /,}"
put cpu_answer_bytes "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["answer_bytes"])' "$WORK/probe-1.json")"
put cpu_load "$(loadavg)"
stop_pid "${PID_OF[gateway-cpu]}"
stop_pid "${PID_OF[todos-a-cpu]}"

log "instructions: the gateway under callgrind (slow), $CG_CALLS calls one at a time"
pair cg valgrind --tool=callgrind --dump-instr=no --compress-strings=no
probe 200 1 >/dev/null
callgrind_control -z "${PID_OF[gateway-cg]}" >/dev/null 2>&1
probe "$CG_CALLS" 1 >/dev/null
rm -f "$WORK/gateway-cg.out"*
callgrind_control -d "${PID_OF[gateway-cg]}" >/dev/null 2>&1
out=$(find "$WORK" -name 'gateway-cg.out*' | head -1)
[[ -n $out ]] || { log "callgrind wrote no dump"; exit 1; }
put cg_calls "$CG_CALLS"
put cg_ir "$(awk '/^(totals|summary):/ {print $2; exit}' "$out")"
stop_pid "${PID_OF[gateway-cg]}"
stop_pid "${PID_OF[todos-a-cg]}"

python3 - "$RESULTS" "$(getconf CLK_TCK)" <<'PY'
import sys
vals = dict(l.split(None, 1) for l in open(sys.argv[1]).read().splitlines())
tck = int(sys.argv[2])
calls = int(vals["cpu_calls"])
before = [int(x) for x in vals["cpu_ticks_before"].split(",")]
after = [int(x) for x in vals["cpu_ticks_after"].split(",")]
user, system = ((a - b) * 1e6 / tck / calls for a, b in zip(after, before))
rate = calls / (int(vals["cpu_wall_us"]) / 1e6)
ir = int(vals["cg_ir"]) / int(vals["cg_calls"])
print(f"| socket `find` through the gateway ({vals['cpu_answer_bytes']} B answer) | value |")
print("|---|---|")
print(f"| gateway CPU per call (user + system) | {user + system:.1f} µs ({user:.1f} + {system:.1f}) |")
print(f"| calls per second ({calls:,} calls, load average {vals['cpu_load'].strip()}) | {rate:,.0f} |")
print(f"| gateway instructions per call (callgrind) | {ir:,.0f} |")
PY
