# The services curve of bench/scale.sh (docs/benchmarks.md, "Scale curves: nodes, services,
# NATS"; issue 22, part 2): a fresh gateway (gateway-example gateway, JWT on every proxy), then
# three publishers (bench/src/bin/services_node.rs) that each publish the same N in-memory
# services svc-0 … svc-{N-1} (so N proxies with three providers each), on a private loopback
# mesh. For each N:
#   - services_N_mount_ms: from the publishers' spawn until the gateway's
#     GET /distribution/mounted says N proxies; services_N_mount_after_publish_ms from the last
#     publisher's "published" line (its services exist on the mesh) to the same moment;
#     services_N_all_providers_ms until the proxies have all 3 N providers;
#   - services_N_rss_base_kib (the gateway before the publishers) and services_N_rss_kib (with N
#     mounted), services_N_rss_load_kib after the GET runs;
#   - GET /svc-{N-1} through the gateway, 64 connections (wrk_run: services_N_get_*), once every
#     N is mounted: the gateways of all N stay up (idle) and the runs go round the sizes in turn,
#     so a drift of the machine's load does not land on one N.
# Sourced by bench/scale.sh; needs GX, SERVICES_NODE, PROBE and the helpers of run.sh's kind.
# shellcheck shell=bash

SERVICE_COUNTS=(${BENCH_SERVICES:-1 100 1000})

services_point() { # N
  local n=$1 pg gw prefix="services-$1" pids=() t0 ms last r i
  pg=$(free_port tcp)
  gw="http://127.0.0.1:$pg"
  local env=(env "PLUME_ENV=bench-services-$$-$n-$RANDOM" PLUME_DISCOVERY=loopback
    "PLUME_DISCOVERY_PORT=$(free_port udp)")
  start "gateway-$prefix" "${env[@]}" "$GX" gateway --port "$pg"
  pids+=("${PID_OF[gateway-$prefix]}")
  if ! wait_for "$gw/distribution/mounted" '"count":0}' 30000; then
    log "services $n: the gateway did not start"
    SVC_PIDS+=("${pids[@]}")
    return 0
  fi
  GW=$gw login
  put "services_${n}_rss_base_kib" "$(rss_kib "${PID_OF[gateway-$prefix]}")"
  put "services_${n}_mount_load" "$(loadavg)"
  t0=$(now_us)
  for i in 1 2 3; do
    start "$prefix-p-$i" "${env[@]}" "$SERVICES_NODE" "p$i" "$n"
    pids+=("${PID_OF[$prefix-p-$i]}")
  done
  # Every 5 ms: a finer poll would take CPU from the gateway while it mounts.
  if ms=$(PROBE_INTERVAL_MS=5 "$PROBE" until "$gw/distribution/mounted" "\"count\":$n}" 60000 "$t0"); then
    put "services_${n}_mount_ms" "$ms"
    if wait_lines "$prefix-p" 3 "published" 60; then
      last=$(last_stamp "$prefix-p" "published")
      put "services_${n}_mount_after_publish_ms" \
        "$(awk -v t0="$t0" -v ms="$ms" -v l="$last" 'BEGIN {printf "%.1f", (t0 + ms * 1000 - l) / 1000}')"
    fi
    log "services $n: mounted $ms ms after the publishers' spawn"
  else
    log "services $n: the gateway did not mount $n services in 60 s"
  fi
  if ms=$(PROBE_INTERVAL_MS=20 "$PROBE" until "$gw/distribution/mounted?providers" \
    "\"count\":$n,\"providers\":$((3 * n))}" 60000 "$t0"); then
    put "services_${n}_all_providers_ms" "$ms"
    put "services_${n}_rss_kib" "$(rss_kib "${PID_OF[gateway-$prefix]}")"
    PROBE_TOKEN=$TOKEN wait_for "$gw/svc-$((n - 1))" "svc-$((n - 1)) on p" 10000 "$TOKEN"
    SVC_GW[$n]=$gw
    SVC_TOKEN[$n]=$TOKEN
  else
    log "services $n: not all 3 × $n providers in 60 s"
  fi
  SVC_PIDS+=("${pids[@]}")
}

services_gets() { # the GET runs, round by round over the mounted sizes
  local r n
  for r in $(seq 1 "$RUNS"); do
    for n in "${SERVICE_COUNTS[@]}"; do
      [[ -n ${SVC_GW[$n]:-} ]] || continue
      WRK_HEADER="Authorization: Bearer ${SVC_TOKEN[$n]}" \
        wrk_run "services_${n}_get" "$r" "${SVC_GW[$n]}/svc-$((n - 1))" 64
    done
  done
  for n in "${SERVICE_COUNTS[@]}"; do
    [[ -n ${SVC_GW[$n]:-} ]] || continue
    put "services_${n}_rss_load_kib" "$(rss_kib "${PID_OF[gateway-services-$n]}")"
  done
}

run_services_curve() {
  put services_sizes "${SERVICE_COUNTS[*]}"
  log "services curve: ${SERVICE_COUNTS[*]} services published by 3 nodes ($RUNS wrk runs each)"
  local n
  declare -gA SVC_GW=() SVC_TOKEN=()
  SVC_PIDS=()
  for n in "${SERVICE_COUNTS[@]}"; do services_point "$n"; done
  services_gets
  stop_group "${SVC_PIDS[@]}"
}
