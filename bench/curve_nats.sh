# The NATS curve of bench/scale.sh (docs/benchmarks.md, "Scale curves: nodes, services, NATS";
# issue 22, part 2): the NATS backend against the TCP mesh (loopback discovery) at N nodes.
# A nats-server on 127.0.0.1 carries every NATS figure. For each N and each backend:
#   - nats_N_disc_{tcp,nats}_ms_rR: N mesh nodes (bench/src/bin/mesh_node.rs) started together,
#     from the first spawn to the last node seeing all the others;
#   - a gateway and N-1 todos replicas (memory store): nats_N_gwdisc_{tcp,nats}_ms from the
#     replicas' spawn until the gateway's todos proxy has all N-1 providers;
#   - GET /todos through the gateway, 64 connections, the two backends' topologies side by side
#     and measured in turn (wrk_run: nats_N_get_{tcp,nats}_*).
# Sourced by bench/scale.sh; needs GX, MESH_NODE, PROBE and the helpers of run.sh's kind.
# shellcheck shell=bash

NATS_NODE_COUNTS=(${BENCH_NATS_NODES:-2 8 16})
NATS_PORT=""

backend_env() { # tcp|nats SUFFIX: the env command of a private mesh on that backend
  if [[ $1 == nats ]]; then
    printf '%s\n' env -u PLUME_DISCOVERY_PORT "PLUME_ENV=bench-$2-$$-$RANDOM" PLUME_DISCOVERY=nats \
      "PLUME_NATS_URL=nats://127.0.0.1:$NATS_PORT"
  else
    printf '%s\n' env "PLUME_ENV=bench-$2-$$-$RANDOM" PLUME_DISCOVERY=loopback \
      "PLUME_DISCOVERY_PORT=$(free_port udp)"
  fi
}

nats_discovery() { # N BACKEND RUN: N mesh nodes, first spawn → all see all
  local n=$1 b=$2 r=$3 prefix="natsdisc-$1-$2-$3" pids=() t0 last i env
  mapfile -t env < <(backend_env "$b" "disc")
  t0=$(now_us)
  for i in $(seq 1 "$n"); do
    start "$prefix-$i" "${env[@]}" "$MESH_NODE" "n$i" $((n - 1))
    pids+=("${PID_OF[$prefix-$i]}")
  done
  if wait_lines "$prefix" "$n" "sees all" 60; then
    last=$(last_stamp "$prefix" "sees all")
    put "nats_${n}_disc_${b}_ms_r$r" "$(ms_between "$t0" "$last")"
  fi
  stop_group "${pids[@]}"
}

NATS_TOPO_PIDS=()
nats_topology() { # N BACKEND: a gateway and N-1 replicas; sets TOPO_GW and TOPO_TOKEN
  local n=$1 b=$2 pg i port t0 ms env
  mapfile -t env < <(backend_env "$b" "topo")
  pg=$(free_port tcp)
  TOPO_GW="http://127.0.0.1:$pg"
  start "natsgw-$n-$b" "${env[@]}" "$GX" gateway --port "$pg"
  NATS_TOPO_PIDS+=("${PID_OF[natsgw-$n-$b]}")
  wait_for "$TOPO_GW/distribution/mounted" '"count":' 30000 || return 1
  t0=$(now_us)
  for i in $(seq 1 $((n - 1))); do
    port=$(free_port tcp)
    start "natstodos-$n-$b-$i" "${env[@]}" "$GX" todos --name "todos-$i" --port "$port" --store memory
    NATS_TOPO_PIDS+=("${PID_OF[natstodos-$n-$b-$i]}")
  done
  if ms=$(PROBE_INTERVAL_MS=5 "$PROBE" until "$TOPO_GW/distribution/mounted?providers" \
    "\"count\":1,\"providers\":$((n - 1))}" 60000 "$t0"); then
    put "nats_${n}_gwdisc_${b}_ms" "$ms"
  else
    log "nats $n $b: the gateway did not see its $((n - 1)) replicas in 60 s"
    return 1
  fi
  GW=$TOPO_GW login
  TOPO_TOKEN=$TOKEN
}

nats_point() { # N
  local n=$1 r b gw_tcp gw_nats tok_tcp tok_nats
  for r in $(seq 1 "$RUNS"); do
    for b in tcp nats; do nats_discovery "$n" "$b" "$r"; done
  done
  NATS_TOPO_PIDS=()
  if nats_topology "$n" tcp; then
    gw_tcp=$TOPO_GW tok_tcp=$TOPO_TOKEN
    if nats_topology "$n" nats; then
      gw_nats=$TOPO_GW tok_nats=$TOPO_TOKEN
      for r in $(seq 1 "$RUNS"); do
        WRK_HEADER="Authorization: Bearer $tok_tcp" wrk_run "nats_${n}_get_tcp" "$r" "$gw_tcp/todos" 64
        WRK_HEADER="Authorization: Bearer $tok_nats" wrk_run "nats_${n}_get_nats" "$r" "$gw_nats/todos" 64
      done
    fi
  fi
  stop_group "${NATS_TOPO_PIDS[@]}"
}

run_nats_curve() {
  put nats_sizes "${NATS_NODE_COUNTS[*]}"
  if ! command -v nats-server >/dev/null 2>&1; then
    log "installing nats-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
  fi
  NATS_PORT=$(free_port tcp)
  start scale-nats nats-server -a 127.0.0.1 -p "$NATS_PORT"
  wait_line scale-nats "Server is ready"
  log "NATS curve: ${NATS_NODE_COUNTS[*]} nodes, NATS against the TCP mesh ($RUNS runs each)"
  local n
  for n in "${NATS_NODE_COUNTS[@]}"; do nats_point "$n"; done
  stop_group "${PID_OF[scale-nats]}"
}
