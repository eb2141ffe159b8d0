# The nodes curve of bench/scale.sh (docs/benchmarks.md, "Scale curves: nodes, services, NATS";
# issue 22, part 2): N mesh nodes (bench/src/bin/mesh_node.rs, one process each) on loopback
# discovery in a network namespace of their own, so that the namespace's multicast counters
# count their beacons and nothing else. For each N and run:
#   - nodes_N_converge_ms: from the first spawn to the last node seeing all the others (every
#     node prints the Unix-µs time it saw its last peer), and nodes_N_after_spawn_ms from the
#     last spawn; nodes_N_spawn_ms the spawning itself;
#   - over an idle window of BENCH_IDLE_SECONDS (default 10) s after a 2 s settle: CPU per node
#     (mean and max, % of one core, from /proc/PID/stat), RSS per node (mean and max, KiB), the
#     multicast packets and bytes per second the namespace sent (IP-level octets: the beacons);
#   - nodes_N_flaps: lines saying a node lost a peer (must be 0).
# Sourced by bench/scale.sh; needs MESH_NODE and the helpers of bench/lib.sh and scale_lib.sh.
# shellcheck shell=bash

NODE_COUNTS=(${BENCH_NODES:-2 8 16 32 64})
IDLE_SECONDS=${BENCH_IDLE_SECONDS:-10}

nodes_point() { # N RUN
  local n=$1 r=$2 i port prefix="nodes-$1-$2" pids=() t0 t1 last
  port=$(free_port udp)
  local env=(env "PLUME_ENV=bench-nodes-$$-$n-$r-$RANDOM" PLUME_DISCOVERY=loopback
    "PLUME_DISCOVERY_PORT=$port" "RUST_LOG=${RUST_LOG:-warn}")
  put "nodes_${n}_load_r$r" "$(loadavg)"
  t0=$(now_us)
  for i in $(seq 1 "$n"); do
    start "$prefix-$i" ip netns exec "$SCALE_NS" "${env[@]}" "$MESH_NODE" "n$i" $((n - 1))
    pids+=("${PID_OF[$prefix-$i]}")
  done
  t1=$(now_us)
  if wait_lines "$prefix" "$n" "sees all" 60; then
    last=$(last_stamp "$prefix" "sees all")
    put "nodes_${n}_converge_ms_r$r" "$(ms_between "$t0" "$last")"
    put "nodes_${n}_after_spawn_ms_r$r" "$(ms_between "$t1" "$last")"
    put "nodes_${n}_spawn_ms_r$r" "$(ms_between "$t0" "$t1")"
    log "nodes $n run $r: all see all $(ms_between "$t0" "$last") ms after the first spawn"
    sleep 2 # settle: the links' first pings and table exchanges are not idle
    local before=() after=() m0 m1 pid hz
    hz=$(getconf CLK_TCK)
    for pid in "${pids[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    m0=$(netns_mcast "$SCALE_NS")
    sleep "$IDLE_SECONDS" # the measuring window
    m1=$(netns_mcast "$SCALE_NS")
    for pid in "${pids[@]}"; do after+=("$(cpu_ticks "$pid")"); done
    local rss=()
    for pid in "${pids[@]}"; do rss+=("$(rss_kib "$pid")"); done
    python3 - "$n" "$r" "$hz" "$IDLE_SECONDS" "${before[*]}" "${after[*]}" "${rss[*]}" \
      "$m0" "$m1" >>"$RESULTS" <<'EOF'
import sys
n, r, hz, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
before, after, rss = (list(map(int, a.split())) for a in sys.argv[5:8])
(p0, o0), (p1, o1) = (map(int, a.split()) for a in sys.argv[8:10])
cpu = [(a - b) / hz / secs * 100 for a, b in zip(after, before)]
print(f"nodes_{n}_cpu_pct_r{r} {sum(cpu) / len(cpu):.3f}")
print(f"nodes_{n}_cpu_pct_max_r{r} {max(cpu):.3f}")
print(f"nodes_{n}_rss_kib_r{r} {sum(rss) / len(rss):.0f}")
print(f"nodes_{n}_rss_kib_max_r{r} {max(rss)}")
print(f"nodes_{n}_mcast_pps_r{r} {(p1 - p0) / secs:.1f}")
print(f"nodes_{n}_mcast_bps_r{r} {(o1 - o0) / secs:.1f}")
EOF
  fi
  put "nodes_${n}_flaps_r$r" "$(cat "$WORK/$prefix"-*.log | grep -c "lost a node" || true)"
  stop_group "${pids[@]}"
}

run_nodes_curve() {
  put nodes_sizes "${NODE_COUNTS[*]}"
  log "nodes curve: ${NODE_COUNTS[*]} mesh nodes in namespace $SCALE_NS ($RUNS runs each)"
  local n r
  for n in "${NODE_COUNTS[@]}"; do
    for r in $(seq 1 "$RUNS"); do nodes_point "$n" "$r"; done
  done
}
