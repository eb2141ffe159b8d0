#!/usr/bin/env bash
# Load-independent cost of one GET through the gateway, TCP mesh against NATS (issue 22, "NATS
# GET ≥ 0.7 × TCP"; docs/benchmarks.md, "NATS GET: where the CPU goes"). A gateway and one todos
# replica (memory store; NATS_CPU_REPLICAS of them, 1 by default, to see the queue group spread
# calls over several, as at bench/scale.sh's 8 and 16 nodes) per backend, a nats-server on
# 127.0.0.1 for the NATS pair; a bounded
# number of GETs (bench's `probe load`) through each gateway, then per request:
#   - CPU: utime+stime ticks of /proc/<pid>/stat of the gateway, the replicas (summed) and
#     nats-server, before and after (µs per request; load changes how long a run takes, hardly what it costs);
#   - NATS messages and bytes per request, in and out of nats-server (its /varz counters, before
#     and after the same run: what a GET costs the server in messages);
#   - with NATS_CPU_STRACE=1: syscalls per request of each process (`strace -c -f`, attached for
#     a second bounded run);
#   - with NATS_CPU_CALLGRIND=1 (instead of the CPU figures): instructions per request of each
#     gateway and replica, run under callgrind (counters zeroed before the run, dumped after; slow: use few requests).
#
#   bench/nats_cpu.sh                          # release build, 20,000 GETs on 64 connections
#   NATS_CPU_REQUESTS=2000 NATS_CPU_CALLGRIND=1 BENCH_PROFILE=debug bench/nats_cpu.sh
#   NATS_CPU_REPLICAS=7 bench/nats_cpu.sh      # 7 replicas: the 8-node point of the curve
#
# NATS_CPU_CONNS (64) connections; NATS_CPU_NO_BUILD=1 skips the build and NATS_CPU_GX=PATH uses
# another gateway-example binary (e.g. a copy built from main, to compare before and after);
# BENCH_KEEP=1 keeps the logs (and callgrind files). Everything
# runs on 127.0.0.1; kills only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/plume-natscpu.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
SECS=5
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

REQS=${NATS_CPU_REQUESTS:-20000}
CONNS=${NATS_CPU_CONNS:-64}
REPLICAS=${NATS_CPU_REPLICAS:-1}
[[ $REPLICAS =~ ^[1-9][0-9]?$ ]] || { log "NATS_CPU_REPLICAS: 1 to 99"; exit 1; }
PROFILE=${BENCH_PROFILE:-release}
if [[ -z ${NATS_CPU_NO_BUILD:-} ]]; then
  build_bench "$PROFILE"
else
  TARGET=$(cargo_target_dir)
fi
GX=${NATS_CPU_GX:-"$TARGET/$PROFILE/gateway-example"}
PROBE="$TARGET/$PROFILE/probe"
command -v nats-server >/dev/null || { log "nats-server is required (apt-get install nats-server)"; exit 1; }
[[ -z ${NATS_CPU_STRACE:-} ]] || command -v strace >/dev/null || { log "strace is required"; exit 1; }
[[ -z ${NATS_CPU_CALLGRIND:-} ]] || command -v valgrind >/dev/null || { log "valgrind is required"; exit 1; }

export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export RUST_LOG=${RUST_LOG:-warn}
unset PLUME_DISCOVERY PLUME_DISCOVERY_PORT PLUME_NATS_URL PLUME_ENV
TICK_US=$((1000000 / $(getconf CLK_TCK)))


NATS_PORT=$(free_port tcp)
NATS_MON=$(free_port tcp)
start nats nats-server -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON"
varz() { # in_msgs out_msgs in_bytes out_bytes of nats-server, and its subject matches that
  # missed its subject cache (a new subject is matched against every subscription and cached)
  local v s
  v=$(curl -s -m 10 "http://127.0.0.1:$NATS_MON/varz")
  s=$(curl -s -m 10 "http://127.0.0.1:$NATS_MON/subsz")
  python3 -c 'import json,sys
v, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(v["in_msgs"], v["out_msgs"], v["in_bytes"], v["out_bytes"], round(s["num_matches"] * (1 - s["cache_hit_rate"])))' "$v" "$s"
}
wait_line nats "Server is ready"

