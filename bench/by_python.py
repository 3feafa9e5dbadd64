#!/usr/bin/python3
"""One table from several `bench/run --python X` runs (one per CPython): each cell is server CPU µs per request, the
median of the run's rounds; ponte's carry, in brackets, the round-by-round ratio of the best peer's CPU per request
to ponte's in that same run (above 1: ponte uses less) and its range; a last row gives the GIL probe's price per
GIL transition, where the run measured it (--extras probe). Ratios hold within a run; across runs only the CPU
figures compare, and this VM drifts.

    bench/by_python.py bench/results/3.11 bench/results/3.13 bench/results/3.14 bench/results/3.15
"""

import json
import os
import re
import sys


def load(folder):
    with open(os.path.join(folder, "results.json")) as f:
        doc = json.load(f)
    m = re.search(r"Python (\d+\.\d+)", doc["meta"]["python"])
    return (m.group(1) if m else folder), doc


def cell(row):
    text = "%.1f" % row["cpu_us_per_req"] if row["cpu_us_per_req"] < 100 else "%.0f" % row["cpu_us_per_req"]
    if row["server"].startswith("ponte") and row.get("cpu_vs_best_peer"):
        lo, hi = row["cpu_vs_best_peer_range"]
        text += " (%.2f×, %.2f–%.2f)" % (row["cpu_vs_best_peer"], lo, hi)
    return text


def by_key(doc):
    """The run's measured rows, by (endpoint, server without its " (PyPI)"), in the run's order."""
    return {(r["endpoint"], re.sub(r" \(PyPI\)$", "", r["server"])): r for r in doc["rows"] if r.get("cpu_us_per_req")}


def main():
    runs = [load(d) for d in sys.argv[1:]]
    if not runs:
        sys.exit(__doc__)
    rows = [by_key(doc) for _, doc in runs]
    keys = list(dict.fromkeys(k for each in rows for k in each))
    print("| endpoint | server | %s |" % " | ".join(v for v, _ in runs))
    print("|---|---|" + "---:|" * len(runs))
    for ep, server in keys:
        print("| %s | %s | %s |" % (ep, server, " | ".join(cell(each[(ep, server)]) if (ep, server) in each else "-"
                                                          for each in rows)))
    probe = []
    for _, doc in runs:
        g = doc.get("extra", {}).get("gil_probe") or {}
        probe.append("%.0f ns" % g["event_ns"] if g.get("event_ns") is not None else "-")
    print("| GIL probe | per GIL transition (/release, on − off) | %s |" % " | ".join(probe))


if __name__ == "__main__":
    main()
