#!/usr/bin/env python3
"""Turn bench/run.sh's results file into the generated section of docs/benchmarks.md.

Usage: report.py RESULTS DOC. Replaces the text between the BEGIN/END markers of DOC (or inserts
the section after the title). Exits 1 when a figure is missing.
"""

import re
import statistics
import sys
from collections import defaultdict

BEGIN = "<!-- BEGIN bench/run.sh: generated, do not edit by hand -->"
END = "<!-- END bench/run.sh -->"

# feathers-distributed 3.0.0 on this machine (issue 8).
FD = {"get_c64": 2344, "get_p50us": 670, "post_c64": 1560}


def load(path):
    runs = defaultdict(list)
    single = {}
    for line in open(path):
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        key, value = parts[0], parts[1].strip()
        m = re.fullmatch(r"(.+)_r(\d+)", key)
        if m:
            try:
                runs[m.group(1)].append(float(value))
            except ValueError:
                pass
        else:
            single[key] = value
    return runs, single


def fmt(v, digits=None):
    if v is None:
        return "no number"
    if digits is not None:
        return f"{v:.{digits}f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def median_or_missing(runs, missing):
    """med(key): the median of a figure's runs, or None (and the key noted in MISSING)."""

    def med(key):
        values = runs.get(key, [])
        if not values:
            missing.append(key)
            return None
        return statistics.median(values)

    return med


