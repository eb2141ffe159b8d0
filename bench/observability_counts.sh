#!/usr/bin/env bash
# What turning observability on costs besides user-space instructions (issue 19; the ratio is
# bench/observability.sh's, the instructions bench/observability_profile.sh's). The topologies of
# bench/observability.sh (a gateway and two replicas each, --store memory, on private loopback
# meshes; one with PLUME_OBSERVABILITY=off), loaded by wrk (64 connections, as the throughput
# bench) in interleaved rounds of COUNTS_SECONDS (default 5) s each, COUNTS_RUNS (default 3)
# rounds; per request of each process, summed over the rounds of each mode, from /proc before and
# after each run:
#   - CPU µs, user and system (utime and stime ticks of /proc/<pid>/stat);
#   - read-like and write-like syscalls and their bytes (syscr, syscw, rchar, wchar of
#     /proc/<pid>/io);
#   - context switches, voluntary and not (summed over /proc/<pid>/task/*/status), minor faults,
#     time spent waiting for a CPU (/proc/<pid>/task/*/schedstat);
#   - wrk's CPU and the machine's (/proc/stat: idle, softirq, ...) per request;
# and the CPU ticks each process burns idle over COUNTS_IDLE (default 10) s, and the size of one
# response. With COUNTS_STRACE=1, a further round per mode under `strace -c -f` gives every
# syscall per request (strace slows the processes: the counts, not the times, are the figures).
#
#   bench/observability_counts.sh
#
# COUNTS_COMPARE=workers compares worker-thread counts instead (the same topology twice, every
# process with PLUME_WORKERS=COUNTS_WORKERS_A, default 2, against COUNTS_WORKERS_B, default 1;
# the modes are named w2 and w1; COUNTS_WORKERS_VAR names another variable, e.g.
# TOKIO_WORKER_THREADS for a binary older than PLUME_WORKERS):
#
#   COUNTS_COMPARE=workers bench/observability_counts.sh
#
# Counts per request hardly depend on the machine's load (batching does a little: compare the
# modes of one run). Kills only the processes it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${COUNTS_RUNS:-3}
SECS=${COUNTS_SECONDS:-5}
IDLE=${COUNTS_IDLE:-10}
WORK=$(mktemp -d /tmp/plume-bench-obscounts.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

need_wrk
[[ -z ${COUNTS_STRACE:-} ]] || command -v strace >/dev/null || { log "strace is required"; exit 1; }
PROFILE=${BENCH_PROFILE:-release}
bench_bins "$PROFILE" "${COUNTS_BUILD:-1}"
export PLUME_DISCOVERY=loopback
export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
export RUST_LOG=${RUST_LOG:-warn}

snap() { # PID: "utime stime minflt syscr syscw rchar wchar vcsw nvcsw run-queue-wait-ns"
  local pid=$1
  python3 - "$pid" <<'EOF'
import glob, sys
pid = sys.argv[1]
stat = open(f"/proc/{pid}/stat").read()
f = stat[stat.rfind(")") + 2:].split()
minflt, utime, stime = int(f[7]), int(f[11]), int(f[12])
io = dict(l.split(": ") for l in open(f"/proc/{pid}/io").read().splitlines())
v = n = wait = 0
for st in glob.glob(f"/proc/{pid}/task/*/schedstat"):
    try:
        wait += int(open(st).read().split()[1])
    except OSError:
        pass
for st in glob.glob(f"/proc/{pid}/task/*/status"):
    try:
        for l in open(st):
            if l.startswith("voluntary_ctxt_switches"):
                v += int(l.split()[1])
            elif l.startswith("nonvoluntary_ctxt_switches"):
                n += int(l.split()[1])
    except OSError:
        pass
print(utime, stime, minflt, io["syscr"], io["syscw"], io["rchar"], io["wchar"], v, n, wait)
EOF
}

# The two modes (A and B) and the environment of each mode's three processes.
declare -A MODE_ENV=()
case ${COUNTS_COMPARE:-observability} in
  observability)
    MODES=(off on)
    MODE_ENV[off]=PLUME_OBSERVABILITY=off
    MODE_ENV[on]=
    ;;
  workers)
    wa=${COUNTS_WORKERS_A:-2} wb=${COUNTS_WORKERS_B:-1} wvar=${COUNTS_WORKERS_VAR:-PLUME_WORKERS}
    MODES=("w$wa" "w$wb")
    MODE_ENV[w$wa]=$wvar=$wa
    MODE_ENV[w$wb]=$wvar=$wb
    ;;
  *) log "COUNTS_COMPARE must be observability or workers"; exit 1 ;;
