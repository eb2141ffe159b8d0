#!/usr/bin/env bash
# Run the official Feathers adapter suite, @feathersjs/adapter-tests 5.0.50 (pinned by
# tests/adapter/package-lock.json), through @feathersjs/rest-client against Plume's
# adapter-test-server backed by 1. the memory adapter, 2. SQLite (in memory) and 3. PostgreSQL
# (a private server: initdb in a temporary directory, a free loopback port, its socket in that
# directory, stopped by PID at exit). Every test the suite defines is selected; each run must
# report exactly 158 passed, 0 failed, 0 skipped (79 tests for `people`, 79 for
# `people-customid`). A missing PostgreSQL is a failure.
#
# Usage: scripts/adapter-tests.sh
# Env:   PLUME_ADAPTER_BIN  a prebuilt server (default: build target/debug/adapter-test-server)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
expect=158

# shellcheck source=scripts/lib/npm.sh
source "$root/scripts/lib/npm.sh"
need_tools adapter-tests.sh node npm cargo
# shellcheck source=scripts/lib/postgres.sh
source "$root/scripts/lib/postgres.sh"
pg_bin_dir >/dev/null || { echo "adapter-tests.sh: PostgreSQL (initdb, pg_ctl) is not installed" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/plume-adapter-tests.XXXXXX")
cleanup() {
  pg_stop
  rm -rf "$work"
}
trap cleanup EXIT

npm_ci_copy "$root/tests/adapter" "$work"

if [ -n "${PLUME_ADAPTER_BIN:-}" ]; then
  bin=$PLUME_ADAPTER_BIN
else
  echo "==> cargo build -p plume-tests --bin adapter-test-server"
  cargo build --locked -p plume-tests --bin adapter-test-server
  target_dir=$(cargo_target_dir)
  bin="$target_dir/debug/adapter-test-server"
fi
[ -x "$bin" ] || { echo "adapter-tests.sh: server binary $bin not found" >&2; exit 1; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

# --- a private PostgreSQL --------------------------------------------------------------------
pg_start "$work"

# --- the three runs ----------------------------------------------------------------------------
failed=()
run() {
  local store=$1; shift
  echo "==> adapter-tests on $store"
  (cd "$work" && node with-server.js --bin "$bin" --store "$store" --expect "$expect" "$@") \
    >"$work/$store.log" 2>&1 || failed+=("$store")
  grep -E '^adapter-tests \(' "$work/$store.log" || true
  if [[ " ${failed[*]-} " == *" $store "* ]]; then
    grep -E '^\s+[0-9]+\) |Error|expected' "$work/$store.log" | head -40 >&2 || true
  fi
}
run memory
run sqlite
run postgres --database-url "$pg_url"

if [ ${#failed[@]} -eq 0 ]; then
  echo "==> adapter-tests passed on memory, sqlite and postgres"
  exit 0
fi
echo "adapter-tests.sh: failed on: ${failed[*]}" >&2
exit 1
