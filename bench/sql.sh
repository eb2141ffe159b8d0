#!/usr/bin/env bash
# The SQL benchmark (docs/benchmarks.md, "SQL: plume-sql against @feathersjs/knex"): the same
# 100,000 `people` rows served by Plume (`sql-people`, plume-sql) and by a Node Feathers 5 app
# with @feathersjs/knex (bench/knex, pinned by its package-lock.json), both driven by wrk over
# HTTP on 127.0.0.1, in the same run, turn about:
#   GET  /people?age[$gt]=30&$sort[name]=1&$limit=10   on SQLite and on PostgreSQL
#   POST /people                                       on SQLite
# Both servers paginate as a generated Feathers app does (default 10, max 50), so every find
# also counts its total. Each server has its own copy of the seeded SQLite file (WAL mode, 5 s
# busy timeout for both); on PostgreSQL (a private server, scripts/lib/postgres.sh) both read
# one seeded database.
#
#   bench/sql.sh      # build, measure, rewrite the generated part of docs/benchmarks.md
#
# Env: BENCH_RUNS (3) runs of BENCH_SECONDS (5) s per figure, medians reported; BENCH_ROWS
# (100000); BENCH_CONNS (64) wrk connections; BENCH_DOC writes another file; BENCH_KEEP=1 keeps
# the logs. Exits non-zero when a figure could not be measured. Kills only what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECONDS:-5}
ROWS=${BENCH_ROWS:-100000}
CONNS=${BENCH_CONNS:-64}
WORK=$(mktemp -d /tmp/plume-sql-bench.XXXXXX)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=scripts/lib/postgres.sh
source "$ROOT/scripts/lib/postgres.sh"
# PostgreSQL runs as its own user when we are root: its directory is one it may enter.
PGWORK=$(mktemp -d /tmp/plume-sql-bench-pg.XXXXXX)
trap 'pg_stop; rm -rf "$PGWORK"; cleanup' EXIT

need_wrk
for tool in node npm cargo python3; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done

log "building sql-people (release)"
cargo build --release -q --locked -p plume-bench --bin sql-people
TARGET=$(cargo_target_dir)
PLUME="$TARGET/release/sql-people"

# npm ci builds better-sqlite3 from source (minutes): installed once per lockfile, under the
# target directory, and reused by later runs.
KNEX="$TARGET/bench-knex/$(sha256sum bench/knex/package-lock.json | cut -c1-16)"
if [[ ! -f "$KNEX/.installed" ]]; then
  log "installing the knex server (npm ci into $KNEX)"
  rm -rf "$KNEX" && mkdir -p "$KNEX"
  cp bench/knex/package.json bench/knex/package-lock.json "$KNEX/"
  (cd "$KNEX" && npm ci --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1) ||
    { cat "$WORK/npm.log" >&2; exit 1; }
  touch "$KNEX/.installed"
fi
cp bench/knex/server.mjs "$KNEX/"

log "starting a private PostgreSQL"
pg_start "$PGWORK"

log "seeding $ROWS rows into SQLite and PostgreSQL"
"$PLUME" seed --database-url "sqlite://$WORK/seed.db" --rows "$ROWS" >/dev/null
"$PLUME" seed --database-url "$pg_url" --rows "$ROWS" >/dev/null
cp "$WORK/seed.db" "$WORK/plume.db"
cp "$WORK/seed.db" "$WORK/knex.db"

QUERY='people?age%5B%24gt%5D=30&%24sort%5Bname%5D=1&%24limit=10'
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"name":"bench person","age":42,"created":false}'
wrk.headers["Content-Type"] = "application/json"
LUA

# measure BACKEND PLUME_URL KNEX_CLIENT KNEX_URL: start both servers, GET (and on SQLite POST)
# in turn, run by run, then stop them.
measure() {
  local backend=$1 plume_url=$2 client=$3 knex_url=$4 pp kp r
  pp=$(free_port tcp)
  kp=$(free_port tcp)
  start "plume-$backend" "$PLUME" serve --database-url "$plume_url" --port "$pp"
  start "knex-$backend" node "$KNEX/server.mjs" --client "$client" --url "$knex_url" --port "$kp"
  wait_line "plume-$backend" "plume ready on"
  wait_line "knex-$backend" "knex ready on"
  # Both answer the same query the same way before anything is measured.
  python3 - "http://127.0.0.1:$pp/$QUERY" "http://127.0.0.1:$kp/$QUERY" <<'PY'
import json, sys, urllib.request
a, b = (json.load(urllib.request.urlopen(u, timeout=10)) for u in sys.argv[1:3])
# node-postgres gives a bigint (the BIGSERIAL id) as a string: compare the ids as text.
ids = lambda page: [str(row["id"]) for row in page["data"]]
assert a["total"] == b["total"] and ids(a) == ids(b), f"plume {a['total']} {ids(a)} != knex {b['total']} {ids(b)}"
PY
  for r in $(seq 1 "$RUNS"); do
    wrk_run "get_${backend}_plume" "$r" "http://127.0.0.1:$pp/$QUERY" "$CONNS"
    wrk_run "get_${backend}_knex" "$r" "http://127.0.0.1:$kp/$QUERY" "$CONNS"
  done
  if [[ $backend == sqlite ]]; then
    for r in $(seq 1 "$RUNS"); do
      wrk_run "post_${backend}_plume" "$r" "http://127.0.0.1:$pp/people" "$CONNS" "$WORK/post.lua"
      wrk_run "post_${backend}_knex" "$r" "http://127.0.0.1:$kp/people" "$CONNS" "$WORK/post.lua"
    done
  fi
  stop_pid "${PID_OF[plume-$backend]}"
  stop_pid "${PID_OF[knex-$backend]}"
}

log "SQLite"
measure sqlite "sqlite://$WORK/plume.db" better-sqlite3 "$WORK/knex.db"
log "PostgreSQL"
measure postgres "$pg_url" pg "$pg_url"

put rows "$ROWS"
put conns "$CONNS"
put runs "$RUNS"
put seconds "$SECS"
put cpus "$(nproc)"
put node "$(node --version)"
log "writing docs/benchmarks.md"
python3 bench/sql_report.py "$RESULTS" "${BENCH_DOC:-docs/benchmarks.md}"