def main():
    results, doc = sys.argv[1], sys.argv[2]
    runs, single = load(results)
    missing = []
    med = median_or_missing(runs, missing)

    def spread(key):
        values = sorted(runs.get(key, []))
        return "–".join(fmt(v) for v in (values[0], values[-1])) if len(values) > 1 else ""

    def load_of(key):
        values = runs.get(key + "_load", [])
        return f"{min(values):.1f}–{max(values):.1f}" if values else ""

    rows = []

    def row(what, key, unit, note="", load_key=None):
        v = med(key)
        rows.append(f"| {what} | {fmt(v)} {unit} | {spread(key)} | {load_of(load_key or key.rsplit('_', 1)[0])} | {note} |")
        return v

    mib = lambda kib: None if kib is None else kib / 1024

    g64 = row("GET /todos via gateway, 64 conns", "get_gw_c64_rps", "req/s")
    row("GET /todos via gateway on NATS, 64 conns", "get_nats_c64_rps", "req/s",
        "same topology, `PLUME_DISCOVERY=nats`, same run")
    row("p50 via gateway on NATS, 1 conn", "get_nats_c1_p50us", "µs")
    gpl = row("GET /todos via gateway, plain links, 64 conns", "get_plainlinks_c64_rps", "req/s",
              "a fresh topology, interleaved with the next row")
    gno = row("GET /todos via gateway, encrypted links (mesh secret), 64 conns", "get_noise_c64_rps", "req/s",
              "the same topology with `PLUME_MESH_SECRET`: Noise NNpsk0 links")
    d64 = row("GET /todos direct to replica, 64 conns", "get_direct_c64_rps", "req/s")
    f64 = row("GET plain-axum floor, 64 conns", "get_floor_c64_rps", "req/s")
    g64p = row("p50 via gateway, 64 conns", "get_gw_c64_p50us", "µs")
    g1 = row("p50 via gateway, 1 conn", "get_gw_c1_p50us", "µs")
    d1 = row("p50 direct to replica, 1 conn", "get_direct_c1_p50us", "µs")
    f1 = row("p50 plain-axum floor, 1 conn", "get_floor_c1_p50us", "µs")
    tcp = row("raw TCP ping-pong p50 (100 B)", "tcp_rtt_us", "µs")
    p64 = row("POST /todos via gateway, 64 conns", "post_gw_c64_rps", "req/s")
    pd64 = row("POST /todos direct to replica, 64 conns", "post_direct_c64_rps", "req/s")
    p1 = row("POST p50 via gateway, 1 conn", "post_gw_c1_p50us", "µs")
    pd1 = row("POST p50 direct, 1 conn", "post_direct_c1_p50us", "µs")
    disc = row("discovery: spawn → first 200 with its todo", "discovery_ms", "ms")
    ff = row("failover: failed GETs after SIGKILL of one replica", "failover_failed", "", load_key="failover")
    fstop = row("failover: kill → errors stop", "failover_errors_stop_ms", "ms", load_key="failover")
    f503 = row("failover: last replica killed → clean 503", "failover_clean503_ms", "ms", load_key="failover")
    lost = row("failover: requests in flight at the last kill answered neither 200 nor 503", "failover_lost_inflight", "", load_key="failover")
    row("failover: longest wait of a request in flight at the last kill", "failover_inflight_max_ms", "ms", load_key="failover")
    frs = row("failover: restart → first 200", "failover_restart_ms", "ms", load_key="failover")
    rp50 = row("event relay p50 (replica create → gateway socket)", "relay_p50ms", "ms")
    rp90 = row("event relay p90", "relay_p90ms", "ms")
    rdup = med("relay_dupes")
    rows.append(f"| event relay duplicates (sum over runs) | {fmt(sum(runs.get('relay_dupes', [])) if runs.get('relay_dupes') else None)} | | | |")
    for name in ("gateway", "todos-a", "todos-b"):
        idle = single.get(f"rss_idle_{name}")
        idle = float(idle) if idle else None
        if idle is None:
            missing.append(f"rss_idle_{name}")
        loaded = med(f"rss_load_{name}")
        after = single.get(f"rss_after_post_{name}")
        quiet = single.get(f"rss_idle_after_get_{name}")
        rows.append(
            f"| RSS {name}: idle after login / under GET load (max) / idle again after the GET runs / after POST runs | "
            f"{fmt(mib(idle))} / {fmt(mib(loaded))} / {fmt(mib(float(quiet)) if quiet else None)} / "
            f"{fmt(mib(float(after)) if after else None)} MiB | | | |"
        )
    gw_idle = float(single["rss_idle_gateway"]) / 1024 if single.get("rss_idle_gateway") else None
    gw_load = mib(med("rss_load_gateway"))
    failed_http = sum(
        v for k, vs in runs.items() if k.endswith("_failed") and not k.startswith("failover") for v in vs
    )

    targets = []

    def target(what, measured, goal, ok):
        verdict = "no number" if ok is None else ("**PASS**" if ok else "**MISS**")
        targets.append(f"| {what} | {measured} | {goal} | {verdict} |")

    def both(*conds):
        return None if any(c is None for c in conds) else all(conds)

    r = ratio(g64, d64)
    target("GET via gateway, 64 conns", f"{fmt(g64)} req/s = {fmt(r)} × direct, {fmt(ratio(g64, FD['get_c64']))} × f-d",
           "≥ 0.5 × direct and ≥ 7 × f-d (16,408)", both(r is not None and r >= 0.5, g64 is not None and g64 >= 7 * FD["get_c64"]))
    limit = None if f1 is None or tcp is None else f1 + 1.3 * tcp
    target("p50 via gateway, 1 conn", f"{fmt(g1)} µs (floor {fmt(f1)} + 1.3 × TCP {fmt(tcp)} = {fmt(limit)} µs)",
           "≤ axum p50 + 1.3 × TCP round trip", None if g1 is None or limit is None else g1 <= limit)
    r = ratio(p64, pd64)
    target("POST via gateway, 64 conns", f"{fmt(p64)} req/s = {fmt(r)} × direct, {fmt(ratio(p64, FD['post_c64']))} × f-d",
           "≥ 0.5 × direct and ≥ 8 × f-d (12,480)", both(r is not None and r >= 0.5, p64 is not None and p64 >= 8 * FD["post_c64"]))
    r = ratio(gno, gpl)
    target("GET via gateway on encrypted links (issue 14)", f"{fmt(gno)} req/s = {fmt(r)} × plain links",
           "≥ 0.85 × the same without a secret", None if r is None else r >= 0.85)
    target("discovery", f"{fmt(disc)} ms", "≤ 300 ms", None if disc is None else disc <= 300)
    target("failover: failed GETs per replica kill", fmt(ff), "0", None if ff is None else ff == 0)
    target("failover: clean 503 after the last replica dies", f"{fmt(f503)} ms", "≤ 3,000 ms", None if f503 is None else f503 <= 3000)
    target("failover: restart → first 200", f"{fmt(frs)} ms", "≤ 500 ms", None if frs is None else frs <= 500)
    target("event relay p50", f"{fmt(rp50)} ms", "≤ 1 ms", None if rp50 is None else rp50 <= 1)
    target("event relay duplicates", fmt(rdup), "0", None if rdup is None else rdup == 0)
    target("gateway RSS idle", f"{fmt(gw_idle)} MiB", "≤ 16 MiB", None if gw_idle is None else gw_idle <= 16)
    target("gateway RSS under load", f"{fmt(gw_load)} MiB", "≤ 48 MiB", None if gw_load is None else gw_load <= 48)

    cpu = single.get("machine_cpu", "?").replace("_", " ")
    out = [
        BEGIN,
        "",
        f"Run of {single.get('date', '?')} at commit `{single.get('commit', '?')}` — machine: "
        f"{single.get('machine_nproc', '?')} CPUs ({cpu}), {single.get('machine_mem_mib', '?')} MiB; "
        "every process (wrk, gateway, replicas, floor) on this machine, on 127.0.0.1.",
        "Each figure is the median of the runs (range in the next column); the load column is the",
        "1-minute load average when the runs started (other builds share the machine).",
        "",
        "| figure | median | range | load avg | note |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"HTTP errors in the wrk runs (non-2xx and socket errors, all runs): {fmt(failed_http, 0)}.",
        "",
        "Ratios and targets (issue 8; f-d = feathers-distributed 3.0.0 measured on this machine:",
        "GET 2,344 req/s at 64 conns, p50 670 µs at 1 conn, POST 1,560 req/s):",
        "",
        "| target | measured | goal | verdict |",
        "|---|---|---|---|",
        *targets,
        "",
        f"Hop cost at 1 connection: gateway p50 − direct p50 = {fmt(None if g1 is None or d1 is None else g1 - d1)} µs "
        f"(GET), {fmt(None if p1 is None or pd1 is None else p1 - pd1)} µs (POST). "
        f"Direct replica vs plain axum at 64 conns: {fmt(ratio(d64, f64))} ×.",
        "",
        END,
    ]
    write_section(doc, BEGIN, END, "\n".join(out), "## End to end (`bench/run.sh`)", missing)


def write_section(doc, begin, end, section, heading, missing):
    """Put SECTION between the BEGIN/END markers of DOC (or, with HEADING, after its title);
    exit 1 naming the MISSING figures, if any."""
    try:
        text = open(doc).read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        head, sep, rest = text.partition("\n")
        text = head + "\n\n" + heading + "\n\n" + section + "\n" + rest
    open(doc, "w").write(text)
    if missing:
        print("missing figures: " + ", ".join(sorted(set(missing))), file=sys.stderr)
        sys.exit(1)

if __name__ == "__main__":
    main()
