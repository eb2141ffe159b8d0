#!/usr/bin/env bash
# What metrics and trace contexts cost the gateway (issue 19's target: a gateway GET with metrics
# and tracing on ≥ 0.95 × the same run with both off). One release binary of gateway-example, two
# topologies on private loopback meshes (gateway + todos-a + todos-b each, --store memory): one
# with PLUME_OBSERVABILITY=off (no metrics recorder, no trace context), one as the demo runs
# (metrics recorded, every request in a trace, no exporter attached). wrk GETs /todos through
# each gateway with a JWT, interleaved, BENCH_RUNS (default 5) runs of BENCH_SECONDS (default 10)
# s at 64 connections; prints the medians and the ratio on / off.
#
#   bench/observability.sh
#
# Run it on a quiet machine. Kills only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${BENCH_RUNS:-5}
SECS=${BENCH_SECONDS:-10}
WORK=$(mktemp -d /tmp/plume-bench-obs.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

need_wrk
# BENCH_PROFILE=debug checks the script quickly with debug binaries (no figures from those).
PROFILE=${BENCH_PROFILE:-release}
log "building $PROFILE binaries"
cargo build --profile "${PROFILE/debug/dev}" -q -p gateway-example -p plume-bench
TARGET=$(cargo_target_dir)
GX=${BENCH_GATEWAY_BIN:-$TARGET/$PROFILE/gateway-example}
PROBE="$TARGET/$PROFILE/probe"
export PLUME_DISCOVERY=loopback
export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export RUST_LOG=${RUST_LOG:-warn}


ready() { # GATEWAY TOKEN: both replicas answer through the gateway
  wait_for "$1/todos" "Hello from todos-a" 30000 "$2" && wait_for "$1/todos" "Hello from todos-b" 30000 "$2"
}

topology obs-off PLUME_OBSERVABILITY=off
GW_OFF=$TOPO_GW
topology obs-on
GW_ON=$TOPO_GW
TOKEN_OFF=$(token "$GW_OFF")
TOKEN_ON=$(token "$GW_ON")
ready "$GW_OFF" "$TOKEN_OFF"
ready "$GW_ON" "$TOKEN_ON"
# The "on" gateway records and the "off" one does not: check both, so a mix-up cannot pass.
curl -sf "$GW_ON/metrics" | grep -q '^plume_calls_total' || { log "the on gateway has no metrics"; exit 1; }
[[ $(curl -s -o /dev/null -w '%{http_code}' "$GW_OFF/metrics") == 404 ]] ||
  { log "the off gateway serves metrics"; exit 1; }
curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN_ON" "$GW_ON/todos" | grep -qi '^traceparent:' ||
  { log "the on gateway answers no traceparent"; exit 1; }

log "GET /todos through the gateway, observability off and on, interleaved ($RUNS x ${SECS}s each)"
for r in $(seq 1 "$RUNS"); do
  WRK_HEADER="Authorization: Bearer $TOKEN_OFF" wrk_run get_off_c64 "$r" "$GW_OFF/todos" 64
  WRK_HEADER="Authorization: Bearer $TOKEN_ON" wrk_run get_on_c64 "$r" "$GW_ON/todos" 64
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    vals[k] = float(v)
def med(key, what):
    xs = [v for k, v in vals.items() if k.startswith(f"{key}_{what}_r")]
    return statistics.median(xs) if xs else float("nan")
failed = sum(v for k, v in vals.items() if "_failed_" in k)
off, on = med("get_off_c64", "rps"), med("get_on_c64", "rps")
print("| gateway GET /todos, 64 connections | req/s (median) | p50 µs | p99 µs |")
print("|---|---|---|---|")
for name, key in (("metrics and tracing off", "get_off_c64"), ("metrics and tracing on", "get_on_c64")):
    print(f"| {name} | {med(key, 'rps'):.0f} | {med(key, 'p50us'):.0f} | {med(key, 'p99us'):.0f} |")
print(f"\non / off = {on / off:.3f} (target ≥ 0.95); failed requests: {failed:.0f}")
sys.exit(1 if failed or off != off or on != on else 0)
EOF