esac
MA=${MODES[0]} MB=${MODES[1]}
declare -A GW_OF=() TOKEN_OF=()
for m in "${MODES[@]}"; do
  # shellcheck disable=SC2086 # an empty MODE_ENV is no argument, a set one is VAR=VALUE
  topology "obs-$m" ${MODE_ENV[$m]}
  GW_OF[$m]=$TOPO_GW
done
for m in "${MODES[@]}"; do
  TOKEN_OF[$m]=$(token "${GW_OF[$m]}")
  wait_for "${GW_OF[$m]}/todos" "Hello from todos-a" 30000 "${TOKEN_OF[$m]}"
  wait_for "${GW_OF[$m]}/todos" "Hello from todos-b" 30000 "${TOKEN_OF[$m]}"
  # One response as wrk gets it: the status line, the headers and the body.
  put "${m}_response_bytes" "$(curl -s -i -H "Authorization: Bearer ${TOKEN_OF[$m]}" "${GW_OF[$m]}/todos" | wc -c)"
done
if [[ ${COUNTS_COMPARE:-observability} == observability ]]; then
  curl -s -D - -o /dev/null -H "Authorization: Bearer ${TOKEN_OF[on]}" "${GW_OF[on]}/todos" |
    grep -qi '^traceparent:' || { log "the on gateway answers no traceparent"; exit 1; }
  [[ $(curl -s -o /dev/null -w '%{http_code}' "${GW_OF[off]}/metrics") == 404 ]] ||
    { log "the off gateway serves metrics"; exit 1; }
fi

PROCS=(gateway todos-a todos-b)
pids() { local n; for n in "${PROCS[@]}"; do printf '%s ' "${PID_OF[$n-obs-$1]}"; done; }

idle() { # MODE: ticks each process burns with no requests
  local m=$1 p before=() after=() i
  for p in $(pids "$m"); do before+=("$(snap "$p")"); done
  sleep "$IDLE"
  for p in $(pids "$m"); do after+=("$(snap "$p")"); done
  for i in "${!PROCS[@]}"; do
    put "${m}_${PROCS[$i]}_idle" "$(python3 -c 'import sys
a, b = (list(map(int, s.split())) for s in sys.argv[1:3])
print(f"{(b[0] + b[1]) - (a[0] + a[1])}:{b[7] - a[7]}")' "${before[$i]}" "${after[$i]}")"
  done
}

run() { # MODE ROUND: one wrk run; appends MODE_PROC_delta_rROUND (the snap fields' differences)
  local m=$1 r=$2 p before=() after=() i out n
  local cpu0 cpu1
  cpu0=$(head -1 /proc/stat)
  for p in $(pids "$m"); do before+=("$(snap "$p")"); done
  out=$(/usr/bin/time -f 'wrkcpu %U %S' wrk -t 2 -c 64 -d "${SECS}s" \
    -H "Authorization: Bearer ${TOKEN_OF[$m]}" "${GW_OF[$m]}/todos" 2>&1)
  for p in $(pids "$m"); do after+=("$(snap "$p")"); done
  cpu1=$(head -1 /proc/stat)
  n=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
  # wrk's own CPU (s), and the machine's: "user nice system idle iowait irq softirq" ticks
  put "${m}_wrk_r$r" "$(printf '%s\n' "$out" | awk '/^wrkcpu/ {print $2 + $3}')"
  put "${m}_machine_r$r" "$(python3 -c 'import sys
a, b = (list(map(int, s.split()[1:8])) for s in sys.argv[1:3])
print(",".join(str(y - x) for x, y in zip(a, b)))' "$cpu0" "$cpu1")"
  if printf '%s\n' "$out" | grep -q 'Non-2xx'; then log "$m: failed requests"; exit 1; fi
  put "${m}_requests_r$r" "$n"
  for i in "${!PROCS[@]}"; do
    put "${m}_${PROCS[$i]}_r$r" "$(python3 -c 'import sys
a, b = (list(map(int, s.split())) for s in sys.argv[1:3])
print(",".join(str(y - x) for x, y in zip(a, b)))' "${before[$i]}" "${after[$i]}")"
  done
}

strace_run() { # MODE: one more wrk run with strace -c -f on every process
  local m=$1 p spids=() n i
  i=0
  for p in $(pids "$m"); do
    strace -c -f -q -p "$p" -o "$WORK/strace-$m-${PROCS[$i]}.txt" &
    spids+=("$!")
    i=$((i + 1))
  done
  sleep 1 # strace attaches asynchronously and says nothing when it has: give it a moment
  n=$(wrk -t 2 -c 64 -d "${SECS}s" -H "Authorization: Bearer ${TOKEN_OF[$m]}" "${GW_OF[$m]}/todos" |
    awk '/requests in/ {print $1}')
  for p in "${spids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${spids[@]}"; do wait "$p" 2>/dev/null || true; done
  put "${m}_strace_requests" "$n"
}

