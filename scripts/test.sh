#!/usr/bin/env bash
# The whole Plume test suite: formatting, lints, Rust tests (unit, component, multi-process,
# multi-host), the official Feathers JS conformance suite, and the gateway demo in headless
# Chromium. Installs what the tests need when it is missing. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

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
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- Rust ----------------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

# --- Feathers JS clients -------------------------------------------------------------------------
if [ -x scripts/conformance.sh ]; then
  step "Feathers conformance suite"
  scripts/conformance.sh
fi

# --- the gateway demo in a browser ----------------------------------------------------------------
step "browser test (gateway demo in headless Chromium)"
scripts/browser-test.sh

step "all test steps passed"
