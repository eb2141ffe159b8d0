# Helpers of bench/cote.sh and bench/cote_cpu.sh (sourced, not run): loopback-only network
# namespaces (cote broadcasts) and the feathers-distributed processes started in them.
#
# The sourcing script sets WORK (its scratch directory, holding the Node scripts in
# $WORK/node), GX (gateway-example) and NS (the namespace the next spawn goes to), and calls
# cote_cleanup on exit. Every process spawned is killed by PID; every namespace made is deleted.
# shellcheck shell=bash

COTE_NSS=()  # namespaces made by netns_new
COTE_PIDS=() # processes started by spawn
declare -A COTE_PID_OF=()

cote_cleanup() { # kill what spawn started, delete what netns_new made
  local pid ns
  for pid in "${COTE_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  COTE_PIDS=()
  COTE_PID_OF=()
  for ns in "${COTE_NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  COTE_NSS=()
}

netns_new() { # a fresh loopback-only namespace; sets NS to its name
  NS="cote-bench-$$-$RANDOM"
  ip netns add "$NS"
  COTE_NSS+=("$NS")
  ip -n "$NS" link set lo up
}

spawn() { # NAME CMD...: run CMD in the namespace $NS, output in $WORK/NAME.log
  local name=$1
  shift
  ip netns exec "$NS" "$@" >"$WORK/$name.log" 2>&1 &
  COTE_PIDS+=($!)
  # `ip netns exec` and `env` exec the command: this is its PID.
  COTE_PID_OF[$name]=$!
  disown "$!" # killed by PID in cote_cleanup, without a job-control notice
}

wait_log() { # NAME TEXT: wait (30 s at most) until NAME's log has TEXT
  local i
  for i in $(seq 300); do
    grep -q "$2" "$WORK/$1.log" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$1 never printed '$2':"
  cat "$WORK/$1.log" >&2
  exit 1
}

COTE_ENV=(env COTE_HELLO_INTERVAL=500 COTE_CHECK_INTERVAL=1000 COTE_NODE_TIMEOUT=1500)
# NAME PORT [BINARY]: a Plume todos replica (gateway-example todos, PLUME_DISCOVERY=cote).
plume_replica() { spawn "$1" "${COTE_ENV[@]}" PLUME_DISCOVERY=cote "${3:-$GX}" todos --name "$1" --port "$2" --store memory; wait_log "$1" listening; }
# NAME PORT: a Node feathers-distributed replica (tests/cote/replica.mjs).
node_replica() { spawn "$1" env PORT="$2" NAME="$1" node "$WORK/node/replica.mjs"; wait_log "$1" LISTENING; }
# [NAME] [NODE OPTION...]: a Node feathers-distributed gateway on 3030 (tests/cote/gateway.mjs).
node_gateway() { local name=${1:-gateway}; shift || true; spawn "$name" env PORT=3030 node "$@" "$WORK/node/gateway.mjs"; wait_log "$name" "SERVICE todos"; }
# A Plume gateway on 3030 (gateway-example cote-gateway).
plume_gateway() { spawn gateway "${COTE_ENV[@]}" "$GX" cote-gateway --port 3030; wait_log gateway "SERVICE todos"; }

COTE_URL='http://127.0.0.1:3030/todos?$limit=1'

warm_up() { # REPLICA...: until every replica named has answered in $NS (200 calls at most)
  local seen="" i r
  for i in $(seq 200); do
    r=$(ip netns exec "$NS" curl -s "$COTE_URL" | python3 -c 'import json,sys; b=json.load(sys.stdin); b=b if isinstance(b,list) else b["data"]; print(b[0]["replica"])' || true)
    case " $seen " in *" $r "*) ;; *) seen="$seen $r" ;; esac
    local missing=0 want
    for want in "$@"; do case " $seen " in *" $want "*) ;; *) missing=1 ;; esac; done
    [ "$missing" = 0 ] && return 0
  done
  log "replicas $* did not all answer (saw:$seen)"
  exit 1
}
