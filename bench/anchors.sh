# The anchors of bench/run.sh (docs/benchmarks.md, "Anchors"; issue 22, part 1): what a user
# would put in front of the same replicas instead of Plume's gateway, measured in the same run,
# turn about with the gateway:
#   - nginx as a plain reverse proxy (keepalive upstream pool) in front of the same Plume replica,
#     with 1 and with 2 worker processes;
#   - Moleculer 0.15 + moleculer-web 0.11 (bench/moleculer, pinned by its lockfile), a gateway in
#     front of two todos replicas, over the TCP transporter (in a loopback-only network namespace
#     this script creates and deletes; its UDP discovery is off as well, so nothing is broadcast
#     even there) and over NATS (a nats-server on 127.0.0.1).
# BENCH_ANCHORS_WORKERS=N adds a second Plume topology whose three processes run with
# PLUME_WORKERS=N (tokio worker threads), measured turn about with the rest: its own row.
# Sourced by bench/run.sh after bench/lib.sh; run_anchors needs GX, WORK, TOKEN and helpers (login
# from run.sh; wait_for and topology from bench/lib.sh).
# shellcheck shell=bash

MOLECULER_NS=""

anchors_cleanup() {
  if [[ -n $MOLECULER_NS ]]; then
    ip netns del "$MOLECULER_NS" 2>/dev/null || true
    MOLECULER_NS=""
  fi
}

