"""The allocation sites of a heaptrack peak difference (bench/heap_sockets.sh), per socket.

    python3 bench/heap_sockets_sites.py PEAKS.txt SOCKETS

PEAKS.txt is `heaptrack_print -d ... -m 0 -p 1` output; each site is printed as bytes per
socket (its peak difference / SOCKETS), the number of allocations per socket, and the first
frames of its backtrace outside the allocator, the standard library and tokio's internals.
"""

import re
import sys

SKIP = ("/rustc", "library/", "alloc", "hashbrown", "smallvec", "bytes-1", "indexmap",
        "serde_json", "src/runtime", "src/sync", "src/raw", "/rust/deps")
UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3}


def size(text):
    m = re.fullmatch(r"(-?[\d.]+)([KMG]?)B?", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else 0.0


def main(path, sockets):
    sites, cur = [], None
    for line in open(path, encoding="utf-8"):
        m = re.match(r"(-?[\d.]+[KMG]?B?) peak memory consumed over (\d+) calls from", line)
        if m:
            cur = [size(m.group(1)), int(m.group(2)), []]
            sites.append(cur)
        elif cur is not None and line.strip().startswith("at "):
            frame = re.sub(r".*/registry/src/[^/]+/", "", line.strip()[3:])
            cur[2].append(frame)
    print(f"{'bytes/socket':>12} {'allocs/socket':>13}  site")
    for total, calls, frames in sites:
        ours = [f for f in frames if not f.startswith(SKIP) and "tokio-1" not in f][:3]
        where = " < ".join(ours) or (frames[0] if frames else "?")
        print(f"{total / sockets:12.0f} {calls / sockets:13.2f}  {where}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
