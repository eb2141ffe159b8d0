#!/usr/bin/env bash
# Check the TypeScript declarations `gateway-example client-types` prints with `tsc`, against the
# Feathers client types: tests/client-types is copied to a temporary directory, its pinned
# packages (typescript, @feathersjs/feathers) are installed there with `npm ci`, and
#   1. the declarations and usage.ts (the demo's todos through feathers<ServiceTypes>(), with
#      @ts-expect-error on misuses they must refuse) must compile;
#   2. misuse.ts must NOT compile, with TS2322 at its create call.
#
# Usage: scripts/client-types.sh
# Env:   PLUME_GATEWAY_BIN  a prebuilt gateway-example (default: build target/debug/gateway-example)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/lib/npm.sh
source "$root/scripts/lib/npm.sh"
need_tools client-types.sh node npm cargo

work=$(mktemp -d "${TMPDIR:-/tmp}/plume-client-types.XXXXXX")
trap 'rm -rf "$work"' EXIT
npm_ci_copy "$root/tests/client-types" "$work"

if [ -n "${PLUME_GATEWAY_BIN:-}" ]; then
  bin=$PLUME_GATEWAY_BIN
else
  cargo build --locked -p gateway-example
  bin="$(cargo_target_dir)/debug/gateway-example"
fi
"$bin" client-types --out "$work/plume-services.d.ts"
grep -q "export interface ServiceTypes" "$work/plume-services.d.ts" \
  || { echo "client-types.sh: no ServiceTypes in the declarations" >&2; exit 1; }

echo "==> tsc: the declarations and usage.ts compile"
(cd "$work" && npx --no-install tsc -p tsconfig.json)

echo "==> tsc: misuse.ts is refused"
if out=$(cd "$work" && npx --no-install tsc -p tsconfig.misuse.json 2>&1); then
  echo "client-types.sh: misuse.ts type-checked, but it passes a number as a todo's text" >&2
  exit 1
fi
echo "$out"
if ! grep -q "misuse.ts(.*error TS2322" <<<"$out"; then
  echo "client-types.sh: misuse.ts failed for another reason than the expected TS2322" >&2
  exit 1
fi
echo "client-types: 2 passed, 0 failed"
