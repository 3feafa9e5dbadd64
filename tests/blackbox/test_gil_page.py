"""The live GIL page in a real browser: Debian's headless Chromium loads --gil-monitor's page while CPU-bound
requests run on three workers; a lane per worker must appear and keep updating, the figures and the hand-off table
must fill in, and the switch-interval control must reach the interpreter."""

import contextlib
import json
import os
import re
import threading
import unittest

from browser import CHROMIUM, Browser
from harness import BUILT_FOR, REPO_APPS, Master, Server, free_port, run_tests, workers_of
from test_gil import get, load


@contextlib.contextmanager
def traffic(server, path, clients):
    """CPU-bound requests from `clients` connections until the block ends."""
    stop = threading.Event()

    def run():
        while not stop.is_set():
            load(server, path, clients, 1)

    loader = threading.Thread(target=run)
    loader.start()
    try:
        yield
    finally:
        stop.set()
        loader.join(30)


@unittest.skipUnless(os.path.exists(CHROMIUM) or os.environ.get("CI") == "true",
                     "needs Debian's chromium (installed by .ci/deps on CI)")
class LivePage(unittest.TestCase):
    def test_lanes_appear_and_update(self):
        port = free_port()
        with Server("cpu_bound:app", "--gil-monitor", "127.0.0.1:%d" % port, "--no-access-log", threads=3,
                    app_dir=REPO_APPS) as s:
            with traffic(s, "/?n=200000", 3):
                with Browser() as b:
                    page = b.open("http://127.0.0.1:%d/" % port)
                    lanes = "[...document.querySelectorAll('.lane')].map(l => [l.dataset.thread, l.dataset.role," \
                            " Number(l.dataset.updates)])"
                    b.wait_for(page, "document.querySelectorAll('.lane[data-role=worker]').length >= 3")
                    first = {n: (r, u) for n, r, u in b.evaluate(page, lanes)}
                    self.assertTrue({"worker-1", "worker-2", "worker-3"} <= set(first), first)
                    self.assertEqual(first["worker-1"][0], "worker")
                    # 10 Hz: a second later every worker lane has drawn several more columns.
                    b.wait_for(page, "Number(document.querySelector('.lane[data-thread=\"worker-3\"]')"
                                     ".dataset.updates) >= %d" % (first["worker-3"][1] + 8), timeout=5)
                    later = {n: u for n, _, u in b.evaluate(page, lanes)}
                    for w in ("worker-1", "worker-2", "worker-3"):
                        self.assertGreaterEqual(later[w] - first[w][1], 8, (w, first, later))
                    busy = b.evaluate(page, "document.getElementById('busy').textContent")
                    self.assertRegex(busy, r"^\d+\.\d%$")
                    self.assertGreater(float(busy[:-1]), 50)
                    # The header's busy % and rates are over the snapshots kept (said: up to 2 s), not one 100 ms
                    # snapshot, so they do not flicker between 0 and ten times the rate.
                    b.wait_for(page, "parseFloat(document.getElementById('window').textContent) >= 1.5", timeout=5)
                    window = float(b.evaluate(page, "document.getElementById('window').textContent"))
                    self.assertLessEqual(window, 3.0)  # KEEP is 20 snapshots, ticks of 100 ms plus scheduling delay
                    self.assertRegex(b.evaluate(page, "document.getElementById('switches').textContent"),
                                     r"^\d+(\.\d)?$")
                    self.assertEqual(b.evaluate(page, "document.getElementById('mode').textContent"), "exact")
                    self.assertRegex(b.evaluate(page, "document.getElementById('which').textContent"),
                                     r"^\(the main interpreter's GIL, CPython %s\.\d+\)$" % re.escape(BUILT_FOR))
                    rows = b.wait_for(page, "[...document.querySelectorAll('#pairs tr')].map(r => r.textContent)"
                                            ".filter(t => t.includes('worker-'))")
                    self.assertTrue(rows, "no hand-off between workers shown")
                    # The switch-interval control, as a person would use it.
                    b.evaluate(page, "document.getElementById('interval').value = 2000;"
                                     "document.getElementById('set').click()")
                    b.wait_for(page, "true")
                    snap = None
                    for _ in range(30):
                        snap = json.loads(get(port, "/snapshot").body)
                        if snap["interval_us"] == 2000:
                            break
                        threading.Event().wait(0.1)
                    self.assertEqual(snap["interval_us"], 2000)


    def test_processes_side_by_side(self):
        """--processes 2 with --gil-monitor: the master's page shows each worker's GIL in its own group."""
        port = free_port()
        with Master("cpu_bound:app", "--gil-monitor", "127.0.0.1:%d" % port, "--no-access-log", threads=2,
                    app_dir=REPO_APPS) as s:
            with traffic(s, "/?n=100000", 4):
                with Browser() as b:
                    page = b.open("http://127.0.0.1:%d/" % port)
                    groups = b.wait_for(page, "(() => { const g = new Set([...document.querySelectorAll("
                                              "'.lane[data-role=worker]')].filter(l => Number(l.dataset.updates) > 5)"
                                              ".map(l => l.dataset.process)); return g.size >= 2 ? [...g] : null; })()")
                    self.assertTrue(groups, b.evaluate(page, "document.getElementById('lanes').innerText"))
                    self.assertEqual(sorted(int(g) for g in groups), workers_of(s.proc.pid))
                    heads = b.evaluate(page, "[...document.querySelectorAll('.group-head')].map(h => h.textContent)")
                    self.assertEqual(len(heads), 2, heads)
                    self.assertTrue(all(re.search(r"worker [12] · pid \d+ +GIL busy [\d.]+%", h) for h in heads),
                                    heads)
                    self.assertIn("2 worker processes", b.evaluate(page, "document.getElementById('procs').textContent"))


if __name__ == "__main__":
    run_tests()
