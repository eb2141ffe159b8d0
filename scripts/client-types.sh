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
for tool in node npm cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "client-types.sh: $tool is required" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/plume-client-types.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -C "$root/tests/client-types" --exclude=node_modules -cf - . | tar -C "$work" -xf -
echo "==> npm ci in $work"
(cd "$work" && npm ci --no-audit --no-fund --loglevel=error)

if [ -n "${PLUME_GATEWAY_BIN:-}" ]; then
  bin=$PLUME_GATEWAY_BIN
else
  cargo build --locked -p gateway-example
  bin="${CARGO_TARGET_DIR:-$root/target}/debug/gateway-example"
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
