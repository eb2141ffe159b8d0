#!/usr/bin/env bash
# End-to-end benchmarks of the gateway demo (docs/benchmarks.md, "End to end").
#
#   bench/run.sh            # build, measure, rewrite the generated part of docs/benchmarks.md
#
# Starts, on 127.0.0.1 only: a plain-axum floor, a raw TCP echo server, and the demo topology
# (gateway + todos-a + todos-b on a private loopback mesh: unique PLUME_ENV and discovery port).
# Every wrk figure is the median of BENCH_RUNS (default 3) runs of BENCH_SECONDS (default 5) s.
# Then the anchors (bench/anchors.sh): nginx and Moleculer in front of the same replicas, and the
# scale curves (bench/curves.sh, bench/curve_sockets.sh).
# BENCH_GATEWAY_BIN runs another gateway-example binary (to compare builds); BENCH_DOC writes
# another file than docs/benchmarks.md; BENCH_KEEP=1 keeps the logs; BENCH_ANCHORS_ONLY=1 runs
# only the anchors (and rewrites only their section).
# Exits non-zero when any figure could not be measured. Kills only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECONDS:-5}
WORK=$(mktemp -d /tmp/plume-bench.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# --- tools -----------------------------------------------------------------------------------
need_wrk
command -v node >/dev/null || { log "node is required for the event relay probe"; exit 1; }

log "building release binaries"
cargo build --release -q -p gateway-example -p plume-bench
TARGET=$(cargo_target_dir)
GX=${BENCH_GATEWAY_BIN:-$TARGET/release/gateway-example}
PROBE="$TARGET/release/probe"
FLOOR="$TARGET/release/floor"

log "installing the socket.io client for the relay probe (npm ci, bench/relay/package-lock.json)"
mkdir -p "$WORK/relay"
npm_ci_copy bench/relay "$WORK/relay" >/dev/null || { log "npm ci failed"; exit 1; }

# --- topology --------------------------------------------------------------------------------
export PLUME_ENV="bench-$$-$RANDOM"
export PLUME_DISCOVERY=loopback
PLUME_DISCOVERY_PORT=$(free_port udp)
export PLUME_DISCOVERY_PORT
export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export RUST_LOG=${RUST_LOG:-warn}
PG=$(free_port tcp)
PA=$(free_port tcp)
PB=$(free_port tcp)
PF=$(free_port tcp)
PE=$(free_port tcp)
GW="http://127.0.0.1:$PG"
RA="http://127.0.0.1:$PA"
FL="http://127.0.0.1:$PF"

# The replicas keep their todos in memory, as when these figures were first taken (the demo's
# default, a shared SQLite file, would measure SQLite too).
start_replica() { # NAME PORT
  start "$1" "$GX" todos --name "$1" --port "$2" --store memory
}

TOKEN=""
login() {
  local i out
  for i in $(seq 1 100); do
    out=$(curl -s -m 2 -X POST "$GW/authentication" -H 'content-type: application/json' \
      -d '{"strategy":"local","email":"demo@plume.local","password":"plume-demo"}' || true)
    TOKEN=$(printf '%s' "$out" | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["accessToken"])
except Exception: pass' 2>/dev/null || true)
    [[ -n "$TOKEN" ]] && return 0
    sleep 0.1
  done
  log "login failed: $out"
  return 1
}

topology_ready() { # both replicas answer through the gateway
  wait_for "$GW/todos" "Hello from todos-a" 30000 "$TOKEN" &&
    wait_for "$GW/todos" "Hello from todos-b" 30000 "$TOKEN"
}

put machine_nproc "$(nproc)"
put machine_cpu "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo | tr ' ' '_')"
put machine_mem_mib "$(awk '/MemTotal/ {printf "%d", $2/1024}' /proc/meminfo)"
put date "$(date -u +%Y-%m-%dT%H:%MZ)"
put commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# PLUME_WORKERS (the worker threads of every Plume process here) goes into the reports.
put plume_workers "${PLUME_WORKERS:-default}"

# --- the sections of the run: all of them, or (BENCH_ANCHORS_ONLY=1) only the anchors ----------
wrk_get_gw() { # KEY RUN CONNS: GET /todos through the gateway with the JWT
  WRK_HEADER="Authorization: Bearer $TOKEN" wrk_run "$1" "$2" "$GW/todos" "$3"
}

main_sections() {
log "starting floor, echo server, gateway :$PG, todos-a :$PA, todos-b :$PB (env $PLUME_ENV)"
start floor "$FLOOR" "$PF"
start echo "$PROBE" echo "$PE"
start gateway "$GX" gateway --port "$PG"
start_replica todos-a "$PA"
start_replica todos-b "$PB"
wait_for "$FL/todos" "todos-a" 30000
wait_for "$RA/todos" "Hello from todos-a" 30000
wait_for "http://127.0.0.1:$PB/todos" "Hello from todos-b" 30000
login
topology_ready
log "topology ready"


# --- RSS at idle -----------------------------------------------------------------------------
sleep 1
for p in gateway todos-a todos-b; do put "rss_idle_$p" "$(rss_kib "${PID_OF[$p]}")"; done

# --- wrk -------------------------------------------------------------------------------------
sample_rss() { # RUN: sample RSS of the topology every 0.25 s for SECS s, keep the max
  local run=$1 i p v
  declare -A max=([gateway]=0 [todos-a]=0 [todos-b]=0)
  for i in $(seq 1 $((SECS * 4))); do
    for p in gateway todos-a todos-b; do
      v=$(rss_kib "${PID_OF[$p]}")
      [[ $v -gt ${max[$p]} ]] && max[$p]=$v
    done
    sleep 0.25
  done
  for p in gateway todos-a todos-b; do put "rss_load_${p}_r$run" "${max[$p]}"; done
}

export BENCH_TOKEN=$TOKEN

log "raw TCP ping-pong floor"
for r in $(seq 1 "$RUNS"); do
  put "tcp_rtt_load_r$r" "$(loadavg)"
  put "tcp_rtt_us_r$r" "$("$PROBE" pingpong "127.0.0.1:$PE" 20000 || echo)"
done

log "GET /todos: gateway, direct replica and plain-axum floor, interleaved ($RUNS x ${SECS}s each)"
for r in $(seq 1 "$RUNS"); do
  sample_rss "$r" &
  sampler=$!
  wrk_get_gw get_gw_c64 "$r" 64
  wait "$sampler" || true
  wrk_run get_direct_c64 "$r" "$RA/todos" 64
  wrk_run get_floor_c64 "$r" "$FL/todos" 64
  wrk_get_gw get_gw_c1 "$r" 1
  wrk_run get_direct_c1 "$r" "$RA/todos" 1
  wrk_run get_floor_c1 "$r" "$FL/todos" 1
done

sleep 2
for p in gateway todos-a todos-b; do put "rss_idle_after_get_$p" "$(rss_kib "${PID_OF[$p]}")"; done

# --- event relay -----------------------------------------------------------------------------
log "event relay ($RUNS x 100 events)"
for r in $(seq 1 "$RUNS"); do
  put "relay_load_r$r" "$(loadavg)"
  out=$(timeout 90 node "$WORK/relay/relay.js" "$GW" "$RA" "$TOKEN" 100 || true)
  log "relay: $out"
  printf '%s\n' "$out" | python3 -c '
import json, sys
r = sys.argv[1]
try: d = json.loads(sys.stdin.read().strip().splitlines()[-1])
except Exception: sys.exit(0)
if "p50_ms" in d and d.get("missing", 1) == 0:
    p50, p90, dupes = d["p50_ms"], d["p90_ms"], d["duplicates"]
    print(f"relay_p50ms_r{r} {p50:.3f}")
    print(f"relay_p90ms_r{r} {p90:.3f}")
    print(f"relay_dupes_r{r} {dupes}")
' "$r" >>"$RESULTS"
done

# --- discovery -------------------------------------------------------------------------------
log "discovery ($RUNS runs)"
for r in $(seq 1 "$RUNS"); do
  name="todos-new$r"
  port=$(free_port tcp)
  put "discovery_load_r$r" "$(loadavg)"
  t0=$(now_us)
  start_replica "$name" "$port"
  ms=$(PROBE_TOKEN=$TOKEN "$PROBE" until "$GW/todos" "Hello from $name" 20000 "$t0" || echo)
  [[ -n "$ms" ]] && put "discovery_ms_r$r" "$ms"
  log "discovery $name: ${ms:-none} ms"
  stop_pid "${PID_OF[$name]}"
  topology_ready
done

# --- failover --------------------------------------------------------------------------------
log "failover ($RUNS runs of ~16 s)"
for r in $(seq 1 "$RUNS"); do
  put "failover_load_r$r" "$(loadavg)"
  lf="$WORK/failover-$r.log"
  PROBE_TOKEN=$TOKEN "$PROBE" load "$GW/todos" 16 17000 3000000 "$lf" >/dev/null &
  loader=$!
  STARTED+=("$loader")
  sleep 2
  tk1=$(now_us)
  kill -KILL "${PID_OF[todos-a]}"
  sleep 5
  tk2=$(now_us)
  kill -KILL "${PID_OF[todos-b]}"
  sleep 6
  tr=$(now_us)
  start_replica todos-a "$PA"
  wait "$loader" || log "load client failed"
  python3 - "$lf" "$tk1" "$tk2" "$tr" "$r" >>"$RESULTS" <<'EOF'
import sys
path, tk1, tk2, tr, r = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
rows = [tuple(map(int, l.split())) for l in open(path) if l.strip()]
# Phase 1 (one replica killed): requests that ended before the second kill.
p1 = [x for x in rows if tk1 <= x[1] < tk2]
failed = [x for x in p1 if x[2] != 200]
print(f"failover_failed_r{r} {len(failed)}")
print(f"failover_phase1_requests_r{r} {len(p1)}")
print(f"failover_errors_stop_ms_r{r} {(max(x[1] for x in failed) - tk1) / 1000 if failed else 0:.1f}")
# Phase 2 (no replica): requests started after the last kill and before the restart. Clean 503:
# from the kill to the answer of the first request after which every request answers 503.
p2 = sorted(x for x in rows if tk2 <= x[0] < tr)
not503 = [x for x in p2 if x[2] != 503]
tail = [x for x in p2 if not not503 or x[0] > max(y[0] for y in not503)]
if tail:
    print(f"failover_clean503_ms_r{r} {(min(x[1] for x in tail) - tk2) / 1000:.1f}")
# Requests in flight at the last kill: those answered neither 200 nor 503 (timeouts, resets),
# and the longest wait of any of them (a call that waits for a provider to come back).
inflight = [x for x in rows if x[0] < tk2 <= x[1]]
lost = [x for x in inflight if x[2] not in (200, 503)]
print(f"failover_lost_inflight_r{r} {len(lost)}")
print(f"failover_inflight_max_ms_r{r} {max((x[1] - x[0] for x in inflight), default=0) / 1000:.1f}")
# Phase 3: the first 200 after the restart.
ok = [x for x in rows if x[1] >= tr and x[2] == 200]
if ok:
    print(f"failover_restart_ms_r{r} {(min(x[1] for x in ok) - tr) / 1000:.1f}")
EOF
  tail -n 8 "$RESULTS" | sed 's/^/  /' >&2
  # Restore the topology for the next run (and for POST).
  start_replica todos-b "$PB"
  topology_ready
done

# --- POST ------------------------------------------------------------------------------------
log "POST /todos: gateway and direct replica, interleaved"
for r in $(seq 1 "$RUNS"); do
  wrk_run post_gw_c64 "$r" "$GW/todos" 64 bench/post.lua
  BENCH_TOKEN="" wrk_run post_direct_c64 "$r" "$RA/todos" 64 bench/post.lua
  wrk_run post_gw_c1 "$r" "$GW/todos" 1 bench/post.lua
  BENCH_TOKEN="" wrk_run post_direct_c1 "$r" "$RA/todos" 1 bench/post.lua
done
for p in gateway todos-a todos-b; do put "rss_after_post_$p" "$(rss_kib "${PID_OF[$p]}")"; done

# --- GET on NATS (issue 6): the same topology with PLUME_DISCOVERY=nats, same run -----------
if ! command -v nats-server >/dev/null 2>&1; then
  log "installing nats-server"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
log "GET /todos through a gateway on NATS (the loopback topology is stopped first)"
for p in gateway todos-a todos-b; do
  [[ -n "${PID_OF[$p]:-}" ]] && stop_pid "${PID_OF[$p]}"
done
PN=$(free_port tcp)
PGN=$(free_port tcp)
PAN=$(free_port tcp)
PBN=$(free_port tcp)
start nats nats-server -a 127.0.0.1 -p "$PN"
nats_env=(env -u PLUME_DISCOVERY_PORT PLUME_DISCOVERY=nats "PLUME_NATS_URL=nats://127.0.0.1:$PN")
start gateway-nats "${nats_env[@]}" "$GX" gateway --port "$PGN"
# --store memory, as start_replica: the demo's default store (a shared SQLite file) would measure
# SQLite too, and the figures would not compare with the loopback ones or with earlier runs.
start todos-a-nats "${nats_env[@]}" "$GX" todos --name todos-a --port "$PAN" --store memory
start todos-b-nats "${nats_env[@]}" "$GX" todos --name todos-b --port "$PBN" --store memory
GW="http://127.0.0.1:$PGN"
wait_for "http://127.0.0.1:$PAN/todos" "Hello from todos-a" 30000
wait_for "http://127.0.0.1:$PBN/todos" "Hello from todos-b" 30000
login
topology_ready
for r in $(seq 1 "$RUNS"); do
  wrk_get_gw get_nats_c64 "$r" 64
  wrk_get_gw get_nats_c1 "$r" 1
done

# --- encrypted links (issue 14): two fresh loopback topologies, one with a mesh secret -------
log "GET /todos through a gateway on plain and on encrypted (Noise) links, interleaved"
for p in gateway-nats todos-a-nats todos-b-nats nats; do stop_pid "${PID_OF[$p]}"; done
topology plain
GW_PLAIN=$TOPO_GW
topology secret "PLUME_MESH_SECRET=bench-mesh-secret-$RANDOM$RANDOM"
GW_SECRET=$TOPO_GW
GW=$GW_PLAIN && login && topology_ready && TOKEN_PLAIN=$TOKEN
GW=$GW_SECRET && login && topology_ready && TOKEN_SECRET=$TOKEN
for r in $(seq 1 "$RUNS"); do
  GW=$GW_PLAIN TOKEN=$TOKEN_PLAIN wrk_get_gw get_plainlinks_c64 "$r" 64
  GW=$GW_SECRET TOKEN=$TOKEN_SECRET wrk_get_gw get_noise_c64 "$r" 64
done

  for p in gateway-plain todos-a-plain todos-b-plain gateway-secret todos-a-secret todos-b-secret; do
    stop_pid "${PID_OF[$p]}"
  done
}

if [[ -z ${BENCH_ANCHORS_ONLY:-} ]]; then
  main_sections
fi

# --- anchors (issue 22): nginx and Moleculer in front of the same replicas, same run ---------
# shellcheck source=bench/anchors.sh
source "$ROOT/bench/anchors.sh"
trap 'anchors_cleanup; cleanup' EXIT
run_anchors

# --- scale curves (issue 22, part 2) ---------------------------------------------------------
# shellcheck source=bench/curves.sh
source "$ROOT/bench/curves.sh"
run_payload_curve
# The sockets curve (bench/curve_sockets.sh; on its own it runs and reports only that curve).
# shellcheck source=bench/curve_sockets.sh
source "$ROOT/bench/curve_sockets.sh"
run_sockets_curve

# --- report ----------------------------------------------------------------------------------
log "writing docs/benchmarks.md"
status=0
if [[ -z ${BENCH_ANCHORS_ONLY:-} ]]; then
  python3 bench/report.py "$RESULTS" "${BENCH_DOC:-docs/benchmarks.md}" || status=1
fi
python3 bench/anchors_report.py "$RESULTS" "${BENCH_DOC:-docs/benchmarks.md}" || status=1
python3 bench/curves_report.py "$RESULTS" "${BENCH_DOC:-docs/benchmarks.md}" || status=1
python3 bench/curve_sockets_report.py "$RESULTS" "${BENCH_DOC:-docs/benchmarks.md}" || status=1
exit $status
