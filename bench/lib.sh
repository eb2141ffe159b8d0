# Shell helpers shared by bench/run.sh, bench/sql.sh and bench/observability.sh (sourced, not
# run). The script that sources this sets RESULTS (its results file), WORK (its scratch
# directory) and SECS (seconds per wrk run) first, and GX (gateway-example) and PROBE (bench's
# probe) before it calls wait_for or topology; PID_OF and STARTED are declared here.
# shellcheck shell=bash disable=SC2034 # PID_OF and STARTED are read by the sourcing script

declare -A PID_OF=()
STARTED=()

# cargo_target_dir (the workspace's target directory) and the other helpers of the test scripts.
# shellcheck source=scripts/lib/npm.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/npm.sh"

need_wrk() { # wrk, from Debian's packages when missing
  command -v wrk >/dev/null && return 0
  log "installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
}

need_nginx() { # nginx, from Debian's packages when missing, without starting its system service
  command -v nginx >/dev/null && return 0
  log "installing nginx (its service is not started: a policy-rc.d refuses it while installing)"
  local policy=/usr/sbin/policy-rc.d ours=0 status=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    ours=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null ||
    status=1
  [[ $ours == 0 ]] || rm -f "$policy"
  return $status
}

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
now_us() { date +%s%6N; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
put() { printf '%s %s\n' "$1" "$2" >>"$RESULTS"; }

stop_pid() { # stop one process this script started: TERM, then KILL after 3 s
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
  if [[ -n "${BENCH_KEEP:-}" ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

start() { # start NAME CMD...: run in the background, log to $WORK/NAME.log
  local name=$1
  shift
  "$@" >>"$WORK/$name.log" 2>&1 &
  PID_OF[$name]=$!
  STARTED+=("$!")
}

user_sys_ticks() { # PID...: their user and system clock ticks so far, summed ("USER SYSTEM")
  local p u s tu=0 ts=0
  for p in "$@"; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
    tu=$((tu + u)) ts=$((ts + s))
  done
  echo "$tu $ts"
}

build_bench() { # PROFILE: build gateway-example and bench's binaries in PROFILE (release|debug); sets TARGET
  log "building the $1 binaries"
  if [[ $1 == release ]]; then
    cargo build --release -q -p gateway-example -p plume-bench
  else
    cargo build -q -p gateway-example -p plume-bench
  fi
  TARGET=$(cargo_target_dir)
}

bench_bins() { # PROFILE [BUILD]: build_bench PROFILE unless BUILD is 0; sets TARGET, GX and PROBE
  # (BENCH_GATEWAY_BIN and BENCH_PROBE_BIN name other binaries)
  if [[ ${2:-1} != 0 ]]; then
    build_bench "$1"
  else
    TARGET=$(cargo_target_dir)
  fi
  GX=${BENCH_GATEWAY_BIN:-$TARGET/$1/gateway-example}
  PROBE=${BENCH_PROBE_BIN:-$TARGET/$1/probe}
}

free_port() { # a free port on 127.0.0.1 (tcp or udp)
  python3 -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

wait_line() { # NAME NEEDLE: wait (30 s at most) for NEEDLE in NAME's log, or fail
  local i
  for i in $(seq 1 300); do
    grep -q "$2" "$WORK/$1.log" 2>/dev/null && return 0
    kill -0 "${PID_OF[$1]}" 2>/dev/null || break
    sleep 0.1
  done
  log "$1 did not start:"
  cat "$WORK/$1.log" >&2
  return 1
}

wait_for() { # URL NEEDLE TIMEOUT_MS [TOKEN]: wait for a 200 carrying NEEDLE ($PROBE: bench's probe)
  PROBE_TOKEN=${4:-} "$PROBE" until "$1" "$2" "$3" >/dev/null
}

TOPO_GW=""
TOPO_PA=""
topology() { # SUFFIX [VAR=VALUE...]: a gateway and two replicas ($GX) on a private loopback mesh
  local sfx=$1 pg pa pb
  shift
  local env=(env "PLUME_ENV=bench-$sfx-$$-$RANDOM" "PLUME_DISCOVERY_PORT=$(free_port udp)" "$@")
  pg=$(free_port tcp)
  pa=$(free_port tcp)
  pb=$(free_port tcp)
  start "gateway-$sfx" "${env[@]}" "$GX" gateway --port "$pg"
  start "todos-a-$sfx" "${env[@]}" "$GX" todos --name todos-a --port "$pa" --store memory
  start "todos-b-$sfx" "${env[@]}" "$GX" todos --name todos-b --port "$pb" --store memory
  wait_for "http://127.0.0.1:$pa/todos" "Hello from todos-a" 30000
  wait_for "http://127.0.0.1:$pb/todos" "Hello from todos-b" 30000
  TOPO_GW="http://127.0.0.1:$pg"
  TOPO_PA=$pa
}

token() { # GATEWAY [TRIES] [SECONDS]: log in as the demo user, print the access token
  local i out="" tok tries=${2:-100} secs=${3:-2}
  for i in $(seq 1 "$tries"); do
    out=$(curl -s -m "$secs" -X POST "$1/authentication" -H 'content-type: application/json' \
      -d '{"strategy":"local","email":"demo@plume.local","password":"plume-demo"}' || true)
    tok=$(printf '%s' "$out" | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["accessToken"])
except Exception: pass' 2>/dev/null || true)
    [[ -n "$tok" ]] && { printf '%s' "$tok"; return 0; }
    sleep 0.1
  done
  log "login failed on $1: $out"
  return 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# --- wrk -------------------------------------------------------------------------------------
wrk_run() { # KEY RUN URL CONNS [LUA]: one wrk run; appends KEY_{rps,p50us,p99us,failed,load}_rRUN
  # (WRK_NETNS=NAME runs wrk inside that network namespace.)
  local key=$1 run=$2 url=$3 conns=$4 lua=${5:-} threads=2 out
  [[ $conns -lt 2 ]] && threads=1
  local args=(-t "$threads" -c "$conns" -d "${SECS}s" --latency)
  [[ -n "$lua" ]] && args+=(-s "$lua")
  [[ -n "${WRK_HEADER:-}" ]] && args+=(-H "$WRK_HEADER")
  put "${key}_load_r$run" "$(loadavg)"
  local prefix=()
  [[ -n "${WRK_NETNS:-}" ]] && prefix=(ip netns exec "$WRK_NETNS")
  out=$("${prefix[@]}" wrk "${args[@]}" "$url" 2>&1) || { log "wrk failed for $key"; return 0; }
  printf '%s\n' "$out" >>"$WORK/wrk.log"
  printf '%s\n' "$out" | python3 -c '
import re, sys
text = sys.stdin.read(); key, run = sys.argv[1], sys.argv[2]
unit = {"us": 1, "ms": 1000, "s": 1000000}
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)
if rps: print(f"{key}_rps_r{run} {rps.group(1)}")
if p50: print(f"{key}_p50us_r{run} {float(p50.group(1)) * unit[p50.group(2)]:.1f}")
if p99: print(f"{key}_p99us_r{run} {float(p99.group(1)) * unit[p99.group(2)]:.1f}")
print(f"{key}_failed_r{run} {failed}")
' "$key" "$run" >>"$RESULTS"
}
