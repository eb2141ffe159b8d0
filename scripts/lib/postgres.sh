# A private PostgreSQL server for a test or benchmark script (sourced, not run): initdb in a
# directory of the caller's, a free loopback port, its socket in that directory, no fsync.
#
#   source scripts/lib/postgres.sh
#   pg_start "$work"      # sets pg_url and pg_pid; fails (with the server's log) if it can't start
#   ...
#   pg_stop               # from the caller's EXIT trap: stops the server by PID
# shellcheck shell=bash

pg_pid=""
pg_url=""

pg_bin_dir() { # the directory of initdb and pg_ctl, or nothing
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return
  fi
  local dir found=""
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && found=$dir
  done
  [ -n "$found" ] && echo "$found"
}

pg_start() { # DIR: start a private server with its data in DIR/pg; sets pg_url and pg_pid
  local dir=$1 bin port as_pg=()
  bin=$(pg_bin_dir) || true
  [ -n "$bin" ] || { echo "PostgreSQL (initdb, pg_ctl) is not installed" >&2; return 1; }
  if [ "$(id -u)" = 0 ]; then
    as_pg=(runuser -u postgres --)
    chown postgres: "$dir"
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${as_pg[@]}" "$bin/initdb" -D "$dir/pg" -U plume --auth=trust --locale=C -E UTF8 --no-sync \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  # -w: pg_ctl returns once the server accepts connections (or fails after its timeout).
  "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/pg" -w -t 60 -l "$dir/pg.log" \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off" start >/dev/null \
    || { cat "$dir/pg.log" >&2; return 1; }
  pg_pid=$(head -1 "$dir/pg/postmaster.pid")
  pg_url="postgres://plume@127.0.0.1:$port/postgres"
}

pg_stop() { # stop the server pg_start started, by PID (a fast shutdown, then KILL after 60 s)
  [ -n "$pg_pid" ] || return 0
  kill -INT "$pg_pid" 2>/dev/null || true
  timeout 60 tail --pid="$pg_pid" -f /dev/null || kill -KILL "$pg_pid" 2>/dev/null || true
  pg_pid=""
}
