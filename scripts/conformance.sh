#!/usr/bin/env bash
# Run the official Feathers v5 conformance suite (../shared/conformance) against Plume's
# conformance server. The suite is copied to a temporary directory and its pinned Node packages are
# installed there with `npm ci` (nothing is installed anywhere else). Passes only when the suite
# prints exactly `conformance: 125 passed, 0 failed`.
#
# Usage: scripts/conformance.sh
# Env:   PLUME_CONFORMANCE_DIR  the suite (default ../shared/conformance from the repository root)
#        PLUME_CONFORMANCE_BIN  a prebuilt server binary (default: build target/debug/conformance-server)
#        PLUME_CONFORMANCE_EXPECT  the expected summary line (default: 125 passed, 0 failed)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

suite=${PLUME_CONFORMANCE_DIR:-"$root/../shared/conformance"}
if [ -z "${PLUME_CONFORMANCE_DIR:-}" ] && [ ! -d "$suite" ]; then
  # A git worktree elsewhere: look beside the main checkout.
  common=$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
  if [ -n "$common" ] && [ -d "$common/../../shared/conformance" ]; then
    suite="$common/../../shared/conformance"
  fi
fi
expect=${PLUME_CONFORMANCE_EXPECT:-"conformance: 125 passed, 0 failed"}

if [ ! -f "$suite/conformance.mjs" ] || [ ! -f "$suite/package-lock.json" ]; then
  echo "conformance.sh: no suite with a lockfile at $suite" >&2
  exit 1
fi
for tool in node npm cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "conformance.sh: $tool is required" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/plume-conformance.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

# Copy the suite without any node_modules a developer may have installed next to it.
tar -C "$suite" --exclude=node_modules -cf - . | tar -C "$work" -xf -
echo "==> npm ci in $work"
(cd "$work" && npm ci --no-audit --no-fund --loglevel=error)

if [ -n "${PLUME_CONFORMANCE_BIN:-}" ]; then
  bin=$PLUME_CONFORMANCE_BIN
else
  echo "==> cargo build -p plume-tests --bin conformance-server"
  cargo build --locked -p plume-tests --bin conformance-server
  target_dir=$(cargo metadata --format-version 1 --no-deps | node -e \
    'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
  bin="$target_dir/debug/conformance-server"
fi
[ -x "$bin" ] || { echo "conformance.sh: server binary $bin not found" >&2; exit 1; }

# A free loopback port (the server binds 127.0.0.1 only).
port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

echo "==> conformance suite against $bin on 127.0.0.1:$port"
status=0
(cd "$work" && node run-with-server.mjs --port "$port" -- "$bin" --port '{port}') \
  | tee "$work/output.txt" || status=$?

if grep -qxF "$expect" "$work/output.txt"; then
  echo "==> conformance passed ($expect)"
  exit 0
fi
echo "conformance.sh: expected '$expect' (suite exit status $status); failing checks:" >&2
grep -E '^not ok' "$work/output.txt" >&2 || true
exit 1
