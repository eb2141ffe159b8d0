#!/usr/bin/env bash
# The browser test of the gateway demo: builds `gateway-example`, installs the test's pinned Node
# packages (tests/browser/package-lock.json) into a temporary directory with `npm ci`, and runs
# tests/browser/demo.test.mjs, which starts the demo on free loopback ports and drives headless
# Chromium against its page. Installs Debian's chromium when it is missing.
#
# It runs the demo on each mesh backend: loopback (the default), NATS and Redis; then
# tests/browser/monitor.test.mjs, the mesh monitor page (/distribution/monitor) on loopback.
#
# Usage: scripts/browser-test.sh
# Env:   PLUME_CHROMIUM   the browser binary (default /usr/bin/chromium)
#        PLUME_ARTIFACTS  where screenshots go (default target/artifacts/browser)
#        PLUME_BROWSER_BACKENDS  the backends to run (default "loopback nats redis")
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# shellcheck source=scripts/lib/npm.sh
source "$root/scripts/lib/npm.sh"
need_tools browser-test.sh node npm cargo
if [ -z "${PLUME_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

echo "==> cargo build -p gateway-example"
cargo build --locked -p gateway-example
target_dir=$(cargo_target_dir)
bin="$target_dir/debug/gateway-example"
artifacts=${PLUME_ARTIFACTS:-"$target_dir/artifacts/browser"}

rm -rf "$artifacts"
mkdir -p "$artifacts"

work=$(mktemp -d "${TMPDIR:-/tmp}/plume-browser.XXXXXX")
trap 'rm -rf "$work"' EXIT
npm_ci_copy "$root/tests/browser" "$work"

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Wait (10 s at most) until 127.0.0.1:$1 accepts connections.
wait_port() {
  local deadline=$((SECONDS + 10))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "browser-test.sh: nothing listens on 127.0.0.1:$1" >&2
      return 1
    fi
    sleep 0.1
  done
}

# The same demo scenario on each mesh backend: the embedded loopback mesh, then NATS and Redis
# discovery (a real nats-server / redis-server on a free loopback port, stopped by PID).
backends=${PLUME_BROWSER_BACKENDS:-"loopback nats redis"}
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() { stop_server; rm -rf "$work"; }
trap cleanup EXIT

cd "$work"
for backend in $backends; do
  backend_env=()
  case "$backend" in
    loopback) ;;
    nats)
      port=$(free_port)
      nats-server -a 127.0.0.1 -p "$port" >"$work/nats.log" 2>&1 &
      server_pid=$!
      wait_port "$port"
      backend_env=(PLUME_DISCOVERY=nats "PLUME_NATS_URL=nats://127.0.0.1:$port")
      ;;
    redis)
      port=$(free_port)
      redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        >"$work/redis.log" 2>&1 &
      server_pid=$!
      wait_port "$port"
      backend_env=(PLUME_DISCOVERY=redis "PLUME_REDIS_URL=redis://127.0.0.1:$port")
      ;;
    *)
      echo "browser-test.sh: unknown backend $backend" >&2
      exit 1
      ;;
  esac
  echo "==> browser test on the $backend backend against $bin (screenshots in $artifacts/$backend)"
  mkdir -p "$artifacts/$backend"
  env "${backend_env[@]}" node demo.test.mjs --bin "$bin" --artifacts "$artifacts/$backend"
  stop_server
done

# The mesh monitor page (/distribution/monitor) on the loopback mesh: a gateway and two replicas,
# the page lists them, and a SIGKILLed replica leaves it live.
echo "==> browser test of the mesh monitor page against $bin (screenshots in $artifacts/monitor)"
node monitor.test.mjs --bin "$bin" --artifacts "$artifacts/monitor"
