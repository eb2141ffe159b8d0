# Helpers of the test scripts that run Node packages from a lockfile in this repository
# (sourced, not run).
#
#   source scripts/lib/npm.sh
#   need_tools NAME node npm cargo   # exit 1 naming the first missing tool
#   npm_ci_copy DIR WORK             # copy DIR (without node_modules) into WORK, `npm ci` there
#   cargo_target_dir                 # the workspace's target directory
# shellcheck shell=bash

need_tools() { # NAME TOOL...: every TOOL is on PATH, or NAME says which is missing
  local name=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$name: $tool is required" >&2; exit 1; }
  done
}

npm_ci_copy() { # DIR WORK: the packages DIR's lockfile pins, installed into WORK
  # Copied without any node_modules a developer may have installed next to it.
  tar -C "$1" --exclude=node_modules -cf - . | tar -C "$2" -xf -
  echo "==> npm ci in $2"
  (cd "$2" && npm ci --no-audit --no-fund --loglevel=error)
}

cargo_target_dir() { # the target directory cargo builds into (CARGO_TARGET_DIR or the default)
  cargo metadata --format-version 1 --no-deps | node -e \
    'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))'
}
