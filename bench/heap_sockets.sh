#!/usr/bin/env bash
# Where a connected socket's bytes are (docs/benchmarks.md, "Where a socket's bytes are"; issue
# 22): the gateway under heaptrack with A and then B socket.io clients (default 1,000 and
# 2,000; BENCH_HEAP_SIZES="A B"), and heaptrack's difference of the two peaks, allocation site
# by site: (B − A) sockets' worth of each site.
#
#   bench/heap_sockets.sh            # build, profile, print the sites (bytes per socket)
#
# heaptrack hooks malloc, so the gateway is built with the `system-allocator` feature (jemalloc
# off); the sizes asked of the allocator are the same under either. Each size: a fresh gateway
# and one replica on a private loopback mesh, the sockets client of the sockets curve
# (bench/src/bin/sockets, every socket logged in with the JWT, BENCH_SOCKETS_EVENTS events,
# default 1). The RSS the client reads includes heaptrack's own. BENCH_SKIP_BUILD=1 skips the
# build, BENCH_KEEP=1 keeps the heaptrack files. Needs heaptrack (Debian package); loopback only;
# kills only the processes it started.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/plume-bench-heap.XXXXXX)
RESULTS="$WORK/results.txt"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
read -r -a SIZES <<<"${BENCH_HEAP_SIZES:-1000 2000}"
PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so
INTERPRET=/usr/lib/heaptrack/libexec/heaptrack_interpret
if [[ ! -e $PRELOAD ]]; then
  log "installing heaptrack"
  apt-get update -qq && apt-get install -y -qq heaptrack >/dev/null
fi
if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
  log "building the gateway on the system allocator, and the sockets client"
  cargo build --release -q -p gateway-example --features gateway-example/system-allocator \
    --bin gateway-example
  cargo build --release -q -p plume-bench --bin sockets
fi
TARGET=$(cargo_target_dir)
GX=$TARGET/release/gateway-example
export PLUME_DISCOVERY=loopback PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM" RUST_LOG=warn
ulimit -n "$(ulimit -Hn)"

profile() { # N: the gateway under heaptrack with N sockets; writes $WORK/heap-N.zst
  local n=$1 pg pa gw="gateway-$1" replica="todos-$1"
  local env=(env "PLUME_ENV=bench-heap-$$-$n" "PLUME_DISCOVERY_PORT=$(free_port udp)")
  pg=$(free_port tcp)
  pa=$(free_port tcp)
  mkfifo "$WORK/pipe-$n"
  "$INTERPRET" <"$WORK/pipe-$n" | zstd -q -c >"$WORK/heap-$n.zst" &
  local interpret=$!
  start "$gw" "${env[@]}" "LD_PRELOAD=$PRELOAD" "DUMP_HEAPTRACK_OUTPUT=$WORK/pipe-$n" \
    "$GX" gateway --port "$pg"
  start "$replica" "${env[@]}" "$GX" todos --name todos-a --port "$pa" --store memory
  wait_line "$gw" "gateway listening on"
  wait_line "$replica" "listening on"
  "$TARGET/release/sockets" --gateway "127.0.0.1:$pg" --replica "127.0.0.1:$pa" --sockets "$n" \
    --events "${BENCH_SOCKETS_EVENTS:-1}" --sources 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 \
    --gateway-pid "${PID_OF[$gw]}" 2>>"$WORK/client.log" | sed "s/^/  $n sockets: /" >&2
  stop_pid "${PID_OF[$gw]}"
  stop_pid "${PID_OF[$replica]}"
  wait "$interpret"
}

for n in "${SIZES[@]}"; do profile "$n"; done
a=${SIZES[0]} b=${SIZES[1]}
heaptrack_print -f "$WORK/heap-$b.zst" -d "$WORK/heap-$a.zst" -m 0 -p 1 -a 0 -T 0 -n 60 \
  2>/dev/null >"$WORK/peaks.txt"
python3 bench/heap_sockets_sites.py "$WORK/peaks.txt" "$((b - a))"
