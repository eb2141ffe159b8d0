#!/usr/bin/env python3
"""The sockets curve of bench/curve_sockets.sh in docs/benchmarks.md: a table and two SVG plots
(delivery time, gateway RSS per socket) drawn from the run's own data.

Usage: curve_sockets_report.py RESULTS DOC. Replaces the text between this section's markers
(or, without them, adds the section after the doc's title) and writes the plots next to DOC
(docs/img/). Exits 1 when a figure is missing.
"""

import os
import statistics
import sys

from curves_report import svg_plot
from report import fmt, load, write_section

BEGIN = "<!-- BEGIN bench/curve_sockets.sh: generated, do not edit by hand -->"
END = "<!-- END bench/curve_sockets.sh -->"
HEADING = "#### Sockets curve (issue 22)"
SIZES = [100, 1000, 10000]
P99_GOAL_MS = 200
RSS_GOAL_KIB = 16


def count_label(x):
    return f"{x:,.0f}"


def main():
    results, doc = sys.argv[1], sys.argv[2]
    runs, single = load(results)
    missing = []
    img_dir = os.path.join(os.path.dirname(os.path.abspath(doc)), "img")
    os.makedirs(img_dir, exist_ok=True)

    def med(key, note=True):
        values = runs.get(key, [])
        if not values:
            if note:
                missing.append(key)
            return None
        return statistics.median(values)

    def per_socket_kib(n, key):
        """The median over the runs of (RSS under KEY − RSS idle) / N, in KiB."""
        idle, full = runs.get(f"sockets_{n}_rss_idle_kib", []), runs.get(f"sockets_{n}_{key}", [])
        if not idle or len(idle) != len(full):
            missing.append(f"sockets_{n}_{key}")
            return None
        return statistics.median((f - i) / n for i, f in zip(idle, full))

    rows, p50_pts, p99_pts, rss_pts, loads = [], [], [], [], []
    top = {}
    for n in SIZES:
        p50, p99 = med(f"sockets_{n}_p50_ms"), med(f"sockets_{n}_p99_ms")
        worst, last = med(f"sockets_{n}_max_ms"), med(f"sockets_{n}_all_reached_ms")
        setup, idle = med(f"sockets_{n}_setup_s"), med(f"sockets_{n}_rss_idle_kib")
        with_sockets = med(f"sockets_{n}_rss_sockets_kib")
        per, per_after = per_socket_kib(n, "rss_sockets_kib"), per_socket_kib(n, "rss_after_kib")
        lost = sum(runs.get(f"sockets_{n}_missing", [])) + sum(runs.get(f"sockets_{n}_failed", []))
        if not runs.get(f"sockets_{n}_missing"):
            missing.append(f"sockets_{n}_missing")
        loads += runs.get(f"sockets_{n}_load", [])
        p50_pts.append((n, p50))
        p99_pts.append((n, p99))
        rss_pts.append((n, per))
        top[n] = (p99, per, lost)
        mib = lambda kib: None if kib is None else kib / 1024
        rows.append(
            f"| {n:,} | {fmt(setup)} s | {fmt(p50)} | {fmt(p99)} | {fmt(worst)} | {fmt(last)} "
            f"| {fmt(mib(idle))} | {fmt(mib(with_sockets))} | {fmt(per)} | {fmt(per_after)} | {lost:.0f} |"
        )

    delivery = svg_plot("One event to every socket: delivery time", "connected sockets", "ms",
                        [("p50", "#1f77b4", p50_pts), ("p99", "#d62728", p99_pts)],
                        xtick=count_label)
    if delivery:
        open(os.path.join(img_dir, "curve-sockets-delivery.svg"), "w").write(delivery)
    rss = svg_plot("Gateway RSS per connected socket", "connected sockets", "KiB per socket",
                   [("RSS per socket", "#2ca02c", rss_pts)], xtick=count_label)
    if rss:
        open(os.path.join(img_dir, "curve-sockets-rss.svg"), "w").write(rss)

    p99, per, lost = top[SIZES[-1]]
    verdict = lambda ok, v: "no number" if v is None else ("**PASS**" if ok else "**MISS**")
    p99_ok = p99 is not None and p99 <= P99_GOAL_MS and lost == 0
    load_text = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "?"
    events = single.get("sockets_events", "?")
    out = [
        BEGIN,
        "",
        f"Run of {single.get('date', '?')} at commit `{single.get('commit', '?')}`; each point is a fresh "
        f"gateway and one replica, {events} events per run (after one warm-up), median of the runs. "
        f"Load average (1 min): {load_text}.",
        "",
        "The client (`bench/src/bin/sockets`, Rust, 256 sockets to a tokio task) authenticates every "
        "socket with the JWT (`create` on `authentication`, as the demo page does), then creates "
        "todos on the replica one at a time; the delivery time of a socket is from right before the "
        "`POST` to the replica until the client reads `todos created` on that socket (p50 and p99 "
        "over every socket and event). *All reached*: the time until the last socket had the event "
        "(median over the events). RSS per socket: (gateway RSS with the sockets − idle) ÷ sockets, "
        "right after the last socket logged in and after the events.",
        "",
        "![p50 and p99 delivery time against the number of sockets](img/curve-sockets-delivery.svg)",
        "",
        "![gateway RSS per socket against the number of sockets](img/curve-sockets-rss.svg)",
        "",
        "| sockets | setup | p50 ms | p99 ms | max ms | all reached ms | gateway RSS idle MiB "
        "| with sockets MiB | KiB per socket | after the events | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "| target (issue 22) | measured | goal | verdict |",
        "|---|---|---|---|",
        f"| 10,000 sockets: an event reaches all | p99 {fmt(p99)} ms, {lost:.0f} lost | p99 ≤ {P99_GOAL_MS} ms "
        f"| {verdict(p99_ok, p99)} |",
        f"| 10,000 sockets: gateway RSS | {fmt(per)} KiB per socket | ≤ {RSS_GOAL_KIB} KiB "
        f"| {verdict(per is not None and per <= RSS_GOAL_KIB, per)} |",
        "",
        END,
    ]
    write_section(doc, BEGIN, END, "\n".join(out), HEADING, missing)


if __name__ == "__main__":
    main()
