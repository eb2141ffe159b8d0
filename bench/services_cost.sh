#!/usr/bin/env bash
# What one GET costs the gateway with 1 and with 1,000 services mounted, in figures that do not
# depend on the machine's load (docs/benchmarks.md, "GET on one of 1,000 services: the cost
# per request"; issue 22). The same processes as the services curve (bench/curve_services.sh):
# a fresh `gateway-example gateway` and three `services-node` publishers of N services each on
# a private loopback mesh. For each N, once all 3 N providers are mounted and BENCH_SETTLE (2) s
# later:
#   - idle: the CPU ticks (/proc, user + system) of the gateway (each second, and in all) and of
#     the publishers over BENCH_IDLE_SECONDS (10) s;
#   - BENCH_REQUESTS (20000) GET /svc-(N-1) with the JWT (probe load, BENCH_CONNS (4)
#     connections): the gateway's CPU ticks (user/system), minor page faults and context
#     switches per request, the publishers' ticks and switches; for orientation only (they
#     depend on the load) requests per second, p50/p99 and each side's share of a core;
#   - with BENCH_PERF=1, perf record (cpu-clock, call graphs) of the gateway and of the
#     publishers during those requests, in $BENCH_OUT/perf.N.{gateway,publishers}.data;
#   - with BENCH_CALLGRIND=1 the gateway runs under valgrind's callgrind instead, collecting
#     only while BENCH_CALLGRIND_REQUESTS (2000) GETs run: its instructions per request
#     (BENCH_CACHE_SIM=1: and the simulated cache misses), the callgrind file kept in
#     $BENCH_OUT for callgrind_annotate.
# An N may come several times: BENCH_SERVICES="1 1000 1 1000 1 1000" interleaves the rounds, and
# the summary at the end gives each figure's median per N (requests per second and instructions
# per request also as a ratio to the first N).
#
#   BENCH_PROFILE=release BENCH_CALLGRIND=1 BENCH_CONNS=64 bench/services_cost.sh
#   BENCH_PROFILE=release BENCH_CONNS=64 BENCH_SERVICES="1 1000 1 1000 1 1000" bench/services_cost.sh
#
# BENCH_SERVICES ("1 1000"), BENCH_PROFILE (debug, or release), BENCH_OUT (a directory for the
# figures and profiles; default a temporary one), BENCH_BIN_DIR (another build's binaries). Everything on 127.0.0.1; kills only the
# processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/plume-svc-cost.XXXXXX)
# The figures (and profiles) stay; the logs in $WORK go unless BENCH_KEEP=1.
OUT=${BENCH_OUT:-$(mktemp -d /tmp/plume-svc-cost-out.XXXXXX)}
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=bench/scale_lib.sh
source "$ROOT/bench/scale_lib.sh"
trap cleanup EXIT

REQUESTS=${BENCH_REQUESTS:-20000}
CG_REQUESTS=${BENCH_CALLGRIND_REQUESTS:-2000}
IDLE=${BENCH_IDLE_SECONDS:-10}
PROFILE=${BENCH_PROFILE:-debug}
if [[ ${BENCH_CALLGRIND:-0} == 1 ]]; then
  command -v valgrind >/dev/null || { log "valgrind is required for BENCH_CALLGRIND=1"; exit 1; }
fi
scale_binaries "$PROFILE"
# BENCH_BIN_DIR: a directory with the binaries of another build (gateway-example, probe,
# services-node), to count a before and an after with the same script.
if [[ -n ${BENCH_BIN_DIR:-} ]]; then
  GX=$BENCH_BIN_DIR/gateway-example
  PROBE=$BENCH_BIN_DIR/probe
  SERVICES_NODE=$BENCH_BIN_DIR/services-node
fi

ticks_of() { # PID...: the sum of their CPU ticks
  local t=0 pid
  for pid in "$@"; do t=$((t + $(cpu_ticks "$pid"))); done
  echo "$t"
}

user_sys_of() { # PID: "user system" clock ticks so far
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo "0 0"; return; }
  awk '{print $12, $13}' <<<"${stat##*) }"
}

faults_of() { # PID: its minor page faults so far
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  awk '{print $8}' <<<"${stat##*) }"
}

