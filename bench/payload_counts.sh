#!/usr/bin/env bash
# Where a big answer's CPU goes, gateway path against direct (issue 22, the 1 MiB point of the
# payload curve; docs/benchmarks.md, "The 1 MiB answer, counted"). One release binary of
# gateway-example: a gateway and one replica (todos-a, --store memory) on a private loopback
# mesh, one todo whose text is PAYLOAD_SIZE bytes (default 1,048,000, the curve's last point),
# GET /todos/:id through the gateway and from the replica directly, in the same run:
#
#   1. counts: wrk (64 connections, as the curve) in COUNTS_RUNS (default 3) interleaved rounds
#      of COUNTS_SECONDS (default 5) s per path; per request of each process, from /proc before
#      and after each run: CPU µs (utime + stime), minor page faults, read-like and write-like
#      syscalls (/proc/<pid>/io; socket reads by recv are not counted there). Counts per request
#      hardly depend on the machine's load; the req/s of both paths (and their ratio, the 1 MiB
#      point of the payload curve) do, and are figures only on a quiet machine.
#   2. with PAYLOAD_CALLGRIND=1, instructions: both processes again under valgrind's callgrind,
#      PAYLOAD_REQUESTS (default 100) GETs on one keep-alive connection (curl) per path after a
#      warm-up of 10, counters zeroed in between; instructions per GET of each process.
#
#      After the rounds, each process's resident memory (VmRSS) at once and again after
#      PAYLOAD_IDLE (default 15) s without requests: whether freed buffers went back to the
#      system. The allocator's settings come from the environment (_RJEM_MALLOC_CONF for the
#      jemalloc build) or from the binary (docs/benchmarks.md, "Payloads and NATS, round").
#
#   bench/payload_counts.sh                       # PAYLOAD_BUILD=0: use the binary already built
#   PAYLOAD_CALLGRIND=1 bench/payload_counts.sh   # PAYLOAD_KEEP=1 keeps the callgrind files
#
# Kills only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${COUNTS_RUNS:-3}
SECS=${COUNTS_SECONDS:-5}
SIZE=${PAYLOAD_SIZE:-1048000}
N=${PAYLOAD_REQUESTS:-100}
WORK=$(mktemp -d /tmp/plume-bench-payload.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
[[ -n "${PAYLOAD_KEEP:-}" ]] && BENCH_KEEP=1
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

need_wrk
PROFILE=${BENCH_PROFILE:-release}
if [[ ${PAYLOAD_BUILD:-1} != 0 ]]; then
  log "building gateway-example ($PROFILE)"
  if [[ $PROFILE == release ]]; then cargo build --release -q -p gateway-example; else cargo build -q -p gateway-example; fi
fi
TARGET=$(cargo_target_dir)
GX=${BENCH_GATEWAY_BIN:-$TARGET/$PROFILE/gateway-example}
export PLUME_DISCOVERY=loopback
export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export RUST_LOG=${RUST_LOG:-warn}

wait_ok() { # URL NEEDLE SECONDS [TOKEN]: wait (bounded) for a 200 carrying NEEDLE (curl: this
  # script needs no bench binary)
  local end=$((SECONDS + $3)) auth=()
  [[ -z ${4:-} ]] || auth=(-H "Authorization: Bearer $4")
  while ((SECONDS < end)); do
    curl -sf -m 5 "${auth[@]}" "$1" 2>/dev/null | grep -q "$2" && return 0
    sleep 0.2
  done
  log "no answer with '$2' from $1 within $3 s"
  return 1
}

snap() { # PID: "utime stime minflt syscr syscw"
  python3 - "$1" <<'EOF'
import sys
pid = sys.argv[1]
stat = open(f"/proc/{pid}/stat").read()
f = stat[stat.rfind(")") + 2:].split()
io = dict(l.split(": ") for l in open(f"/proc/{pid}/io").read().splitlines())
print(f[11], f[12], f[7], io["syscr"], io["syscw"])
EOF
}

pair() { # SUFFIX [WRAPPER...]: a gateway and one replica; sets GW, DIRECT, TOKEN, ID
  local sfx=$1 pg pa env body="$WORK/payload.json"
  shift
  env=(env "PLUME_ENV=bench-payload-$sfx-$$-$RANDOM" "PLUME_DISCOVERY_PORT=$(free_port udp)")
  pg=$(free_port tcp)
  pa=$(free_port tcp)
  start "gateway-$sfx" "${env[@]}" "$@" ${1:+--callgrind-out-file="$WORK/gateway-$sfx.out"} \
    "$GX" gateway --port "$pg"
  start "todos-a-$sfx" "${env[@]}" "$@" ${1:+--callgrind-out-file="$WORK/todos-a-$sfx.out"} \
    "$GX" todos --name todos-a --port "$pa" --store memory
  GW="http://127.0.0.1:$pg"
  DIRECT="http://127.0.0.1:$pa"
  wait_ok "$DIRECT/todos" "Hello from todos-a" 300
  TOKEN=$(token "$GW" 600 120)
  wait_ok "$GW/todos" "Hello from todos-a" 300 "$TOKEN"
  python3 -c 'import json,sys; print(json.dumps({"text": "x" * int(sys.argv[1])}))' "$SIZE" >"$body"
  ID=$(curl -s -m 120 -X POST "$DIRECT/todos" -H 'content-type: application/json' \
    --data-binary @"$body" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  # Both paths answer the same bytes.
  cmp <(curl -s -m 120 -H "Authorization: Bearer $TOKEN" "$GW/todos/$ID") \
    <(curl -s -m 120 "$DIRECT/todos/$ID") || { log "the gateway's answer differs from the replica's"; exit 1; }
  put "${sfx}_answer_bytes" "$(curl -s -m 120 "$DIRECT/todos/$ID" | wc -c)"
}

counts_run() { # PATH ROUND: one wrk run on PATH (gw|direct); appends the /proc differences
  local path=$1 r=$2 url hdr=() p before=() after=() out n i procs=(gateway-counts todos-a-counts)
  if [[ $path == gw ]]; then url="$GW/todos/$ID"; hdr=(-H "Authorization: Bearer $TOKEN"); else url="$DIRECT/todos/$ID"; fi
  for p in "${procs[@]}"; do before+=("$(snap "${PID_OF[$p]}")"); done
  out=$(wrk -t 2 -c 64 -d "${SECS}s" "${hdr[@]}" "$url" 2>&1)
  for p in "${procs[@]}"; do after+=("$(snap "${PID_OF[$p]}")"); done
  if printf '%s\n' "$out" | grep -q 'Non-2xx'; then log "$path: failed requests"; exit 1; fi
  n=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
  put "${path}_requests_r$r" "$n"
  for i in 0 1; do
    put "${path}_${procs[$i]%-counts}_r$r" "$(python3 -c 'import sys
a, b = (list(map(int, s.split())) for s in sys.argv[1:3])
print(",".join(str(y - x) for x, y in zip(a, b)))' "${before[$i]}" "${after[$i]}")"
  done
}

log "counts: a gateway and a replica, a todo of $SIZE B, ${RUNS} rounds of ${SECS}s per path"
pair counts
for r in $(seq 1 "$RUNS"); do
  counts_run gw "$r"
  counts_run direct "$r"
done
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
for p in gateway todos-a; do put "rss_loaded_$p" "$(rss "${PID_OF[$p-counts]}")"; done
sleep "${PAYLOAD_IDLE:-15}"
for p in gateway todos-a; do put "rss_idle_$p" "$(rss "${PID_OF[$p-counts]}")"; done
stop_pid "${PID_OF[gateway-counts]}"
stop_pid "${PID_OF[todos-a-counts]}"

if [[ -n "${PAYLOAD_CALLGRIND:-}" ]]; then
  command -v valgrind >/dev/null || { log "valgrind is missing (apt-get install valgrind)"; exit 1; }
  log "instructions: both processes under callgrind (slow), $N GETs per path"
  pair cg valgrind --tool=callgrind --dump-instr=no --compress-strings=no
  total_ir() { awk '/^(totals|summary):/ {print $2; exit}' "$1"; }
  gets() { # URL COUNT [CURL ARGS...]: COUNT GETs of URL on one connection; fails on a non-200
    local url=$1 count=$2 i args=()
    shift 2
    for i in $(seq 1 "$count"); do args+=(-o /dev/null "$url"); done
    local codes
    codes=$(curl -s -m 600 "$@" -w '%{http_code}\n' "${args[@]}" | sort | uniq -c)
    [[ $(printf '%s\n' "$codes" | awk '{print $2}') == 200 ]] || { log "GETs failed: $codes"; exit 1; }
  }
  for path in gw direct; do
    if [[ $path == gw ]]; then url="$GW/todos/$ID"; hdr=(-H "Authorization: Bearer $TOKEN"); else url="$DIRECT/todos/$ID"; hdr=(); fi
    gets "$url" 10 "${hdr[@]}"
    for name in gateway todos-a; do callgrind_control -z "${PID_OF[$name-cg]}" >/dev/null; done
    gets "$url" "$N" "${hdr[@]}"
    for name in gateway todos-a; do
      rm -f "$WORK/$name-cg.out"*
      callgrind_control -d "${PID_OF[$name-cg]}" >/dev/null
      f=$(find "$WORK" -maxdepth 1 -name "$name-cg.out*" | sort | tail -1)
      put "cg_${path}_${name}" "$(total_ir "$f")"
      [[ -z "${BENCH_KEEP:-}" ]] || cp "$f" "$WORK/keep-$path-$name.callgrind"
    done
  done
fi

python3 - "$RESULTS" "$N" "$SECS" <<'EOF'
import sys
vals = dict(line.split() for line in open(sys.argv[1]))
n = int(sys.argv[2])
print(f"answer: {int(vals['counts_answer_bytes']):,} B")
print("| per GET (wrk, 64 connections) | gateway: CPU µs (user + system) | minor faults | read/write syscalls | replica: CPU µs (user + system) | minor faults | read/write syscalls | req/s |")
print("|---|---|---|---|---|---|---|---|")
tick = 1e6 / 100
rate = {}
for path, label in (("gw", "through the gateway"), ("direct", "direct")):
    rounds = sorted({k.rsplit("_r", 1)[1] for k in vals if k.startswith(f"{path}_requests_r")})
    req = sum(int(vals[f"{path}_requests_r{r}"]) for r in rounds)
    cells = []
    for proc in ("gateway", "todos-a"):
        s = [0] * 5
        for r in rounds:
            for i, x in enumerate(vals[f"{path}_{proc}_r{r}"].split(",")):
                s[i] += int(x)
        cells += [f"{(s[0] + s[1]) * tick / req:,.0f} ({s[0] * tick / req:,.0f} + {s[1] * tick / req:,.0f})", f"{s[2] / req:,.1f}", f"{s[3] / req:,.1f} / {s[4] / req:,.1f}"]
    rate[path] = req / (len(rounds) * float(sys.argv[3]))
    print(f"| {label} | " + " | ".join(cells) + f" | {rate[path]:,.0f} |")
size = int(vals["counts_answer_bytes"])
print(f"\ngateway {rate['gw']:,.0f} req/s ({rate['gw'] * size / 1e6:,.0f} MB/s), direct "
      f"{rate['direct']:,.0f} req/s ({rate['direct'] * size / 1e6:,.0f} MB/s): "
      f"gateway ÷ direct {rate['gw'] / rate['direct']:.2f} × (load-dependent; a quiet machine's figure)")
print(f"VmRSS after the load, then idle: gateway {int(vals['rss_loaded_gateway']) / 1024:,.1f} → "
      f"{int(vals['rss_idle_gateway']) / 1024:,.1f} MiB, replica {int(vals['rss_loaded_todos-a']) / 1024:,.1f} → "
      f"{int(vals['rss_idle_todos-a']) / 1024:,.1f} MiB")
if "cg_gw_gateway" in vals:
    print()
    print("| instructions per GET (callgrind) | gateway | replica | both |")
    print("|---|---|---|---|")
    for path, label in (("gw", "through the gateway"), ("direct", "direct")):
        g, a = int(vals[f"cg_{path}_gateway"]) / n, int(vals[f"cg_{path}_todos-a"]) / n
        print(f"| {label} | {g:,.0f} | {a:,.0f} | {g + a:,.0f} |")
EOF
