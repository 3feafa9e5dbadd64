"""Numbers that agree: one CPU-bound run (4 workers, 6 clients on a route that spins 5 ms), recorded with
--gil-trace, and every figure the page (/snapshot), /metrics and --gil-report give computed again, independently,
from the trace's spans: hand-offs in all and per pair of threads, acquisitions, GIL held and waited per thread,
and each report line's busy % and switches/s over the window the line covers (the trace marks it). Counts must be
equal; times agree to the precision they are printed with."""

import json
import os
import re
import tempfile
import time
import unittest

from harness import APPS, Server, free_port, run_tests, with_the_gil

with_the_gil()
from test_gil import LINE, get, load_paths as load


def spans(trace):
    """From the trace: {tid: name}, the holds [(ts_ns, end_ns, tid)] in order, waits {tid: [(ts_ns, ns)]}, report
    windows [(start_ns, end_ns)], and the trace's time 0 as CLOCK_MONOTONIC ns."""
    names, holds, waits, windows, t0 = {}, [], {}, [], None
    for e in trace:
        if e.get("ph") == "M" and e["name"] == "thread_name":
            names[e["tid"]] = e["args"]["name"]
        elif e.get("ph") == "M" and e["name"] == "process_name":
            t0 = e["args"]["monotonic_ns"]
        elif e.get("name") == "holding the GIL":
            holds.append((round(e["ts"] * 1000), round((e["ts"] + e["dur"]) * 1000), e["tid"]))
        elif e.get("name") == "waiting for the GIL":
            waits.setdefault(e["tid"], []).append((e["ts"] * 1000, e["dur"] * 1000))
        elif e.get("name") == "gil report":
            windows.append((e["ts"] * 1000, (e["ts"] + e["dur"]) * 1000))
    holds.sort()
    return names, holds, waits, windows, t0


def handoffs(holds):
    """Hand-offs: consecutive holds by different threads, in all and per (from, to)."""
    pairs = {}
    for (_, _, a), (_, _, b) in zip(holds, holds[1:]):
        if a != b:
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    return sum(pairs.values()), pairs


def metric(body, name, **labels):
    sel = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    m = re.search(r"^%s%s ([\d.]+)$" % (name, re.escape("{%s}" % sel) if sel else ""), body, re.M)
    return float(m.group(1)) if m else None


class Agree(unittest.TestCase):
    def test_page_metrics_and_report_agree_with_the_trace(self):
        fd, path = tempfile.mkstemp(prefix="ponte-numbers-", suffix=".json")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        port = free_port()
        s = Server("testapp:application", "--gil-monitor", "127.0.0.1:%d" % port, "--gil-trace", path,
                   "--gil-report", "0.5", "--no-access-log", threads=4, app_dir=APPS)
        with s:
            load(s, ["/spin?seconds=0.005"] * 6, 3)
            time.sleep(1.2)  # quiet: the report's last line covers idle time, the snapshot is settled
            before = time.monotonic_ns()
            snap = json.loads(get(port, "/snapshot").body)
            body = get(port, "/metrics").body.decode()
            after = time.monotonic_ns()
            log = s.stderr()
        with open(path) as f:
            names, holds, waits, windows, t0 = spans(json.load(f))
        self.assertNotIn("dropped", log)
        # What happened up to the readings (the stop that follows takes the GIL again).
        cut = before - t0
        self.assertFalse([h for h in holds if cut <= h[0] < after - t0], "the GIL moved while it was being read")
        holds = [h for h in holds if h[0] < cut]
        total, pairs = handoffs(holds)
        self.assertGreater(total, 100, "the load made too few hand-offs to compare")

        # Hand-offs: /metrics' total, its pairs, and the page's, all equal the trace's count.
        self.assertEqual(metric(body, "ponte_gil_handoffs_total"), total)
        self.assertEqual(snap["handoffs_total"], total)
        by_name = {(names[a], names[b]): n for (a, b), n in pairs.items()}
        self.assertEqual({k: int(metric(body, "ponte_gil_handoffs_between_total", **{"from": k[0], "to": k[1]}))
                          for k in by_name}, by_name)
        threads = snap["threads"]
        self.assertEqual({(threads[a]["name"], threads[b]["name"]): n for a, b, n in snap["handoffs"]}, by_name)

        # Per thread: acquisitions counted, GIL held and waited (µs in the trace, 1 µs in /metrics).
        for tid, name in names.items():
            mine = [h for h in holds if h[2] == tid]
            if not mine:
                continue
            held = sum(e - b for b, e, _ in mine) / 1e9
            self.assertEqual(metric(body, "ponte_gil_acquisitions_total", thread=name), len(mine), name)
            self.assertEqual([t["acquisitions"] for t in threads if t["name"] == name], [len(mine)], name)
            self.assertAlmostEqual(metric(body, "ponte_gil_hold_seconds_total", thread=name), held,
                                   delta=2e-6 + len(mine) * 1e-9, msg=name)
            waited = sum(d for ts, d in waits.get(tid, []) if ts < cut) / 1e9
            self.assertAlmostEqual(metric(body, "ponte_gil_wait_seconds_total", thread=name), waited,
                                   delta=2e-6 + len(mine) * 1e-9, msg=name)

        # --gil-report: each line against the trace over the window it covers.
        lines = [m for m in (LINE.search(x) for x in log.splitlines()) if m]
        self.assertEqual(len(lines), len(windows))
        busy_lines = 0
        for m, (a, b) in zip(lines, windows):
            if b > cut:
                break
            span = b - a
            held = sum(max(0, min(e, b) - max(st, a)) for st, e, _ in holds)
            moves = sum(1 for (_, _, x), (st, _, y) in zip(holds, holds[1:]) if x != y and a < st <= b)
            # busy is printed to 0.1 %, switches/s to 1/s; a take within a clock read of an edge may fall either side.
            self.assertAlmostEqual(float(m.group(1)), 100 * held / span, delta=0.051 + 100 * 2e-6 * 1e9 / span,
                                   msg=m.group(0))
            self.assertAlmostEqual(int(m.group(3)) * span / 1e9, moves, delta=0.5 * span / 1e9 + 2, msg=m.group(0))
            busy_lines += float(m.group(1)) > 50
        self.assertGreaterEqual(busy_lines, 3, lines)


if __name__ == "__main__":
    run_tests()
