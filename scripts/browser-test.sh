#!/usr/bin/env bash
# The browser test of the gateway demo: builds `gateway-example`, installs the test's pinned Node
# packages (tests/browser/package-lock.json) into a temporary directory with `npm ci`, and runs
# tests/browser/demo.test.mjs, which starts the demo on free loopback ports and drives headless
# Chromium against its page. Installs Debian's chromium when it is missing.
#
# Usage: scripts/browser-test.sh
# Env:   PLUME_CHROMIUM   the browser binary (default /usr/bin/chromium)
#        PLUME_ARTIFACTS  where screenshots go (default target/artifacts/browser)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

for tool in node npm cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "browser-test.sh: $tool is required" >&2; exit 1; }
done
if [ -z "${PLUME_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

echo "==> cargo build -p gateway-example"
cargo build --locked -p gateway-example
target_dir=$(cargo metadata --format-version 1 --no-deps | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
bin="$target_dir/debug/gateway-example"
artifacts=${PLUME_ARTIFACTS:-"$target_dir/artifacts/browser"}

rm -rf "$artifacts"
mkdir -p "$artifacts"

work=$(mktemp -d "${TMPDIR:-/tmp}/plume-browser.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
cp tests/browser/package.json tests/browser/package-lock.json tests/browser/*.mjs "$work/"
echo "==> npm ci in $work"
(cd "$work" && npm ci --no-audit --no-fund --loglevel=error)

echo "==> browser test against $bin (screenshots in $artifacts)"
cd "$work"
node demo.test.mjs --bin "$bin" --artifacts "$artifacts"
