#!/usr/bin/env python3
"""The nodes, services and NATS curves of bench/scale.sh in docs/benchmarks.md, each drawn as an
SVG (docs/img/curve-{nodes,services,nats}.svg) from the run's own figures.

Usage: scale_report.py RESULTS DOC. Rewrites, between its own markers, the part of each curve
the run measured (the others keep their text). Exits 1 when a figure of a measured curve is
missing.
"""

import os
import sys

from plot import svg_panels
from report import fmt, load, median_or_missing, ratio, write_section

HEADING = "### Scale curves: nodes, services, NATS (issue 22)"


def markers(curve):
    return (f"<!-- BEGIN bench/scale.sh {curve}: generated, do not edit by hand -->",
            f"<!-- END bench/scale.sh {curve} -->")


TARGETS = ["", "| target (issue 22) | measured | goal | verdict |", "|---|---|---|---|"]


def target(what, measured, goal, value, ok):
    """One row of a targets table: VALUE (None: not measured) against OK."""
    verdict = "no number" if value is None else ("**PASS**" if ok(value) else "**MISS**")
    return f"| {what} | {measured} | {goal} | {verdict} |"


def loads(runs, prefix):
    values = [v for k, vs in runs.items() if k.startswith(prefix) and k.endswith("_load") for v in vs]
    return f"{min(values):.1f}–{max(values):.1f}" if values else "?"


def mib(kib):
    return None if kib is None else kib / 1024


def intro(single, runs, prefix):
    return (f"Run of {single.get('date', '?')} at commit `{single.get('commit', '?')}` "
            f"({single.get('profile', '?')} build, {single.get('machine_nproc', '?')} cores); "
            f"medians of the runs. Load average (1 min) during the curve: {loads(runs, prefix)}.")


def nodes_section(runs, single, med, img):
    sizes = [int(s) for s in single.get("nodes_sizes", "").split()]
    rows, conv, after, cpu, cpu_max, rss, bps = [], [], [], [], [], [], []
    for n in sizes:
        k = f"nodes_{n}_"
        c, a, s = med(k + "converge_ms"), med(k + "after_spawn_ms"), med(k + "spawn_ms")
        u, um = med(k + "cpu_pct"), med(k + "cpu_pct_max")
        m, mm = mib(med(k + "rss_kib")), mib(med(k + "rss_kib_max"))
        pps, b = med(k + "mcast_pps"), med(k + "mcast_bps")
        flaps = sum(runs.get(k + "flaps", [])) if runs.get(k + "flaps") else None
        conv.append((n, c)), after.append((n, a)), cpu.append((n, u)), cpu_max.append((n, um))
        rss.append((n, m)), bps.append((n, b))
        per = None if b is None else b / n
        rows.append(f"| {n} | {fmt(c)} | {fmt(a)} | {fmt(s)} | {fmt(u, 2)} % / {fmt(um, 2)} % "
                    f"| {fmt(m)} / {fmt(mm)} | {fmt(pps)} | {fmt(b)} | {fmt(per)} | {'no number' if flaps is None else int(flaps)} |")
    plot = svg_panels("Mesh nodes on one host (loopback discovery), one process each", "nodes", [
        ("all see all, ms", [("from the first spawn", conv), ("from the last spawn", after)]),
        ("idle CPU per node, %", [("mean", cpu), ("max", cpu_max)]),
        ("RSS per node, MiB", [("mean", rss)]),
        ("beacons, bytes/s", [("all nodes", bps)]),
    ])
    if plot:
        open(os.path.join(img, "curve-nodes.svg"), "w").write(plot)
    c64 = med("nodes_64_converge_ms") if 64 in sizes else None
    u64 = med("nodes_64_cpu_pct") if 64 in sizes else None
    return [
        intro(single, runs, "nodes_"),
        "",
        f"**Nodes** (N `mesh-node` processes, bench/src/bin/mesh_node.rs, on loopback discovery in a "
        f"network namespace of their own; each provides one endpoint and says when its table holds "
        f"every other node; CPU, RSS and the namespace's multicast counters over an idle window of "
        f"{single.get('idle_seconds', '?')} s after a 2 s settle):",
        "",
        "![Convergence, idle CPU, RSS and beacon traffic against the number of nodes](img/curve-nodes.svg)",
        "",
        "| nodes | all see all, ms (first spawn) | ms (last spawn) | spawning, ms | idle CPU per node (mean / max) "
        "| RSS per node, MiB (mean / max) | beacons/s | beacon bytes/s (IP) | bytes/s per node | flaps |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        *TARGETS,
        target("64 nodes: every node sees every other (from the first spawn)", f"{fmt(c64)} ms",
               "≤ 2,000 ms", c64, lambda v: v <= 2000),
        target("64 nodes: idle CPU per node (mean)", f"{fmt(u64, 2)} %", "≤ 0.5 % of a core",
               u64, lambda v: v <= 0.5),
    ]