nginx_conf() { # WORKERS LISTEN_PORT UPSTREAM_PORT DIR: an nginx.conf for a keepalive proxy
  mkdir -p "$4"
  cat >"$4/nginx.conf" <<EOF
worker_processes $1;
daemon off;
pid $4/nginx.pid;
error_log $4/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $4/body;
  proxy_temp_path $4/proxy;
  fastcgi_temp_path $4/fastcgi;
  uwsgi_temp_path $4/uwsgi;
  scgi_temp_path $4/scgi;
  upstream replica {
    server 127.0.0.1:$3;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://replica;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
EOF
}

run_anchors() {
  need_nginx
  command -v ip >/dev/null || { log "ip (iproute2) is required for the Moleculer TCP anchor"; return 1; }
  log "installing Moleculer for the anchors (npm ci, bench/moleculer/package-lock.json)"
  mkdir -p "$WORK/moleculer"
  cp bench/moleculer/package.json bench/moleculer/package-lock.json bench/moleculer/node.js \
    "$WORK/moleculer/"
  (cd "$WORK/moleculer" && npm ci --no-audit --no-fund --loglevel=error >"$WORK/moleculer-npm.log" 2>&1) ||
    { cat "$WORK/moleculer-npm.log" >&2; return 1; }

  log "anchors: a fresh Plume topology, nginx with 1 and 2 workers, Moleculer on TCP and NATS"
  topology anchor
  local gw=$TOPO_GW ra="http://127.0.0.1:${TOPO_PA}" pa=$TOPO_PA
  GW=$gw && login && topology_ready
  local token=$TOKEN
  local gww="" tokw=""
  if [[ -n ${BENCH_ANCHORS_WORKERS:-} ]]; then
    topology anchorw "PLUME_WORKERS=$BENCH_ANCHORS_WORKERS"
    gww=$TOPO_GW
    GW=$gww && login && topology_ready
    tokw=$TOKEN
    put anchor_workers "$BENCH_ANCHORS_WORKERS"
  fi
  # The todos the Moleculer replicas answer: what the Plume replica answers, byte for byte.
  curl -s -m 5 "$ra/todos" >"$WORK/todos.json"

  local w port ports=()
  for w in 1 2; do
    port=$(free_port tcp)
    nginx_conf "$w" "$port" "$pa" "$WORK/nginx$w"
    start "nginx$w" nginx -e "$WORK/nginx$w/error.log" -p "$WORK/nginx$w" -c "$WORK/nginx$w/nginx.conf"
    ports+=("$port")
    wait_for "http://127.0.0.1:$port/todos" "Hello from todos-a" 30000
  done
  local ngx1="http://127.0.0.1:${ports[0]}" ngx2="http://127.0.0.1:${ports[1]}"

  # Moleculer over its TCP transporter, in a namespace of its own (wrk runs there too).
  MOLECULER_NS="plumebench-mol-$$-$RANDOM"
  ip netns add "$MOLECULER_NS"
  ip -n "$MOLECULER_NS" link set lo up
  local nsx=(ip netns exec "$MOLECULER_NS")
  local urls="127.0.0.1:46001/gw,127.0.0.1:46002/todos-a,127.0.0.1:46003/todos-b"
  local mol="$WORK/moleculer/node.js"
  start mol-tcp-a "${nsx[@]}" node "$mol" todos --transporter "tcp:46002:$urls" --node-id todos-a --data "$WORK/todos.json"
  start mol-tcp-b "${nsx[@]}" node "$mol" todos --transporter "tcp:46003:$urls" --node-id todos-b --data "$WORK/todos.json"
  start mol-tcp-gw "${nsx[@]}" node "$mol" gateway --transporter "tcp:46001:$urls" --node-id gw --port 46080
  wait_line mol-tcp-gw "moleculer ready"
  # Over NATS, on this host's loopback.
  local pn mp
  pn=$(free_port tcp)
  mp=$(free_port tcp)
  start mol-nats-server nats-server -a 127.0.0.1 -p "$pn"
  local nats="nats://127.0.0.1:$pn"
  start mol-nats-a node "$mol" todos --transporter "$nats" --node-id todos-a --data "$WORK/todos.json"
  start mol-nats-b node "$mol" todos --transporter "$nats" --node-id todos-b --data "$WORK/todos.json"
  start mol-nats-gw node "$mol" gateway --transporter "$nats" --node-id gw --port "$mp"
  wait_line mol-nats-gw "moleculer ready"
  local moln="http://127.0.0.1:$mp" molt="http://127.0.0.1:46080"

  # Warm-up (Node's JIT, connection pools), not recorded: 2 s of GET on each.
  local url
  for url in "$ngx1" "$ngx2" "$moln"; do wrk -t2 -c64 -d2s "$url/todos" >/dev/null 2>&1 || true; done
  "${nsx[@]}" wrk -t2 -c64 -d2s "$molt/todos" >/dev/null 2>&1 || true
  wrk -t2 -c64 -d2s -H "Authorization: Bearer $token" "$gw/todos" >/dev/null 2>&1 || true
  [[ -z $gww ]] || wrk -t2 -c64 -d2s -H "Authorization: Bearer $tokw" "$gww/todos" >/dev/null 2>&1 || true

  log "anchors: GET /todos, $RUNS x ${SECS}s each, turn about"
  local r c
  for r in $(seq 1 "$RUNS"); do
    for c in 64 1; do
      GW=$gw TOKEN=$token wrk_get_gw "anchor_gw_c$c" "$r" "$c"
      [[ -z $gww ]] || GW=$gww TOKEN=$tokw wrk_get_gw "anchor_gwworkers_c$c" "$r" "$c"
      wrk_run "anchor_nginx1_c$c" "$r" "$ngx1/todos" "$c"
      wrk_run "anchor_nginx2_c$c" "$r" "$ngx2/todos" "$c"
      WRK_NETNS=$MOLECULER_NS wrk_run "anchor_moltcp_c$c" "$r" "$molt/todos" "$c"
      wrk_run "anchor_molnats_c$c" "$r" "$moln/todos" "$c"
    done
  done
  # POST after every GET: the stores grow, and a GET would answer more each run.
  log "anchors: POST /todos, $RUNS x ${SECS}s each, turn about"
  for r in $(seq 1 "$RUNS"); do
    BENCH_TOKEN=$token wrk_run anchor_gw_post_c64 "$r" "$gw/todos" 64 bench/post.lua
    [[ -z $gww ]] || BENCH_TOKEN=$tokw wrk_run anchor_gwworkers_post_c64 "$r" "$gww/todos" 64 bench/post.lua
    BENCH_TOKEN="" wrk_run anchor_nginx1_post_c64 "$r" "$ngx1/todos" 64 bench/post.lua
    BENCH_TOKEN="" wrk_run anchor_nginx2_post_c64 "$r" "$ngx2/todos" 64 bench/post.lua
    BENCH_TOKEN="" WRK_NETNS=$MOLECULER_NS wrk_run anchor_moltcp_post_c64 "$r" "$molt/todos" 64 bench/post.lua
    BENCH_TOKEN="" wrk_run anchor_molnats_post_c64 "$r" "$moln/todos" 64 bench/post.lua
  done
  local p
  for p in nginx1 nginx2 mol-tcp-gw mol-tcp-a mol-tcp-b mol-nats-gw mol-nats-a mol-nats-b \
    mol-nats-server gateway-anchor todos-a-anchor todos-b-anchor; do
    stop_pid "${PID_OF[$p]}"
  done
  if [[ -n $gww ]]; then
    for p in gateway-anchorw todos-a-anchorw todos-b-anchorw; do stop_pid "${PID_OF[$p]}"; done
  fi
  anchors_cleanup
}
