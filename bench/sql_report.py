#!/usr/bin/env python3
"""Turn bench/sql.sh's results file into the generated part of docs/benchmarks.md's section
"SQL: plume-sql against @feathersjs/knex".

Usage: sql_report.py RESULTS DOC. Replaces the text between the BEGIN/END markers of DOC (or
appends the section). Exits 1 when a figure is missing.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import load, write_section  # noqa: E402  (shared with bench/run.sh's report)

BEGIN = "<!-- BEGIN bench/sql.sh: generated, do not edit by hand -->"
END = "<!-- END bench/sql.sh -->"

# (figure, results key, the target ratio of Plume over knex)
FIGURES = [
    ("GET `/people?age[$gt]=30&$sort[name]=1&$limit=10`, SQLite", "get_sqlite", 3.0),
    ("GET, same query, PostgreSQL", "get_postgres", 1.5),
    ("POST `/people`, SQLite", "post_sqlite", 3.0),
]


def load_range(runs):
    loads = [v for k, vs in runs.items() if k.endswith("_load") for v in vs]
    return f"{min(loads):.2f}–{max(loads):.2f}" if loads else "?"


def main():
    results, doc = sys.argv[1], sys.argv[2]
    runs, single = load(results)
    missing = []

    def med(key):
        values = runs.get(key)
        if not values:
            missing.append(key)
            return None
        return statistics.median(values)

    def spread(key):
        values = runs.get(key) or []
        return f"{min(values):,.0f}–{max(values):,.0f}" if values else "—"

    out = [
        BEGIN,
        "",
        f"{single.get('rows', '?')} rows, wrk with {single.get('conns', '?')} connections, "
        f"median of {single.get('runs', '?')} runs of {single.get('seconds', '?')} s each, "
        f"Plume and knex in turn, run by run; {single.get('cpus', '?')} cores, Node.js "
        f"{single.get('node', '?')}. Load average (1 min) during the runs: "
        + load_range(runs)
        + ".",
        "",
        "| figure | Plume req/s (runs) | knex req/s (runs) | Plume p50 | knex p50 | failed (Plume / knex) | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for what, key, goal in FIGURES:
        p, k = med(f"{key}_plume_rps"), med(f"{key}_knex_rps")
        pl, kl = med(f"{key}_plume_p50us"), med(f"{key}_knex_p50us")
        # Requests that failed (non-2xx, or no answer within wrk's 2 s timeout), all runs.
        failed = [sum(runs.get(f"{key}_{side}_failed", [])) for side in ("plume", "knex")]
        ratio = p / k if p and k else None
        met = "yes" if ratio is not None and ratio >= goal else "**no**"
        out.append(
            f"| {what} | {p or 0:,.0f} ({spread(key + '_plume_rps')}) | {k or 0:,.0f} "
            f"({spread(key + '_knex_rps')}) | {(pl or 0) / 1000:.2f} ms | {(kl or 0) / 1000:.2f} ms | "
            f"{failed[0]:.0f} / {failed[1]:.0f} | {ratio or 0:.2f} × | ≥ {goal} × | {met} |"
        )
    out += ["", END]
    heading = "## SQL: plume-sql against @feathersjs/knex (`bench/sql.sh`)"
    write_section(doc, BEGIN, END, "\n".join(out), heading, missing)

if __name__ == "__main__":
    main()