pair() { # BACKEND: a gateway and REPLICAS replicas; sets GW_URL, GW_PID, REP_PIDS
  local b=$1 pg pr env wrap=() i
  if [[ $b == nats ]]; then
    env=(env "PLUME_ENV=natscpu-$$-$RANDOM" PLUME_DISCOVERY=nats "PLUME_NATS_URL=nats://127.0.0.1:$NATS_PORT")
  else
    env=(env "PLUME_ENV=natscpu-$$-$RANDOM" PLUME_DISCOVERY=loopback "PLUME_DISCOVERY_PORT=$(free_port udp)")
  fi
  if [[ -n ${NATS_CPU_CALLGRIND:-} ]]; then
    wrap=(valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.%p")
  fi
  pg=$(free_port tcp)
  start "gw-$b" "${env[@]}" "${wrap[@]}" "$GX" gateway --port "$pg"
  GW_URL="http://127.0.0.1:$pg"
  GW_PID=${PID_OF[gw-$b]}
  REP_PIDS=()
  for i in $(seq 1 "$REPLICAS"); do
    pr=$(free_port tcp)
    start "todos-$b-$i" "${env[@]}" "${wrap[@]}" "$GX" todos --name "todos-$i" --port "$pr" --store memory
    REP_PIDS+=("${PID_OF[todos-$b-$i]}")
  done
  PROBE_INTERVAL_MS=20 "$PROBE" until "$GW_URL/distribution/mounted?providers" \
    "\"count\":1,\"providers\":$REPLICAS}" 120000 >/dev/null
}

measure() { # BACKEND TOKEN: one bounded run; puts CPU µs per request of each process
  local b=$1 tok=$2 p done procs=(gateway:"$GW_PID" replica:"${REP_PIDS[*]}") before=() after=() i
  [[ $b == nats ]] && procs+=(natsserver:"${PID_OF[nats]}")
  PROBE_TOKEN=$tok "$PROBE" load "$GW_URL/todos" "$CONNS" 30000 500 "$WORK/warm-$b.txt" >/dev/null
  # shellcheck disable=SC2086 # the replicas' pids, one word each
  for p in "${procs[@]}"; do before+=("$(user_sys_ticks ${p#*:})"); done
  local v0 v1
  v0=$(varz)
  PROBE_TOKEN=$tok "$PROBE" load "$GW_URL/todos" "$CONNS" 600000 "$REQS" "$WORK/load-$b.txt" >/dev/null
  # shellcheck disable=SC2086
  for p in "${procs[@]}"; do after+=("$(user_sys_ticks ${p#*:})"); done
  v1=$(varz)
  done=$(awk '$3 == 200' "$WORK/load-$b.txt" | wc -l)
  [[ $done -gt 0 ]] || { log "$b: no GET answered 200"; return 1; }
  put "${b}_ok" "$done"
  if [[ $b == nats ]]; then
    put "nats_server_per_req" "$(python3 -c 'import sys
a, b = (list(map(int, s.split())) for s in sys.argv[1:3])
n = int(sys.argv[3])
d = [(y - x) / n for x, y in zip(a, b)]
print(f"messages in {d[0]:.2f} out {d[1]:.2f}, bytes in {d[2]:,.0f} out {d[3]:,.0f}, subject cache misses {d[4]:.2f}")' "$v0" "$v1" "$done")"
  fi
  for i in "${!procs[@]}"; do
    # user and system ticks, before and after: µs per request of each, and their sum
    read -r u0 s0 <<<"${before[$i]}"
    read -r u1 s1 <<<"${after[$i]}"
    put "${b}_${procs[$i]%%:*}_cpu_us_per_req" "$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t="$TICK_US" -v n="$done" \
      'BEGIN { printf "%.1f (user %.1f, system %.1f)", (u + s) * t / n, u * t / n, s * t / n }')"
  done
}

strace_run() { # BACKEND TOKEN: syscalls per request of each process (the replicas summed), strace attached
  local b=$1 tok=$2 pids=("$GW_PID" "${REP_PIDS[*]}") names=(gateway replica) i p spids=() done args
  [[ $b == nats ]] && pids+=("${PID_OF[nats]}") && names+=(natsserver)
  for i in "${!pids[@]}"; do
    args=()
    for p in ${pids[$i]}; do args+=(-p "$p"); done
    strace -c -f -q "${args[@]}" -o "$WORK/strace-$b-${names[$i]}.txt" &
    spids+=("$!")
  done
  sleep 1 # strace attaches asynchronously; its own output is the only signal, so give it a moment
  PROBE_TOKEN=$tok "$PROBE" load "$GW_URL/todos" "$CONNS" 600000 "$REQS" "$WORK/strace-load-$b.txt" >/dev/null
  for i in "${spids[@]}"; do kill -INT "$i" 2>/dev/null || true; done
  for i in "${spids[@]}"; do wait "$i" 2>/dev/null || true; done
  done=$(awk '$3 == 200' "$WORK/strace-load-$b.txt" | wc -l)
  for i in "${!names[@]}"; do
    python3 - "$WORK/strace-$b-${names[$i]}.txt" "$done" "${b}_${names[$i]}" >>"$RESULTS" <<'EOF'
import sys
path, done, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls = {}
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls[f[-1]] = int(f[3])
total = sum(calls.values())
print(f"{key}_syscalls_per_req {total / done:.2f}")
top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
print(f"{key}_top " + " ".join(f"{k}={v / done:.2f}" for k, v in top))
EOF
  done
}

callgrind_run() { # BACKEND TOKEN: instructions per request of the gateway and the replicas (summed)
  local b=$1 tok=$2 done p q files
  for p in "$GW_PID" "${REP_PIDS[@]}"; do callgrind_control -z "$p" >/dev/null 2>&1; done
  PROBE_TOKEN=$tok "$PROBE" load "$GW_URL/todos" "$CONNS" 600000 "$REQS" "$WORK/cg-load-$b.txt" >/dev/null
  for p in "$GW_PID" "${REP_PIDS[@]}"; do callgrind_control -d "$p" >/dev/null 2>&1; done
  done=$(awk '$3 == 200' "$WORK/cg-load-$b.txt" | wc -l)
  for p in gateway:"$GW_PID" replica:"${REP_PIDS[*]}"; do
    files=()
    for q in ${p#*:}; do files+=("$(ls -t "$WORK/callgrind.$q".* | head -1)"); done
    python3 - "$done" "${b}_${p%%:*}" "${files[@]}" >>"$RESULTS" <<'EOF'
import sys
done, key, paths = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
total = 0
for path in paths:
    for line in open(path):
        if line.startswith("summary:") or line.startswith("totals:"):
            total += int(line.split()[1])
            break
print(f"{key}_instr_per_req {total // done}")
EOF
  done
}

for b in tcp nats; do
  pair "$b"
  tok=$(token "$GW_URL")
  if [[ -n ${NATS_CPU_CALLGRIND:-} ]]; then
    PROBE_TOKEN=$tok "$PROBE" load "$GW_URL/todos" "$CONNS" 120000 200 "$WORK/warm.txt" >/dev/null
    callgrind_run "$b" "$tok"
  else
    measure "$b" "$tok"
    [[ -z ${NATS_CPU_STRACE:-} ]] || strace_run "$b" "$tok"
  fi
  stop_pid "$GW_PID"
  for p in "${REP_PIDS[@]}"; do stop_pid "$p"; done
done
cat "$RESULTS"
