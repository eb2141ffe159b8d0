#!/usr/bin/env bash
# The sockets curve (docs/benchmarks.md, "Sockets curve"; issue 22, part 2): 100, 1,000 and
# 10,000 socket.io clients on the gateway, one event relayed from a replica to all of them.
#
#   bench/curve_sockets.sh     # build, measure, rewrite only the sockets part of docs/benchmarks.md
#
# Each point: a fresh gateway and one replica (todos-a, memory store) on a private loopback mesh;
# the Rust client bench/src/bin/sockets opens the sockets, authenticates each with the JWT (a
# `create` on `authentication`, as the demo page does), then creates BENCH_SOCKETS_EVENTS todos
# on the replica one at a time and times each `todos created` event to every socket. The
# gateway's RSS is read before the sockets (idle) and with all of them in.
# BENCH_RUNS (default 3) runs per size; BENCH_SOCKETS_SIZES overrides the sizes (a quick check:
# BENCH_SOCKETS_SIZES="100 1000" BENCH_RUNS=1); BENCH_DOC writes another file; BENCH_KEEP=1
# keeps the logs; BENCH_SKIP_BUILD=1 skips the build. Raises the open-files limit (as root) and
# spreads the clients over the source addresses 127.0.0.1–127.0.0.4. Kills only the processes it started.
#
# bench/run.sh sources this file too (GX and TARGET set) and calls run_sockets_curve.
# shellcheck shell=bash

SOCKETS_SIZES=()
read -r -a SOCKETS_SIZES <<<"${BENCH_SOCKETS_SIZES:-100 1000 10000}"
SOCKETS_EVENTS=${BENCH_SOCKETS_EVENTS:-20}
SOCKETS_SOURCES=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4

raise_fd_limit() { # N sockets need N descriptors in the gateway and N in the client
  local want=65536 most=0 n
  for n in "${SOCKETS_SIZES[@]}"; do [[ $n -gt $most ]] && most=$n; done
  if [[ $(ulimit -n) -lt $want ]]; then
    # Raising the hard limit needs CAP_SYS_RESOURCE (root outside a container); else the soft
    # limit goes up to the hard one.
    ulimit -Hn "$want" 2>/dev/null || true
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  fi
  log "open files limit: $(ulimit -n)"
  if [[ $(ulimit -n) -lt $((most + 1024)) ]]; then
    log "the open files limit $(ulimit -n) is too low for $most sockets"
    return 1
  fi
}

run_sockets_curve() {
  log "sockets curve: ${SOCKETS_SIZES[*]} socket.io clients, $SOCKETS_EVENTS events each, $RUNS runs"
  # Too few descriptors: no figures (the report names them missing), the rest of a run goes on.
  raise_fd_limit || return 0
  put sockets_fd_limit "$(ulimit -n)"
  put sockets_events "$SOCKETS_EVENTS"
  local n r
  for n in "${SOCKETS_SIZES[@]}"; do
    for r in $(seq 1 "$RUNS"); do
      sockets_point "$n" "$r"
    done
  done
}

sockets_point() { # N RUN: a fresh gateway and replica, N sockets, the figures of one run
  local n=$1 r=$2 pg pa out gw="gateway-sockets-$1-$2" replica="todos-a-sockets-$1-$2"
  local env=(env "PLUME_ENV=bench-sockets-$$-$RANDOM" "PLUME_DISCOVERY_PORT=$(free_port udp)"
    "RUST_LOG=${RUST_LOG:-warn}")
  pg=$(free_port tcp)
  pa=$(free_port tcp)
  start "$gw" "${env[@]}" "$GX" gateway --port "$pg"
  start "$replica" "${env[@]}" "$GX" todos --name todos-a --port "$pa" --store memory
  wait_line "$gw" "gateway listening on"
  wait_line "$replica" "listening on"
  put "sockets_${n}_load_r$r" "$(loadavg)"
  # The client waits until the gateway serves the replica's todos, then reads the idle RSS.
  out=$("$SOCKETS_BIN" --gateway "127.0.0.1:$pg" --replica "127.0.0.1:$pa" --sockets "$n" \
    --events "$SOCKETS_EVENTS" --sources "$SOCKETS_SOURCES" \
    --gateway-pid "${PID_OF[$gw]}" 2>>"$WORK/sockets-client.log") ||
    log "sockets client failed at $n sockets (run $r): $(tail -n 3 "$WORK/sockets-client.log")"
  printf '%s\n' "$out" | awk -v p="sockets_${n}_" -v s="_r$r" 'NF == 2 && $2 != "none" { print p $1 s, $2 }' >>"$RESULTS"
  log "sockets $n run $r: $(printf '%s' "$out" | tr '\n' ' ')"
  stop_pid "${PID_OF[$gw]}"
  stop_pid "${PID_OF[$replica]}"
}

# --- run on its own: build, measure, report ---------------------------------------------------
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  cd "$ROOT"
  RUNS=${BENCH_RUNS:-3}
  SECS=${BENCH_SECONDS:-5}
  WORK=$(mktemp -d /tmp/plume-bench-sockets.XXXXXX)
  RESULTS="$WORK/results.txt"
  : >"$RESULTS"
  # shellcheck source=bench/lib.sh
  source "$ROOT/bench/lib.sh"
  # BENCH_PROFILE=dev checks the script with debug builds (figures from those do not count).
  PROFILE=${BENCH_PROFILE:-release}
  # BENCH_SKIP_BUILD=1 measures the binaries already built (e.g. a variant switched by the
  # environment, which the gateway inherits).
  if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
    log "building $PROFILE binaries"
    cargo build --profile "$PROFILE" -q -p gateway-example -p plume-bench --bin gateway-example --bin sockets
  fi
  TARGET=$(cargo_target_dir)
  BIN_DIR="$TARGET/$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")"
  GX=${BENCH_GATEWAY_BIN:-$BIN_DIR/gateway-example}
  SOCKETS_BIN="$BIN_DIR/sockets"
  export PLUME_DISCOVERY=loopback
  export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
  put machine_nproc "$(nproc)"
  put date "$(date -u +%Y-%m-%dT%H:%MZ)"
  put commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
fi
SOCKETS_BIN=${SOCKETS_BIN:-$TARGET/release/sockets}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  run_sockets_curve
  log "writing the sockets curve into ${BENCH_DOC:-docs/benchmarks.md}"
  python3 bench/curve_sockets_report.py "$RESULTS" "${BENCH_DOC:-docs/benchmarks.md}"
fi
