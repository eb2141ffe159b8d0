#!/usr/bin/env bash
# What metrics and trace contexts cost the gateway, counted in instructions (issue 19; the
# throughput ratio is bench/observability.sh's). Counts do not depend on the machine's load, so
# this one may run on a busy machine. One release binary of gateway-example, two topologies on
# private loopback meshes, each a gateway and one replica (todos-a, --store memory) run under
# valgrind's callgrind: one with PLUME_OBSERVABILITY=off, one as the demo runs. After a warm-up
# (PROFILE_WARMUP GETs, default 300) the counters of every process are zeroed, PROFILE_REQUESTS
# (default 2000) GETs of /todos go through each gateway on 8 keep-alive connections (bench's
# probe), and the instructions each process ran are dumped: the script prints instructions per
# request for the gateway, the replica and both, off and on, and the ratio.
#
#   bench/observability_profile.sh            # PROFILE_KEEP=1 keeps the callgrind files
#
# callgrind_annotate on a kept file shows where the difference goes. Kills only what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${PROFILE_REQUESTS:-2000}
WARM=${PROFILE_WARMUP:-300}
WORK=$(mktemp -d /tmp/plume-bench-obsprof.XXXXXX)
RESULTS="$WORK/results.txt"
SECS=0
: >"$RESULTS"
[[ -n "${PROFILE_KEEP:-}" ]] && BENCH_KEEP=1
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

command -v valgrind >/dev/null || { log "valgrind is missing (apt-get install valgrind)"; exit 1; }
# BENCH_PROFILE=debug profiles debug binaries (quicker to build; their counts are not the
# release's). PROFILE_BUILD=0 uses the binaries already built.
PROFILE=${BENCH_PROFILE:-release}
bench_bins "$PROFILE" "${PROFILE_BUILD:-1}"
export PLUME_DISCOVERY=loopback
export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export RUST_LOG=${RUST_LOG:-warn}
CG=(valgrind --tool=callgrind --dump-instr=no --compress-strings=no)

profiled() { # SUFFIX [VAR=VALUE...]: a gateway and one replica under callgrind; sets GW_URL
  local sfx=$1 pg pa
  shift
  local env=(env "PLUME_ENV=prof-$sfx-$$-$RANDOM" "PLUME_DISCOVERY_PORT=$(free_port udp)" "$@")
  pg=$(free_port tcp)
  pa=$(free_port tcp)
  start "gateway-$sfx" "${env[@]}" "${CG[@]}" --callgrind-out-file="$WORK/gateway-$sfx.out" \
    "$GX" gateway --port "$pg"
  start "todos-a-$sfx" "${env[@]}" "${CG[@]}" --callgrind-out-file="$WORK/todos-a-$sfx.out" \
    "$GX" todos --name todos-a --port "$pa" --store memory
  wait_for "http://127.0.0.1:$pa/todos" "Hello from todos-a" 300000
  GW_URL="http://127.0.0.1:$pg"
}

total_ir() { # FILE: the instructions of a callgrind dump (its "totals:" or "summary:" line)
  awk '/^(totals|summary):/ {print $2; exit}' "$1"
}

measure() { # SUFFIX URL TOKEN: warm up, zero, N GETs, dump; appends SUFFIX_{gateway,todos} Ir
  local sfx=$1 url=$2 tok=$3 name f
  wait_for "$url/todos" "Hello from todos-a" 300000 "$tok"
  PROBE_TOKEN=$tok "$PROBE" load "$url/todos" 8 600000 "$WARM" "$WORK/warm-$sfx.txt"
  for name in gateway todos-a; do callgrind_control -z "${PID_OF[$name-$sfx]}" >/dev/null; done
  PROBE_TOKEN=$tok "$PROBE" load "$url/todos" 8 600000 "$N" "$WORK/load-$sfx.txt"
  local bad
  bad=$(awk '$3 != 200' "$WORK/load-$sfx.txt" | wc -l)
  [[ $bad == 0 ]] || { log "$bad of the $sfx requests failed"; exit 1; }
  for name in gateway todos-a; do
    rm -f "$WORK/$name-$sfx.out"*
    callgrind_control -d "${PID_OF[$name-$sfx]}" >/dev/null
    f=$(find "$WORK" -maxdepth 1 -name "$name-$sfx.out*" | sort | tail -1)
    put "${sfx}_${name}" "$(total_ir "$f")"
  done
}

log "starting both topologies under callgrind (slow: a minute or two)"
profiled off PLUME_OBSERVABILITY=off
GW_OFF=$GW_URL
profiled on
GW_ON=$GW_URL
TOKEN_OFF=$(token "$GW_OFF" 600 120)
TOKEN_ON=$(token "$GW_ON" 600 120)
curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN_ON" "$GW_ON/todos" | grep -qi '^traceparent:' ||
  { log "the on gateway answers no traceparent"; exit 1; }
[[ $(curl -s -o /dev/null -w '%{http_code}' "$GW_OFF/metrics") == 404 ]] ||
  { log "the off gateway serves metrics"; exit 1; }
log "$N GETs of /todos through each gateway (after $WARM to warm up)"
measure off "$GW_OFF" "$TOKEN_OFF"
measure on "$GW_ON" "$TOKEN_ON"

python3 - "$RESULTS" "$N" <<'EOF'
import sys
vals = dict(line.split() for line in open(sys.argv[1]))
n = int(sys.argv[2])
per = {k: int(v) / n for k, v in vals.items()}
print("| instructions per GET /todos | off | on | on − off | off / on |")
print("|---|---|---|---|---|")
for name, key in (("gateway", "gateway"), ("replica (todos-a)", "todos-a")):
    off, on = per[f"off_{key}"], per[f"on_{key}"]
    print(f"| {name} | {off:,.0f} | {on:,.0f} | {on - off:,.0f} | {off / on:.3f} |")
off = per["off_gateway"] + per["off_todos-a"]
on = per["on_gateway"] + per["on_todos-a"]
print(f"| both | {off:,.0f} | {on:,.0f} | {on - off:,.0f} | {off / on:.3f} |")
EOF
[[ -z "${BENCH_KEEP:-}" ]] || log "callgrind files: $WORK/{gateway,todos-a}-{off,on}.out.*"
