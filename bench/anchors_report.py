#!/usr/bin/env python3
"""The anchors' table of bench/run.sh (bench/anchors.sh) in docs/benchmarks.md.

Usage: anchors_report.py RESULTS DOC. Replaces the text between this section's BEGIN/END markers
(or inserts it after the "## End to end" section's generated part). Exits 1 when a figure is
missing.
"""

import sys

from report import FD, fmt, load, median_or_missing, ratio, write_section

BEGIN = "<!-- BEGIN bench/run.sh anchors: generated, do not edit by hand -->"
END = "<!-- END bench/run.sh anchors -->"
HEADING = "### Anchors: nginx and Moleculer in front of the same replicas (issue 22)"

# (key in the results, what it is)
ANCHORS = [
    ("gw", "**Plume gateway** (JWT on, mesh to two replicas)"),
    ("nginx1", "nginx, 1 worker, keepalive pool → one Plume replica"),
    ("nginx2", "nginx, 2 workers, keepalive pool → one Plume replica"),
    ("moltcp", "Moleculer 0.15 + moleculer-web 0.11, TCP transporter, two replicas"),
    ("molnats", "Moleculer 0.15 + moleculer-web 0.11, NATS transporter, two replicas"),
]


def main():
    results, doc = sys.argv[1], sys.argv[2]
    runs, single = load(results)
    missing = []
    med = median_or_missing(runs, missing)

    loads = [v for k, vs in runs.items() if k.startswith("anchor_") and k.endswith("_load") for v in vs]
    fig = {}
    rows = []
    anchors = list(ANCHORS)
    workers = single.get("anchor_workers")
    if workers:  # BENCH_ANCHORS_WORKERS: a second Plume topology, its processes on N workers
        anchors.insert(1, ("gwworkers", f"Plume gateway, PLUME_WORKERS={workers} (gateway and replicas)"))
    for key, what in anchors:
        f = {
            "get": med(f"anchor_{key}_c64_rps"),
            "p50": med(f"anchor_{key}_c64_p50us"),
            "p99": med(f"anchor_{key}_c64_p99us"),
            "p50_1": med(f"anchor_{key}_c1_p50us"),
            "post": med(f"anchor_{key}_post_c64_rps"),
        }
        fig[key] = f
    gw = fig["gw"]
    for key, what in anchors:
        f = fig[key]
        rows.append(
            f"| {what} | {fmt(f['get'])} | {fmt(ratio(gw['get'], f['get']))} × | {fmt(f['p50'])} | "
            f"{fmt(f['p99'])} | {fmt(f['p50_1'])} | {fmt(f['post'])} | {fmt(ratio(gw['post'], f['post']))} × |"
        )
    rows.append(
        f"| feathers-distributed 3.0 (issue 8, an earlier run on this machine) | {fmt(FD['get_c64'])} | "
        f"{fmt(ratio(gw['get'], FD['get_c64']))} × | | | {fmt(FD['get_p50us'])} | {fmt(FD['post_c64'])} | "
        f"{fmt(ratio(gw['post'], FD['post_c64']))} × |"
    )

    def best(*keys):
        cands = [(fig[k]["get"], k) for k in keys if fig[k]["get"] is not None]
        return max(cands) if cands else (None, None)

    targets = []

    def target(what, measured, goal, ok):
        verdict = "no number" if ok is None else ("**PASS**" if ok else "**MISS**")
        targets.append(f"| {what} | {measured} | {goal} | {verdict} |")

    ngx, ngx_key = best("nginx1", "nginx2")
    r = ratio(gw["get"], ngx)
    target("GET, 64 conns, against nginx (its better worker count)",
           f"{fmt(gw['get'])} / {fmt(ngx)} req/s = {fmt(r)} ×", "≥ 1.25 ×", None if r is None else r >= 1.25)
    p99n = fig[ngx_key]["p99"] if ngx_key else None
    target("p99, 64 conns, against that nginx", f"{fmt(gw['p99'])} µs / {fmt(p99n)} µs", "no worse",
           None if gw["p99"] is None or p99n is None else gw["p99"] <= p99n)
    if workers:
        gwn = fig["gwworkers"]
        r = ratio(gwn["get"], ngx)
        target(f"GET, 64 conns, PLUME_WORKERS={workers}, against that nginx",
               f"{fmt(gwn['get'])} / {fmt(ngx)} req/s = {fmt(r)} ×", "≥ 1.25 ×", None if r is None else r >= 1.25)
    mol, _ = best("moltcp", "molnats")
    r = ratio(gw["get"], mol)
    target("GET, 64 conns, against Moleculer (its better transporter)",
           f"{fmt(gw['get'])} / {fmt(mol)} req/s = {fmt(r)} ×", "≥ 5 ×", None if r is None else r >= 5)
    if workers:
        r = ratio(fig["gwworkers"]["get"], mol)
        target(f"GET, 64 conns, PLUME_WORKERS={workers}, against that Moleculer",
               f"{fmt(fig['gwworkers']['get'])} / {fmt(mol)} req/s = {fmt(r)} ×", "≥ 5 ×",
               None if r is None else r >= 5)

    load_text = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "?"
    all_workers = single.get("plume_workers", "default")
    workers_text = "" if all_workers == "default" else f", PLUME_WORKERS={all_workers} (Plume's worker threads)"
    out = [
        BEGIN,
        "",
        f"Run of {single.get('date', '?')} at commit `{single.get('commit', '?')}`, "
        f"{single.get('machine_nproc', '?')} CPUs{workers_text}; every process on this machine, wrk with 64 "
        "connections (and 1 for the last latency column), median of the runs, each anchor in turn "
        f"with the gateway, run by run. Load average (1 min) when the runs started: {load_text}.",
        "The gateway's column is the gateway divided by the row (above 1: the gateway is faster).",
        "",
        "| in front of the todos replicas | GET req/s | gateway ÷ it | p50 µs | p99 µs | p50 µs, 1 conn | "
        "POST req/s | gateway ÷ it |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "| target (issue 22) | measured | goal | verdict |",
        "|---|---|---|---|",
        *targets,
        "",
        END,
    ]
    write_section(doc, BEGIN, END, "\n".join(out), HEADING, missing)


if __name__ == "__main__":
    main()
