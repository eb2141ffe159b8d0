#!/usr/bin/env bash
# The whole Plume test suite: formatting, lints, Rust tests (unit, component, multi-process,
# multi-host), the official Feathers JS conformance suite, and the gateway demo in headless
# Chromium. Installs what the tests need when it is missing. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# run_step NAME CMD...: one timed step of the suite (CMD may be a shell function). A failing CMD
# stops the suite (set -e); the timings of the steps run so far, the failed one included, are
# printed at exit either way.
step_names=()
step_secs=()
current_step=
run_step() {
  current_step=$1
  shift
  step "$current_step"
  step_start=$(date +%s)
  "$@"
  step_names+=("$current_step")
  step_secs+=($(($(date +%s) - step_start)))
  current_step=
}
print_timings() {
  local status=$? i total=0
  if [ -n "$current_step" ]; then
    step_names+=("$current_step (FAILED)")
    step_secs+=($(($(date +%s) - step_start)))
  fi
  [ ${#step_names[@]} -gt 0 ] || return "$status"
  printf '\n%-60s %8s\n' step seconds
  for i in "${!step_names[@]}"; do
    printf '%-60s %8d\n' "${step_names[$i]}" "${step_secs[$i]}"
    total=$((total + step_secs[i]))
  done
  printf '%-60s %8d\n' total "$total"
  return "$status"
}
trap print_timings EXIT

# --- what the tests need -----------------------------------------------------------------------
need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# The NATS and Redis backend tests start real servers on free loopback ports.
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# The SQL adapter's tests start a private PostgreSQL (on PATH or in Debian's own directory).
if ! command -v initdb >/dev/null 2>&1 || ! command -v pg_ctl >/dev/null 2>&1; then
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || need_apt+=(postgresql)
fi
install_apt() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
}
if [ ${#need_apt[@]} -gt 0 ]; then
  run_step "installing ${need_apt[*]}" install_apt
fi

# --- Rust ----------------------------------------------------------------------------------------
rust_tests() {
  if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --locked --doc
  else
    cargo test --workspace --locked --no-fail-fast
  fi
}
# The minimal Cargo feature sets build and lint cleanly, so a feature gate cannot rot; clippy is
# a check build with lints. The transport's unit tests also run without its backends (a backend
# whose feature is off must be an error naming the feature).
feature_sets() {
  local set
  for set in "plume --no-default-features" \
    "plume --no-default-features --features server" \
    "plume --no-default-features --features auth" \
    "plume-transport --no-default-features" \
    "plume-transport --no-default-features --features nats" \
    "plume-transport --no-default-features --features redis" \
    "gateway-example --no-default-features"; do
    step "cargo clippy -p $set"
    # shellcheck disable=SC2086 # the set is words on purpose
    cargo clippy --locked -p $set -- -D warnings
  done
  cargo test --locked -p plume-transport --no-default-features --lib -- discovery::config mesh::tests
}
run_step "cargo fmt --check" cargo fmt --all --check
run_step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
run_step "cargo test" rust_tests
run_step "feature sets" feature_sets

# --- Feathers JS clients (the suite and its lockfile are in tests/conformance) -------------------
run_step "Feathers conformance suite" scripts/conformance.sh
run_step "Feathers adapter suite (memory, SQLite, PostgreSQL)" scripts/adapter-tests.sh
run_step "TypeScript client declarations (tsc)" scripts/client-types.sh

# --- the gateway demo in a browser ----------------------------------------------------------------
run_step "browser test (gateway demo in headless Chromium)" scripts/browser-test.sh

step "all test steps passed"
