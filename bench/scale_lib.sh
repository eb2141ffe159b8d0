# Shell helpers of bench/scale.sh and its curves (bench/curve_*.sh), sourced after bench/lib.sh:
# groups of processes, waiting on their readiness lines, /proc figures, a private network
# namespace. Every wait has a deadline; only processes this script started are stopped.
# shellcheck shell=bash

SCALE_NS=""

scale_binaries() { # PROFILE: build gateway-example and the bench tools; set GX, PROBE,
  # MESH_NODE and SERVICES_NODE, and the environment every process of the curves shares
  build_bench "$1"
  local target=$TARGET
  GX="$target/$1/gateway-example"
  PROBE="$target/$1/probe"
  MESH_NODE="$target/$1/mesh-node"
  SERVICES_NODE="$target/$1/services-node"
  export PLUME_JWT_SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
  export RUST_LOG=${RUST_LOG:-warn}
  unset PLUME_DISCOVERY PLUME_DISCOVERY_PORT PLUME_NATS_URL PLUME_ENV
}

scale_netns_up() { # create the loopback-only network namespace the nodes curve runs in
  SCALE_NS="plume-scale-$$"
  ip netns add "$SCALE_NS"
  ip netns exec "$SCALE_NS" ip link set lo up
}

scale_netns_down() {
  if [[ -n $SCALE_NS ]]; then
    ip netns del "$SCALE_NS" 2>/dev/null || true
    SCALE_NS=""
  fi
}

stop_group() { # PID...: TERM them all, wait (5 s at most) for all to end, KILL the rest
  local pid i alive
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    alive=0
    for pid in "$@"; do
      if kill -0 "$pid" 2>/dev/null; then
        alive=1
        break
      fi
    done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
  # Forget them: the final cleanup must not signal a PID the system has given to another process.
  local keep=() p stopped=" $* "
  for p in "${STARTED[@]}"; do [[ $stopped == *" $p "* ]] || keep+=("$p"); done
  STARTED=("${keep[@]}")
}

wait_lines() { # PREFIX COUNT NEEDLE TIMEOUT_S: wait until COUNT logs $WORK/PREFIX-*.log hold NEEDLE
  local prefix=$1 count=$2 needle=$3 have=0 deadline=$((SECONDS + $4))
  while ((SECONDS <= deadline)); do
    have=$(grep -l -F -- "$needle" "$WORK/$prefix"-*.log 2>/dev/null | wc -l)
    [[ $have -ge $count ]] && return 0
    sleep 0.05
  done
  log "$prefix: $have of $count logs say '$needle' after $4 s"
  return 1
}

last_stamp() { # PREFIX NEEDLE: the largest Unix-µs stamp (last word) of the lines with NEEDLE
  grep -h -F -- "$2" "$WORK/$1"-*.log 2>/dev/null | awk '{print $NF}' | sort -n | tail -n 1
}

cpu_ticks() { # PID: user + system clock ticks of the process so far (0 when it is gone)
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || {
    echo 0
    return
  }
  # The fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
  awk '{print $12 + $13}' <<<"${stat##*) }"
}

ms_between() { # FROM_US TO_US: milliseconds, one decimal
  awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) / 1000}'
}

netns_mcast() { # NS: "packets octets" the namespace sent to multicast groups so far
  ip netns exec "$1" cat /proc/net/netstat | awk '
    /^IpExt:/ && !h {for (i = 1; i <= NF; i++) col[$i] = i; h = 1; next}
    /^IpExt:/ && h {print $col["OutMcastPkts"], $col["OutMcastOctets"]}'
}
