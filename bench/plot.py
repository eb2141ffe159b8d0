"""SVG line plots for the scale curves (bench/scale_report.py): one figure of stacked panels
that share the x axis, each panel with its own y axis and unit. No plotting library: the bench
needs nothing beyond Python's standard library."""

import math

from report import fmt

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def svg_panels(title, xlabel, panels, xlog=True):
    """PANELS is [(ylabel, [(name, [(x, y), ...]), ...]), ...]; points with y None are left out.
    Returns the SVG text, or None when no panel has a point."""
    w, left, right, top, ph, gap, bottom = 680, 80, 170, 40, 150, 36, 50
    xs_all = [x for _, series in panels for _, pts in series for x, y in pts if y is not None]
    if not xs_all:
        return None
    tx = (lambda x: math.log2(x)) if xlog else (lambda x: x)
    x0, x1 = min(tx(x) for x in xs_all), max(tx(x) for x in xs_all)
    sx = lambda x: left + (tx(x) - x0) / ((x1 - x0) or 1) * (w - left - right)
    h = top + len(panels) * (ph + gap) + bottom - gap
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for k, (ylabel, series) in enumerate(panels):
        ptop = top + k * (ph + gap)
        pbot = ptop + ph
        ys = [y for _, pts in series for _, y in pts if y is not None]
        y1 = (max(ys) * 1.1 if ys else 1) or 1
        sy = lambda y: pbot - y / y1 * ph
        out.append(f'<line x1="{left}" y1="{pbot}" x2="{w - right}" y2="{pbot}" stroke="black"/>')
        out.append(f'<line x1="{left}" y1="{ptop}" x2="{left}" y2="{pbot}" stroke="black"/>')
        mid = (ptop + pbot) / 2
        out.append(f'<text x="18" y="{mid}" text-anchor="middle" transform="rotate(-90 18 {mid})">{ylabel}</text>')
        for i in range(4):
            y = y1 * i / 3
            out.append(f'<line x1="{left - 4}" y1="{sy(y):.1f}" x2="{w - right}" y2="{sy(y):.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 8}" y="{sy(y) + 4:.1f}" text-anchor="end">{fmt(y)}</text>')
        for x in sorted(set(xs_all)):
            label = f"{x:,.0f}" if float(x).is_integer() else fmt(x)
            out.append(f'<text x="{sx(x):.1f}" y="{pbot + 16}" text-anchor="middle">{label}</text>')
        for i, (name, pts) in enumerate(series):
            colour = COLOURS[i % len(COLOURS)]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for x, y in pts:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
            ly = ptop + 10 + 18 * i
            out.append(f'<line x1="{w - right + 12}" y1="{ly}" x2="{w - right + 32}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
            out.append(f'<text x="{w - right + 38}" y="{ly + 4}">{name}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">{xlabel}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
