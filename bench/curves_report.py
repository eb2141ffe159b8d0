#!/usr/bin/env python3
"""The scale curves of bench/run.sh (bench/curves.sh) in docs/benchmarks.md, each drawn as an SVG
from the run's own data.

Usage: curves_report.py RESULTS DOC. Replaces the text between this section's markers and writes
the plots next to DOC (docs/img/). Exits 1 when a figure is missing.
"""

import math
import os
import sys

from report import fmt, load, median_or_missing, ratio, write_section

BEGIN = "<!-- BEGIN bench/run.sh curves: generated, do not edit by hand -->"
END = "<!-- END bench/run.sh curves -->"
HEADING = "### Scale curves (issue 22)"
SIZES = [1024, 65536, 1048000]


def size_label(x):
    """An x tick of the payload curve: a size in KiB or MiB."""
    return f"{x / 1024:.0f} KiB" if x < 1000 * 1024 else f"{x / (1 << 20):.1f} MiB"


def svg_plot(title, xlabel, ylabel, series, xlog=True, xtick=size_label):
    """A line plot as SVG text: SERIES is [(name, colour, [(x, y), ...])]; XTICK labels an x."""
    w, h, left, right, top, bottom = 640, 360, 70, 160, 40, 50
    points = [p for _, _, pts in series for p in pts if p[1] is not None]
    if not points:
        return None
    tx = (lambda x: math.log2(x)) if xlog else (lambda x: x)
    xs = [tx(x) for x, _ in points]
    x0, x1 = min(xs), max(xs)
    y1 = max(y for _, y in points) * 1.1 or 1
    sx = lambda x: left + (tx(x) - x0) / ((x1 - x0) or 1) * (w - left - right)
    sy = lambda y: h - bottom - y / y1 * (h - top - bottom)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
        f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">{xlabel}</text>',
        f'<text x="16" y="{(top + h - bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + h - bottom) / 2})">{ylabel}</text>',
    ]
    for i in range(5):
        y = y1 * i / 4
        out.append(f'<line x1="{left - 4}" y1="{sy(y):.1f}" x2="{w - right}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{sy(y) + 4:.1f}" text-anchor="end">{fmt(y)}</text>')
    for x in sorted({x for x, _ in points}):
        out.append(f'<text x="{sx(x):.1f}" y="{h - bottom + 18}" text-anchor="middle">{xtick(x)}</text>')
    for i, (name, colour, pts) in enumerate(series):
        pts = [(x, y) for x, y in pts if y is not None]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        ly = top + 20 * i
        out.append(f'<line x1="{w - right + 12}" y1="{ly}" x2="{w - right + 32}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{w - right + 38}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    results, doc = sys.argv[1], sys.argv[2]
    runs, single = load(results)
    missing = []
    med = median_or_missing(runs, missing)
    img_dir = os.path.join(os.path.dirname(os.path.abspath(doc)), "img")
    os.makedirs(img_dir, exist_ok=True)

    rows, gw_pts, direct_pts, loads = [], [], [], []
    one_mib_ratio = None
    for size in SIZES:
        answer = single.get(f"payload_{size}_bytes")
        answer = float(answer) if answer else None
        if answer is None:
            missing.append(f"payload_{size}_bytes")
        g, d = med(f"payload_{size}_gw_rps"), med(f"payload_{size}_direct_rps")
        loads += runs.get(f"payload_{size}_gw_load", []) + runs.get(f"payload_{size}_direct_load", [])
        mb = lambda rps: None if rps is None or answer is None else rps * answer / 1e6
        r = ratio(mb(g), mb(d))
        if size == SIZES[-1]:
            one_mib_ratio = r
        gw_pts.append((size, mb(g)))
        direct_pts.append((size, mb(d)))
        rows.append(f"| {fmt(size)} B | {fmt(answer)} B | {fmt(g)} | {fmt(mb(g))} | {fmt(d)} | {fmt(mb(d))} | {fmt(r)} × |")

    plot = svg_plot("GET of one todo by id, 64 connections", "size of the todo's text", "MB/s",
                    [("gateway", "#1f77b4", gw_pts), ("direct", "#ff7f0e", direct_pts)])
    if plot:
        open(os.path.join(img_dir, "curve-payload.svg"), "w").write(plot)

    verdict = "no number" if one_mib_ratio is None else ("**PASS**" if one_mib_ratio >= 0.6 else "**MISS**")
    load_text = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "?"
    out = [
        BEGIN,
        "",
        f"Run of {single.get('date', '?')} at commit `{single.get('commit', '?')}`; wrk with 64 connections, "
        f"median of the runs, gateway and direct in turn. Load average (1 min): {load_text}.",
        "",
        "**Payload** (a fresh gateway and one replica; one todo of each size, `GET /todos/:id`):",
        "",
        "![GET throughput in MB/s against the size of the answer](img/curve-payload.svg)",
        "",
        "| todo text | answer | gateway req/s | gateway MB/s | direct req/s | direct MB/s | gateway ÷ direct |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "| target (issue 22) | measured | goal | verdict |",
        "|---|---|---|---|",
        f"| ~1 MiB payloads through the gateway | {fmt(one_mib_ratio)} × direct (MB/s) | ≥ 0.6 × | {verdict} |",
        "",
        END,
    ]
    write_section(doc, BEGIN, END, "\n".join(out), HEADING, missing)


if __name__ == "__main__":
    main()
