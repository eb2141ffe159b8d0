# Scale curves of bench/run.sh (docs/benchmarks.md, "Scale curves"; issue 22, part 2). Sourced
# by bench/run.sh after bench/lib.sh; needs GX, WORK, TOKEN and the helpers of run.sh and lib.sh (login,
# wait_for, wrk_get_gw).
# shellcheck shell=bash

# The sizes of the payload curve: the text of one todo, in bytes (the last stays under the REST
# body limit of 1 MiB with its JSON around it).
PAYLOAD_SIZES=(1024 65536 1048000)

run_payload_curve() {
  log "payload curve: one todo of 1 KiB, 64 KiB and ~1 MiB, GET by id through the gateway and direct"
  local env=(env "PLUME_ENV=bench-payload-$$-$RANDOM" "PLUME_DISCOVERY_PORT=$(free_port udp)")
  local pg pa
  pg=$(free_port tcp)
  pa=$(free_port tcp)
  # One replica: a todo lives in the memory store of the replica that made it.
  start gateway-payload "${env[@]}" "$GX" gateway --port "$pg"
  start todos-a-payload "${env[@]}" "$GX" todos --name todos-a --port "$pa" --store memory
  wait_for "http://127.0.0.1:$pa/todos" "Hello from todos-a" 30000
  GW="http://127.0.0.1:$pg"
  login
  wait_for "$GW/todos" "Hello from todos-a" 30000 "$TOKEN"
  local size id r body="$WORK/payload.json"
  for size in "${PAYLOAD_SIZES[@]}"; do
    python3 -c 'import json,sys; print(json.dumps({"text": "x" * int(sys.argv[1])}))' "$size" >"$body"
    id=$(curl -s -m 10 -X POST "http://127.0.0.1:$pa/todos" -H 'content-type: application/json' \
      --data-binary @"$body" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    # The size of the whole answer, as the client receives it.
    put "payload_${size}_bytes" "$(curl -s -m 10 "http://127.0.0.1:$pa/todos/$id" | wc -c)"
    for r in $(seq 1 "$RUNS"); do
      WRK_HEADER="Authorization: Bearer $TOKEN" wrk_run "payload_${size}_gw" "$r" "$GW/todos/$id" 64
      wrk_run "payload_${size}_direct" "$r" "http://127.0.0.1:$pa/todos/$id" 64
    done
  done
  stop_pid "${PID_OF[gateway-payload]}"
  stop_pid "${PID_OF[todos-a-payload]}"
}