log "idle CPU, ${IDLE}s per mode"
idle "$MA"
idle "$MB"
log "wrk GET /todos, $RUNS interleaved rounds of ${SECS}s per mode"
for r in $(seq 1 "$RUNS"); do
  run "$MA" "$r"
  run "$MB" "$r"
done
if [[ -n ${COUNTS_STRACE:-} ]]; then
  log "one round per mode under strace -c -f"
  strace_run "$MA"
  strace_run "$MB"
fi

TICK_US=$((1000000 / $(getconf CLK_TCK)))
python3 - "$RESULTS" "$TICK_US" "$IDLE" "$WORK" "${COUNTS_STRACE:-}" "$MA" "$MB" <<'EOF'
import os, sys
path, tick_us, idle_s, work, strace = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
A, B = sys.argv[6], sys.argv[7]
vals = dict(line.split(None, 1) for line in open(path))
vals = {k: v.strip() for k, v in vals.items()}
procs = ["gateway", "todos-a", "todos-b"]
print(f"response bytes (status line, headers, body): {A} {vals[f'{A}_response_bytes']}, {B} {vals[f'{B}_response_bytes']}")
print()
names = ["CPU µs", "user µs", "system µs", "minor faults", "read syscalls", "write syscalls",
         "bytes read", "bytes written", "voluntary switches", "involuntary switches",
         "µs waiting for a CPU (run queue; live threads)"]
def per(mode):
    reqs = sum(int(v) for k, v in vals.items() if k.startswith(f"{mode}_requests_r"))
    out = {}
    for p in procs:
        tot = [0] * 10
        for k, v in vals.items():
            if k.startswith(f"{mode}_{p}_r"):
                tot = [a + int(b) for a, b in zip(tot, v.split(","))]
        u, s = tot[0] * tick_us / reqs, tot[1] * tick_us / reqs
        out[p] = [u + s, u, s] + [x / reqs for x in tot[2:9]] + [tot[9] / 1000 / reqs]
    out["all"] = [sum(out[p][i] for p in procs) for i in range(len(names))]
    return reqs, out
roff, off = per(A)
ron, on = per(B)
print(f"requests: {A} {roff:,}, {B} {ron:,} ({B} / {A} = {ron / roff:.3f})")
print()
print(f"| per GET /todos | process | {A} | {B} | {B} − {A} |")
print("|---|---|---|---|---|")
for i, name in enumerate(names):
    for p in procs + ["all"]:
        a, b = off[p][i], on[p][i]
        print(f"| {name} | {p} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
for mode, reqs in ((A, roff), (B, ron)):
    wrk = sum(float(v) for k, v in vals.items() if k.startswith(f"{mode}_wrk_r"))
    mach = [0] * 7
    for k, v in vals.items():
        if k.startswith(f"{mode}_machine_r"):
            mach = [a + int(b) for a, b in zip(mach, v.split(","))]
    us = [x * tick_us / reqs for x in mach]
    print(f"{mode}: wrk {wrk * 1e6 / reqs:.2f} µs CPU per request; the machine per request (µs): "
          f"user {us[0]:.2f}, nice {us[1]:.2f}, system {us[2]:.2f}, idle {us[3]:.2f}, "
          f"iowait {us[4]:.2f}, irq {us[5]:.2f}, softirq {us[6]:.2f}")
print()
print(f"| idle over {idle_s} s | process | {A}: CPU ms, voluntary switches | {B} |")
print("|---|---|---|---|")
for p in procs:
    a = vals[f"{A}_{p}_idle"].split(":")
    b = vals[f"{B}_{p}_idle"].split(":")
    print(f"| | {p} | {int(a[0]) * tick_us / 1000:.0f} ms, {a[1]} | {int(b[0]) * tick_us / 1000:.0f} ms, {b[1]} |")
if strace:
    print()
    print(f"| syscalls per GET (strace -c -f) | process | {A} | {B} |")
    print("|---|---|---|---|")
    for p in procs:
        calls = {}
        for m in (A, B):
            n = int(vals[f"{m}_strace_requests"])
            for line in open(os.path.join(work, f"strace-{m}-{p}.txt")):
                f = line.split()
                if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                    calls.setdefault(f[-1], {})[m] = int(f[3]) / n
        for c, d in sorted(calls.items(), key=lambda kv: -kv[1].get(B, 0)):
            if max(d.values()) >= 0.01:
                print(f"| {c} | {p} | {d.get(A, 0):.3f} | {d.get(B, 0):.3f} |")
EOF