def services_section(runs, single, med, img):
    sizes = [int(s) for s in single.get("services_sizes", "").split()]
    missing = []

    def one(key):
        v = single.get(key)
        if v is None:
            missing.append(key)
            return None
        return float(v)

    rows, mount, after, base, mounted, get = [], [], [], [], [], []
    g1 = med("services_1_get_rps") if 1 in sizes else None
    for n in sizes:
        k = f"services_{n}_"
        m, a, p = one(k + "mount_ms"), one(k + "mount_after_publish_ms"), one(k + "all_providers_ms")
        rb, rm, rl = mib(one(k + "rss_base_kib")), mib(one(k + "rss_kib")), mib(one(k + "rss_load_kib"))
        g, p50, p99 = med(k + "get_rps"), med(k + "get_p50us"), med(k + "get_p99us")
        mount.append((n, m)), after.append((n, a)), base.append((n, rb)), mounted.append((n, rm))
        get.append((n, g))
        rows.append(f"| {n:,} | {fmt(m)} | {fmt(a)} | {fmt(p)} | {fmt(rb)} | {fmt(rm)} | {fmt(rl)} "
                    f"| {fmt(g)} | {fmt(p50)} / {fmt(p99)} | {fmt(ratio(g, g1))} × |")
    plot = svg_panels("N services published by 3 nodes, mounted by one gateway", "services", [
        ("mount all, ms", [("from the spawn", mount), ("after the last publish", after)]),
        ("gateway RSS, MiB", [("before", base), ("N mounted", mounted)]),
        ("GET req/s", [("GET /svc-(N-1)", get)]),
    ])
    if plot:
        open(os.path.join(img, "curve-services.svg"), "w").write(plot)
    m1000 = single.get("services_1000_mount_after_publish_ms") if 1000 in sizes else None
    m1000 = None if m1000 is None else float(m1000)
    r1000 = ratio(med("services_1000_get_rps"), g1) if 1000 in sizes else None
    return missing, [
        intro(single, runs, "services_"),
        "",
        "**Services** (a fresh `gateway-example gateway`, JWT on every proxy; three `services-node` "
        "processes, bench/src/bin/services_node.rs, each publishing the same N in-memory services, "
        "so N proxies with three providers each; the gateway's `GET /distribution/mounted` polled "
        "every 5 ms; wrk `GET /svc-(N-1)` with the JWT, 64 connections, once all N are mounted, "
        "the runs going round the sizes in turn while the other gateways sit idle):",
        "",
        "![Mount time, gateway RSS and GET throughput against the number of services](img/curve-services.svg)",
        "",
        "| services | mount all, ms (from the spawn) | ms (after the last publish) | all 3 N providers, ms "
        "| gateway RSS before, MiB | N mounted, MiB | after GET, MiB | GET req/s | p50 / p99 µs "
        "| GET ÷ 1 service |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        *TARGETS,
        target("1,000 services all mounted (after the last publisher has published)",
               f"{fmt(m1000)} ms", "≤ 1,000 ms", m1000, lambda v: v <= 1000),
        target("GET on one of 1,000 services", f"{fmt(r1000)} × one service", "≥ 0.95 ×",
               r1000, lambda v: v >= 0.95),
    ]


def nats_section(runs, single, med, img):
    sizes = [int(s) for s in single.get("nats_sizes", "").split()]
    rows, targets, dt, dn, gt, gn = [], [], [], [], [], []
    for n in sizes:
        k = f"nats_{n}_"
        d_t, d_n = med(k + "disc_tcp_ms"), med(k + "disc_nats_ms")
        w_t, w_n = (single.get(k + f"gwdisc_{b}_ms") for b in ("tcp", "nats"))
        w_t, w_n = (None if w is None else float(w) for w in (w_t, w_n))
        g_t, g_n = med(k + "get_tcp_rps"), med(k + "get_nats_rps")
        p_t, p_n = med(k + "get_tcp_p50us"), med(k + "get_nats_p50us")
        r = ratio(g_n, g_t)
        dt.append((n, d_t)), dn.append((n, d_n)), gt.append((n, g_t)), gn.append((n, g_n))
        rows.append(f"| {n} | {fmt(d_t)} | {fmt(d_n)} | {fmt(w_t)} | {fmt(w_n)} "
                    f"| {fmt(g_t)} | {fmt(g_n)} | {fmt(r)} × | {fmt(p_t)} / {fmt(p_n)} |")
        targets.append(target(f"{n} nodes: GET through the gateway on NATS", f"{fmt(r)} × the TCP mesh",
                              "≥ 0.7 ×", r, lambda v: v >= 0.7))
    plot = svg_panels("The NATS backend against the TCP mesh", "nodes (gateway + N-1 replicas)", [
        ("GET req/s", [("TCP mesh", gt), ("NATS", gn)]),
        ("all see all, ms", [("TCP mesh", dt), ("NATS", dn)]),
    ])
    if plot:
        open(os.path.join(img, "curve-nats.svg"), "w").write(plot)
    return [
        intro(single, runs, "nats_"),
        "",
        "**NATS against the TCP mesh** (one nats-server on 127.0.0.1; discovery: N `mesh-node` "
        "processes started together, first spawn → all see all; then a gateway and N-1 todos "
        "replicas (memory store) per backend, side by side, and wrk `GET /todos` with the JWT, 64 "
        "connections, on each in turn):",
        "",
        "![GET throughput and discovery time, NATS against the TCP mesh](img/curve-nats.svg)",
        "",
        "| nodes | all see all, TCP, ms | NATS, ms | gateway sees N-1 replicas, TCP, ms | NATS, ms "
        "| GET TCP req/s | GET NATS req/s | NATS ÷ TCP | p50 µs TCP / NATS |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        *TARGETS,
        *targets,
    ]


def main():
    results, doc = sys.argv[1], sys.argv[2]
    runs, single = load(results)
    img = os.path.join(os.path.dirname(os.path.abspath(doc)), "img")
    os.makedirs(img, exist_ok=True)
    curves = single.get("curves", "").split(",")
    failed = False
    for curve, make in (("nodes", nodes_section), ("services", services_section), ("nats", nats_section)):
        if curve not in curves:
            continue
        missing = []
        med = median_or_missing(runs, missing)
        lines = make(runs, single, med, img)
        if isinstance(lines, tuple):
            more, lines = lines
            missing += more
        begin, end = markers(curve)
        try:
            write_section(doc, begin, end, "\n".join([begin, "", *lines, "", end]), HEADING, missing)
        except SystemExit:
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