switches_of() { # PID...: the sum of their threads' context switches (voluntary + not)
  local pid
  for pid in "$@"; do cat /proc/"$pid"/task/*/status 2>/dev/null || true; done |
    awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}'
}

cost_point() { # N
  local n=$1 pg gw prefix="cost-$1" pids=() pubs=() gwpid token t0 t1 p1 lines cg=() i
  pg=$(free_port tcp)
  gw="http://127.0.0.1:$pg"
  local env=(env "PLUME_ENV=bench-cost-$$-$n-$RANDOM" PLUME_DISCOVERY=loopback
    "PLUME_DISCOVERY_PORT=$(free_port udp)")
  if [[ ${BENCH_CALLGRIND:-0} == 1 ]]; then
    cg=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$OUT/callgrind.$n.%p")
    # BENCH_CACHE_SIM=1: also the simulated cache misses (D1, LL) per request.
    [[ ${BENCH_CACHE_SIM:-0} == 1 ]] && cg+=(--cache-sim=yes)
  fi
  start "gateway-$prefix" "${env[@]}" "${cg[@]}" "$GX" gateway --port "$pg"
  gwpid=${PID_OF[gateway-$prefix]}
  pids+=("$gwpid")
  PROBE_INTERVAL_MS=100 "$PROBE" until "$gw/distribution/mounted" '"count":0}' 120000 >/dev/null || {
    log "services $n: the gateway did not start"
    stop_group "${pids[@]}"
    return 1
  }
  token=$(token "$gw" 20 60)
  for i in 1 2 3; do
    start "$prefix-p-$i" "${env[@]}" "$SERVICES_NODE" "p$i" "$n"
    pids+=("${PID_OF[$prefix-p-$i]}")
    pubs+=("${PID_OF[$prefix-p-$i]}")
  done
  PROBE_INTERVAL_MS=200 "$PROBE" until "$gw/distribution/mounted?providers" \
    "\"count\":$n,\"providers\":$((3 * n))}" 600000 >/dev/null || {
    log "services $n: not all 3 × $n providers"
    stop_group "${pids[@]}"
    return 1
  }
  PROBE_TOKEN=$token "$PROBE" until "$gw/svc-$((n - 1))" "svc-$((n - 1)) on p" 60000 >/dev/null
  log "services $n: all mounted"
  # BENCH_SETTLE (2) s for the mount's stragglers (subscriptions, first calls) before the idle
  # window; 0 measures as the services curve does, at once.
  sleep "${BENCH_SETTLE:-2}"
  t0=$(ticks_of "$gwpid")
  local p0
  p0=$(ticks_of "${pubs[@]}")
  local series="" last=$t0 now_t j
  for ((j = 0; j < IDLE; j++)); do
    sleep 1
    now_t=$(ticks_of "$gwpid")
    series+="$((now_t - last)) "
    last=$now_t
  done
  [[ $IDLE == 0 ]] || put "services_${n}_idle_gateway_ticks_each_second" "${series% }"
  [[ $IDLE == 0 ]] || put "services_${n}_idle_gateway_ticks_per_s" \
    "$(awk -v a="$t0" -v b="$(ticks_of "$gwpid")" -v s="$IDLE" 'BEGIN {printf "%.2f", (b - a) / s}')"
  [[ $IDLE == 0 ]] || put "services_${n}_idle_publishers_ticks_per_s" \
    "$(awk -v a="$p0" -v b="$(ticks_of "${pubs[@]}")" -v s="$IDLE" 'BEGIN {printf "%.2f", (b - a) / s}')"
  if [[ ${#cg[@]} -gt 0 ]]; then
    callgrind_control -z "$gwpid" >/dev/null
    callgrind_control -i on "$gwpid" >/dev/null
    PROBE_TOKEN=$token "$PROBE" load "$gw/svc-$((n - 1))" "${BENCH_CONNS:-4}" 600000 "$CG_REQUESTS" "$WORK/cg-$n.txt" >/dev/null
    callgrind_control -i off "$gwpid" >/dev/null
    callgrind_control -d "cost-$n" "$gwpid" >/dev/null
    # The dump just asked for (named by its trigger): the instructions of those requests.
    local dump
    dump=$(grep -l "^desc: Trigger: dump cost-$n\$" "$OUT/callgrind.$n.$gwpid".* 2>/dev/null | head -n 1)
    put "services_${n}_callgrind_instructions" "$(awk '/^totals:/ {print $2}' "${dump:-/dev/null}")"
    lines=$(awk '$3 == 200' "$WORK/cg-$n.txt" | wc -l)
    put "services_${n}_callgrind_requests" "$lines"
  else
    local perf=()
    if [[ ${BENCH_PERF:-0} == 1 ]]; then
      perf record -q -e cpu-clock -F 999 -g -o "$OUT/perf.$n.gateway.data" -p "$gwpid" >/dev/null 2>&1 &
      perf+=("$!")
      perf record -q -e cpu-clock -F 999 -g -o "$OUT/perf.$n.publishers.data" \
        -p "$(IFS=,; echo "${pubs[*]}")" >/dev/null 2>&1 &
      perf+=("$!")
      sleep 1
    fi
    t0=$(ticks_of "$gwpid")
    p0=$(ticks_of "${pubs[@]}")
    local s0 q0 f0 us0
    us0=$(user_sys_of "$gwpid")
    f0=$(faults_of "$gwpid")
    s0=$(switches_of "$gwpid")
    q0=$(switches_of "${pubs[@]}")
    PROBE_TOKEN=$token "$PROBE" load "$gw/svc-$((n - 1))" "${BENCH_CONNS:-4}" 600000 "$REQUESTS" "$WORK/load-$n.txt" >/dev/null
    t1=$(ticks_of "$gwpid")
    p1=$(ticks_of "${pubs[@]}")
    put "services_${n}_gateway_user_system_ticks_per_1000_requests" "$(awk -v r="$REQUESTS" \
      -v a="$us0" -v b="$(user_sys_of "$gwpid")" 'BEGIN {split(a, x, " "); split(b, y, " ");
        printf "%.2f/%.2f", (y[1] - x[1]) * 1000 / r, (y[2] - x[2]) * 1000 / r}')"
    put "services_${n}_gateway_minor_faults_per_1000_requests" \
      "$(awk -v a="$f0" -v b="$(faults_of "$gwpid")" -v r="$REQUESTS" 'BEGIN {printf "%.1f", (b - a) * 1000 / r}')"
    put "services_${n}_switches_per_request_gateway_publishers" \
      "$(awk -v a="$s0" -v b="$(switches_of "$gwpid")" -v c="$q0" -v d="$(switches_of "${pubs[@]}")" \
        -v r="$REQUESTS" 'BEGIN {printf "%.3f/%.3f", (b - a) / r, (d - c) / r}')"
    if [[ ${#perf[@]} -gt 0 ]]; then
      kill -INT "${perf[@]}" 2>/dev/null || true
      wait "${perf[@]}" 2>/dev/null || true
    fi
    lines=$(awk '$3 == 200' "$WORK/load-$n.txt" | wc -l)
    put "services_${n}_requests_ok" "$lines"
    put "services_${n}_gateway_ticks_per_1000_requests" \
      "$(awk -v a="$t0" -v b="$t1" -v r="$lines" 'BEGIN {printf "%.2f", (b - a) * 1000 / r}')"
    # Load-dependent, for orientation only: the latency percentiles of these requests.
    put "services_${n}_latency_p50_p99_us" "$(awk '$3 == 200 {print $2 - $1}' "$WORK/load-$n.txt" |
      sort -n | awk '{v[NR] = $1} END {printf "%d/%d", v[int(NR * 0.5)], v[int(NR * 0.99)]}')"
    # Also load-dependent: requests per second, and the share of a core the gateway and the
    # publishers had (ticks are 1/100 s).
    put "services_${n}_rps" "$(awk 'NR == 1 {a = $1; b = $2} {if ($1 < a) a = $1; if ($2 > b) b = $2}
      END {printf "%.0f", NR / ((b - a) / 1e6)}' "$WORK/load-$n.txt")"
    put "services_${n}_cpu_gateway_publishers_pct" "$(awk -v g="$((t1 - t0))" -v p="$((p1 - p0))" '
      NR == 1 {a = $1; b = $2} {if ($1 < a) a = $1; if ($2 > b) b = $2}
      END {s = (b - a) / 1e6; printf "%.0f/%.0f", g / s, p / s}' "$WORK/load-$n.txt")"
    put "services_${n}_publishers_ticks_per_1000_requests" \
      "$(awk -v a="$p0" -v b="$p1" -v r="$lines" 'BEGIN {printf "%.2f", (b - a) * 1000 / r}')"
  fi
  stop_group "${pids[@]}"
}

for n in ${BENCH_SERVICES:-1 1000}; do cost_point "$n"; done
# Each N may come several times (BENCH_SERVICES="1 1000 1 1000 1 1000": interleaved rounds);
# the summary gives the median of each figure per N, and for requests per second and the
# instructions per request the ratio to the first N.
python3 - "$RESULTS" >>"$RESULTS" <<'PY'
import re, statistics, sys
rows, order = {}, []
for line in open(sys.argv[1]):
    m = re.match(r"services_(\d+)_(\S+) (\S+)$", line.strip())
    if not m:
        continue
    n, key, value = int(m.group(1)), m.group(2), m.group(3)
    try:
        v = float(value)
    except ValueError:
        continue
    if n not in order:
        order.append(n)
    rows.setdefault((n, key), []).append(v)
if order:
    for n in order:
        ins, req = rows.get((n, "callgrind_instructions")), rows.get((n, "callgrind_requests"))
        if ins and req and req[0]:
            rows[(n, "instructions_per_request")] = [i / r for i, r in zip(ins, req)]
    base = order[0]
    for key in sorted({k for _, k in rows}):
        for n in order:
            if (n, key) not in rows:
                continue
            med = statistics.median(rows[(n, key)])
            line = f"median_services_{n}_{key} {med:.2f}"
            if key in ("rps", "instructions_per_request") and (base, key) in rows and n != base:
                line += f" ({med / statistics.median(rows[(base, key)]):.3f} x services_{base})"
            print(line)
PY
log "figures in $RESULTS"
cat "$RESULTS"
