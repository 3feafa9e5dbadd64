"""Numbers that agree: one CPU-bound run (4 workers, 6 clients on a route that spins 5 ms), recorded with
--gil-trace, and every figure the page (/snapshot), /metrics and --gil-report give computed again, independently,
from the trace's spans: hand-offs in all and per pair of threads, acquisitions, GIL held and waited per thread,
and each report line's busy % and switches/s over the window the line covers (the trace marks it). Counts must be
equal; times agree to the precision they are printed with.

Without a GIL (3.14t), the same for what replaces it: time attached to Python and waits for a lock per thread in
/metrics, and each report line's threads running Python at once, against the trace's spans of each."""

import json
import os
import re
import tempfile
import time
import unittest

from harness import APPS, FREE_THREADED, TEST_EXTENSIONS, Server, free_port, run_tests, with_the_gil

with_the_gil()
from test_gil import LINE, get, load_paths as load


GIL_SPANS = ("holding the GIL", "waiting for the GIL")
NO_GIL_SPANS = ("running Python", "waiting for a lock")  # the trace's names for them without a GIL


def spans(trace, kinds=GIL_SPANS):
    """From the trace: {tid: name}, the holds (or, with NO_GIL_SPANS, the stretches attached) [(ts_ns, end_ns, tid)]
    in order, waits {tid: [(ts_ns, ns)]}, report windows [(start_ns, end_ns)], and the trace's time 0 as
    CLOCK_MONOTONIC ns."""
    names, holds, waits, windows, t0 = {}, [], {}, [], None
    for e in trace:
        if e.get("ph") == "M" and e["name"] == "thread_name":
            names[e["tid"]] = e["args"]["name"]
        elif e.get("ph") == "M" and e["name"] == "process_name":
            t0 = e["args"]["monotonic_ns"]
        elif e.get("name") == kinds[0]:
            holds.append((round(e["ts"] * 1000), round((e["ts"] + e["dur"]) * 1000), e["tid"]))
        elif e.get("name") == kinds[1]:
            waits.setdefault(e["tid"], []).append((e["ts"] * 1000, e["dur"] * 1000))
        elif e.get("name") == "gil report":
            windows.append((e["ts"] * 1000, (e["ts"] + e["dur"]) * 1000))
    holds.sort()
    return names, holds, waits, windows, t0


NO_GIL_LINE = re.compile(r"gil: none \(free-threaded\), ([\d.]+) of ponte's threads ran Python at once, on ([\d.]+) "
                         r"CPUs, (\d+) waiting for a lock(?:, asyncio loop busy [\d.]+%)?, last [\d.]+ s; python/lock:(.*)")


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


def traced_run(test, app, paths, env=None):
    """app on 4 workers with --gil-trace, --gil-report 0.5 and the page, one client per path for 3 s, then 1.2 s
    quiet (the report's last line covers idle time, the snapshot is settled). The snapshot and /metrics, read
    between `before` and `after` (monotonic ns), the log, and the trace as loaded."""
    fd, path = tempfile.mkstemp(prefix="ponte-numbers-", suffix=".json")
    os.close(fd)
    test.addCleanup(os.unlink, path)
    port = free_port()
    s = Server(app, "--gil-monitor", "127.0.0.1:%d" % port, "--gil-trace", path, "--gil-report", "0.5",
               "--no-access-log", threads=4, app_dir=APPS, env=env)
    with s:
        load(s, paths, 3)
        time.sleep(1.2)
        before = time.monotonic_ns()
        snap = json.loads(get(port, "/snapshot").body)
        body = get(port, "/metrics").body.decode()
        after = time.monotonic_ns()
        log = s.stderr()
    with open(path) as f:
        trace = json.load(f)
    return snap, body, log, before, after, trace


class Agree(unittest.TestCase):
    def test_page_metrics_and_report_agree_with_the_trace(self):
        snap, body, log, before, after, trace = traced_run(self, "testapp:application", ["/spin?seconds=0.005"] * 6)
        names, holds, waits, windows, t0 = spans(trace)
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


@unittest.skipUnless(FREE_THREADED, "a GIL build has no state without a GIL: the case above covers its numbers")
class AgreeWithoutTheGIL(unittest.TestCase):
    def test_metrics_and_report_agree_with_the_trace(self):
        """Two workers spinning, two counting under one lock (tests/blackbox/apps/free_threaded.py), on 3.14t."""
        _, body, log, before, _, trace = traced_run(
            self, "free_threaded:app", ["/spin?0.02", "/spin?0.02", "/contended?0.02", "/contended?0.02"],
            env={"PYTHON_GIL": "0", "PYTHONPATH": TEST_EXTENSIONS})  # not with_the_gil()'s 1
        names, runs, waits, windows, t0 = spans(trace, NO_GIL_SPANS)
        self.assertEqual([e for e in trace if e.get("name") in GIL_SPANS], [], "a GIL span without a GIL")
        self.assertNotIn("dropped", log)
        self.assertEqual(metric(body, "ponte_gil_enabled"), 0)
        cut = before - t0
        runs = [r for r in runs if r[0] < cut]

        # Per thread: attached and waiting for a lock (µs in the trace, 1 µs in /metrics).
        waited_any = 0
        for tid, name in names.items():
            mine = [r for r in runs if r[2] == tid]
            ran = sum(e - b for b, e, _ in mine) / 1e9
            waited = sum(d for ts, d in waits.get(tid, []) if ts < cut) / 1e9
            n = len(mine) + len(waits.get(tid, []))
            got = metric(body, "ponte_python_attached_seconds_total", thread=name)
            if got is None:
                self.assertEqual((ran, waited), (0, 0), name)  # a thread of no records has no spans either
                continue
            self.assertAlmostEqual(got, ran, delta=2e-6 + n * 1e-9, msg=name)
            self.assertAlmostEqual(metric(body, "ponte_python_lock_wait_seconds_total", thread=name), waited,
                                   delta=2e-6 + n * 1e-9, msg=name)
            waited_any += waited > 0
        self.assertGreaterEqual(waited_any, 2, "the contended route made no waits for a lock on two threads")

        # --gil-report: each line's threads at once against the trace's attached time over its window.
        lines = [m for m in (NO_GIL_LINE.search(x) for x in log.splitlines()) if m]
        self.assertEqual(len(lines), len(windows), log[-2000:])
        busy_lines = 0
        for m, (a, b) in zip(lines, windows):
            if b > cut:
                break
            span = b - a
            ran = sum(max(0, min(e, b) - max(st, a)) for st, e, _ in runs)
            # printed to 0.01; a stretch that starts or ends within a clock read (2 µs) of either edge may fall
            # either side, for each of up to 8 threads
            self.assertAlmostEqual(float(m.group(1)), ran / span, delta=0.0051 + 2 * 8 * 2e-6 * 1e9 / span,
                                   msg=m.group(0))
            busy_lines += float(m.group(1)) > 1.2
        self.assertGreaterEqual(busy_lines, 3, [m.group(0) for m in lines])


if __name__ == "__main__":
    run_tests()
