#!/usr/bin/env bash
# Where the CPU of one GET goes: the gateway's path against nginx's (issue 22, "GET ≥ 1.25 ×
# nginx"; docs/benchmarks.md, "Gateway under GET load, eighth round"). A gateway and two todos
# replicas (memory store) per gateway binary given, nginx with 2 workers in front of the first
# replica; wrk at 64 connections on each in turn, ANCHOR_CPU_RUNS times (3). Per run, per GET:
#   - user and system CPU of the front (gateway or nginx's workers) and of the replicas (summed),
#     from /proc/<pid>/stat before and after;
#   - wrk's own CPU (its rusage) and how busy the machine was (/proc/stat).
#
#   bench/anchor_cpu.sh                                  # this tree's release build
#   bench/anchor_cpu.sh BIN_A BIN_B                      # two gateway-example binaries, in turn
#
# ANCHOR_CPU_SECONDS (6) per run. Everything on 127.0.0.1; kills only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/plume-anchorcpu.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
SECS=${ANCHOR_CPU_SECONDS:-6}
RUNS=${ANCHOR_CPU_RUNS:-3}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=bench/anchors.sh
source "$ROOT/bench/anchors.sh"
need_wrk
need_nginx

BINS=("$@")
if [[ ${#BINS[@]} -eq 0 ]]; then
  build_bench release
  BINS=("$TARGET/release/gateway-example")
else
  TARGET=$(cargo_target_dir)
  cargo build --release -q -p plume-bench
fi
PROBE="$TARGET/release/probe"
export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export RUST_LOG=${RUST_LOG:-warn} PLUME_DISCOVERY=loopback
TICK_US=$((1000000 / $(getconf CLK_TCK)))

machine() { awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; } # busy and idle jiffies

run() { # NAME URL TOKEN FRONT_PIDS REPLICA_PIDS: one wrk run, its CPU per GET
  local name=$1 url=$2 tok=$3 front=$4 reps=$5 hdr=() f0 f1 r0 r1 m0 m1 n
  [[ -n $tok ]] && hdr=(-H "Authorization: Bearer $tok")
  # shellcheck disable=SC2086 # pid lists, one word each
  f0=$(user_sys_ticks $front) r0=$(user_sys_ticks $reps) m0=$(machine)
  /usr/bin/time -f "%U %S" -o "$WORK/time" wrk -t2 -c64 -d"${SECS}s" "${hdr[@]}" "$url" >"$WORK/wrk"
  # shellcheck disable=SC2086
  f1=$(user_sys_ticks $front) r1=$(user_sys_ticks $reps) m1=$(machine)
  n=$(awk '/requests in/ {print $1}' "$WORK/wrk")
  python3 - "$name" "$n" "$SECS" "$TICK_US" "$f0" "$f1" "$r0" "$r1" "$m0" "$m1" "$(cat "$WORK/time")" <<'EOF'
import sys
name, n, secs, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
f0, f1, r0, r1, m0, m1, wt = ([float(x) for x in a.split()] for a in sys.argv[5:12])
per = lambda a, b, i: (b[i] - a[i]) * tick / n
busy, idle = m1[0] - m0[0], m1[1] - m0[1]
print(f"{name:14} {n / secs:8.0f} req/s  front user {per(f0, f1, 0):4.1f} sys {per(f0, f1, 1):4.1f} µs"
      f"  replicas user {per(r0, r1, 0):4.1f} sys {per(r0, r1, 1):4.1f} µs"
      f"  wrk {(wt[0] + wt[1]) * 1e6 / n:4.1f} µs  machine {100 * busy / (busy + idle):3.0f} % busy")
EOF
}

declare -a NAMES=() URLS=() TOKS=() FRONTS=() REPS=()
for i in "${!BINS[@]}"; do
  GX=${BINS[$i]}
  topology "cpu$i"
  NAMES+=("gateway-$i") URLS+=("$TOPO_GW/todos") TOKS+=("$(token "$TOPO_GW")")
  FRONTS+=("${PID_OF[gateway-cpu$i]}")
  REPS+=("${PID_OF[todos-a-cpu$i]} ${PID_OF[todos-b-cpu$i]}")
  if [[ $i -eq 0 ]]; then
    port=$(free_port tcp)
    nginx_conf 2 "$port" "$TOPO_PA" "$WORK/nginx2"
    start nginx2 nginx -e "$WORK/nginx2/error.log" -p "$WORK/nginx2" -c "$WORK/nginx2/nginx.conf"
    wait_for "http://127.0.0.1:$port/todos" "Hello from todos-a" 30000
    NGINX_URL="http://127.0.0.1:$port/todos"
    NGINX_WORKERS=$(pgrep -P "${PID_OF[nginx2]}" | tr '\n' ' ')
    NGINX_REPS="${PID_OF[todos-a-cpu0]} ${PID_OF[todos-b-cpu0]}"
  fi
done
NAMES+=(nginx-2-workers) URLS+=("$NGINX_URL") TOKS+=("") FRONTS+=("$NGINX_WORKERS") REPS+=("$NGINX_REPS")
for i in "${!NAMES[@]}"; do # warm-up, not recorded
  hdr=()
  [[ -n ${TOKS[$i]} ]] && hdr=(-H "Authorization: Bearer ${TOKS[$i]}")
  wrk -t2 -c64 -d2s "${hdr[@]}" "${URLS[$i]}" >/dev/null
done
for r in $(seq 1 "$RUNS"); do
  for i in "${!NAMES[@]}"; do
    run "${NAMES[$i]}" "${URLS[$i]}" "${TOKS[$i]}" "${FRONTS[$i]}" "${REPS[$i]}"
  done
done
log "load average $(cut -d' ' -f1-3 /proc/loadavg)"
