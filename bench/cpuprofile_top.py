"""Where a Node process's CPU went, from `node --cpu-prof` profiles (bench/cote_cpu.sh).

    python3 bench/cpuprofile_top.py FILE.cpuprofile... [--top N]

Prints the share of the busy sampled time (self time, `(idle)` left out) per package or Node part (`node_modules/<pkg>`,
`node:<internal module>`, `(garbage collector)`, `(program)`, ...) and the top N functions by
self time. Several files are summed.
"""

import json
import re
import sys
from collections import Counter


def area(url: str, name: str) -> str:
    """The package or Node part a function belongs to."""
    if not url:
        return name if name.startswith("(") else "(native)"
    m = re.search(r"node_modules/((?:@[^/]+/)?[^/]+)", url)
    if m:
        return m.group(1)
    if url.startswith("node:"):
        return url.split("/")[0] if "/" in url else url
    return url.rsplit("/", 1)[-1]


def self_times(path: str):
    """(function key, area) → self time in µs, for one profile."""
    prof = json.load(open(path))
    nodes = {n["id"]: n for n in prof["nodes"]}
    out = Counter()
    for node_id, delta in zip(prof["samples"], prof["timeDeltas"]):
        frame = nodes[node_id]["callFrame"]
        url, name = frame.get("url", ""), frame.get("functionName") or "(anonymous)"
        short = url.split("node_modules/")[-1] if url else ""
        key = f"{name} {short}:{frame.get('lineNumber', 0) + 1}" if short else name
        out[(key, area(url, name))] += max(delta, 0)
    return out


def main() -> None:
    args = sys.argv[1:]
    top = 30
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i : i + 2]
    total = Counter()
    for path in args:
        total.update(self_times(path))
    idle = sum(us for (_, a), us in total.items() if a == "(idle)")
    for key in [k for k in total if k[1] == "(idle)"]:
        del total[key]
    all_us = sum(total.values()) or 1
    areas = Counter()
    for (_, a), us in total.items():
        areas[a] += us
    print(f"sampled {all_us / 1e6:.2f} s busy, {idle / 1e6:.2f} s idle; shares of the busy time")
    print("by area:")
    for a, us in areas.most_common(15):
        print(f"  {100 * us / all_us:5.1f} %  {a}")
    print(f"top {top} functions (self time):")
    for (key, _), us in total.most_common(top):
        print(f"  {100 * us / all_us:5.1f} %  {key}")


if __name__ == "__main__":
    main()
