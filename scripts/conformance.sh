#!/usr/bin/env bash
# Run the official Feathers v5 conformance suite (tests/conformance) against Plume's
# conformance server. The suite is copied to a temporary directory and its pinned Node packages are
# installed there with `npm ci` once (nothing is installed anywhere else), then run against:
#   1. the local server (everything in one process);
#   2. `--distributed` (todos in a child process, reached through the mesh, loopback discovery);
#   3. `--distributed` on NATS and 4. on Redis (PLUME_DISCOVERY=nats|redis), each against a real
#      nats-server / redis-server started here on a free loopback port and killed by PID at exit.
#      These two runs are skipped (with a note) when the server binary is not installed, unless
#      CI is set, where a missing one is an error.
# Every run passes only when the suite prints exactly `conformance: 125 passed, 0 failed`.
#
# Usage: scripts/conformance.sh
# Env:   PLUME_CONFORMANCE_DIR  the suite (default tests/conformance in this repository)
#        PLUME_CONFORMANCE_BIN  a prebuilt server binary (default: build target/debug/conformance-server)
#        PLUME_CONFORMANCE_EXPECT  the expected summary line (default: 125 passed, 0 failed)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

suite=${PLUME_CONFORMANCE_DIR:-"$root/tests/conformance"}
expect=${PLUME_CONFORMANCE_EXPECT:-"conformance: 125 passed, 0 failed"}

if [ ! -f "$suite/conformance.mjs" ] || [ ! -f "$suite/package-lock.json" ]; then
  echo "conformance.sh: no suite with a lockfile at $suite" >&2
  exit 1
fi
# shellcheck source=scripts/lib/npm.sh
source "$root/scripts/lib/npm.sh"
need_tools conformance.sh node npm cargo

work=$(mktemp -d "${TMPDIR:-/tmp}/plume-conformance.XXXXXX")
trap 'rm -rf "$work"' EXIT

npm_ci_copy "$suite" "$work"

if [ -n "${PLUME_CONFORMANCE_BIN:-}" ]; then
  bin=$PLUME_CONFORMANCE_BIN
else
  echo "==> cargo build -p plume-tests --bin conformance-server"
  cargo build --locked -p plume-tests --bin conformance-server
  target_dir=$(cargo_target_dir)
  bin="$target_dir/debug/conformance-server"
fi
[ -x "$bin" ] || { echo "conformance.sh: server binary $bin not found" >&2; exit 1; }

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Servers started here, killed by PID at exit.
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# run_suite LABEL [VAR=VALUE ...] -- SERVER-ARGS...: one run of the suite; returns non-zero on failure.
failed=()
run_suite() {
  local label=$1; shift
  local vars=()
  while [ "$1" != "--" ]; do vars+=("$1"); shift; done
  shift
  local port out status=0
  port=$(free_port)
  out="$work/output-$label.txt"
  echo "==> conformance suite ($label) against $bin $* on 127.0.0.1:$port"
  (cd "$work" && env ${vars[@]+"${vars[@]}"} PLUME_ENV="conformance-$label-$$-$RANDOM" \
    node run-with-server.mjs --port "$port" -- "$bin" "$@" --port '{port}') \
    | tee "$out" | grep -E '^(not ok|conformance:)' || status=$?
  if grep -qxF "$expect" "$out"; then
    echo "==> conformance ($label) passed ($expect)"
    return 0
  fi
  echo "conformance.sh: ($label) expected '$expect' (suite exit status $status); failing checks:" >&2
  # Each failing check with the assertion and the last HTTP exchange the suite prints after it.
  awk '/^not ok/ { show = 1 } /^ok / || /^conformance:/ { show = 0 } show' "$out" | head -n 300 >&2
  failed+=("$label")
}

# wait_port PORT: until 127.0.0.1:PORT accepts connections (10 s deadline).
wait_port() {
  node -e '
    const net = require("net"); const port = Number(process.argv[1]); const end = Date.now() + 10000
    const tryOnce = () => { const s = net.connect(port, "127.0.0.1")
      s.once("connect", () => { s.end(); process.exit(0) })
      s.once("error", () => { if (Date.now() > end) process.exit(1); setTimeout(tryOnce, 20) }) }
    tryOnce()' "$1"
}

# backend_server KIND: start nats-server or redis-server on a free loopback port; prints the URL.
backend_server() {
  local kind=$1 port
  port=$(free_port)
  case $kind in
    nats) nats-server -a 127.0.0.1 -p "$port" >"$work/nats.log" 2>&1 &
          pids+=($!); url="nats://127.0.0.1:$port" ;;
    redis) (cd "$work" && exec redis-server --save '' --appendonly no --bind 127.0.0.1 --port "$port") \
             >"$work/redis.log" 2>&1 &
          pids+=($!); url="redis://127.0.0.1:$port" ;;
  esac
  wait_port "$port" || { echo "conformance.sh: $kind server not ready on $port" >&2; return 1; }
}

run_suite local --
run_suite distributed -- --distributed
for kind in nats redis; do
  if ! command -v "$kind-server" >/dev/null 2>&1; then
    if [ -n "${CI:-}" ]; then
      echo "conformance.sh: $kind-server is not installed" >&2; failed+=("$kind"); continue
    fi
    echo "==> skipping the distributed run on $kind: $kind-server is not installed"
    continue
  fi
  backend_server "$kind" || { failed+=("$kind"); continue; }
  upper=$(echo "$kind" | tr a-z A-Z)
  run_suite "distributed-$kind" PLUME_DISCOVERY="$kind" "PLUME_${upper}_URL=$url" -- --distributed
done

if [ ${#failed[@]} -eq 0 ]; then
  echo "==> conformance passed on every run"
  exit 0
fi
echo "conformance.sh: failed runs: ${failed[*]}" >&2
exit 1
