"""Whether there is a GIL. On a free-threaded CPython (3.14t) ponte runs without one: its own modules declare that
they need none, the log and the GIL page say "no GIL", and two worker threads run Python at once. An extension module
that has not declared it (tests/blackbox/apps/needs_gil.c) turns the GIL back on: ponte says so at once, in the log,
on /snapshot and /metrics, naming the module. On a GIL build the same checks find the GIL there all along. Two ASGI loops (--loops 2) run Python at once
without a GIL, as two workers do."""

import json
import os
import tempfile
import threading
import time
import unittest

from harness import FREE_THREADED, TEST_EXTENSIONS, Conn, Server, free_port, get, run_tests, wait_for


class GILState(unittest.TestCase):
    def server(self, *args, env=None, threads=2):
        self.port = free_port()
        env = dict(env or {}, PYTHONPATH=TEST_EXTENSIONS)
        return Server("free_threaded:app", "--gil-monitor", "127.0.0.1:%d" % self.port, "--no-access-log", *args,
                      threads=threads, env=env)

    def snapshot(self):
        """The monitor's latest view (it has none before its first 100 ms tick)."""
        snap = {}

        def taken():
            snap.update(json.loads(get(self.port, "/snapshot").body))
            return bool(snap)
        self.assertTrue(wait_for(taken, timeout=5))
        return snap

    def snapshot_under_two(self, path):
        """The monitor's view 2.5 s into two requests for `path` at once, on two worker threads."""
        with self.server(threads=2) as s:
            t = [threading.Thread(target=lambda: Conn(s.connect(timeout=10)).request("GET", path)) for _ in range(2)]
            for x in t:
                x.start()
            time.sleep(2.5)
            snap = self.snapshot()
            for x in t:
                x.join()
        return snap

    def gil_in_app(self, s):
        return json.loads(Conn(s.connect()).request("GET", "/").body)["gil"]

    def test_start_up_says_whether_there_is_a_gil(self):
        with self.server() as s:
            snap, log = self.snapshot(), s.stderr()
            metrics = get(self.port, "/metrics").body.decode()
            in_app = self.gil_in_app(s)
        if FREE_THREADED:
            self.assertIn("GIL: none (free-threaded CPython): threads run Python at once", log)
            self.assertIn("GIL probe: no GIL to probe (free-threaded CPython)", log)
            self.assertNotIn("RuntimeWarning", log)  # nothing of ponte's turned the GIL on
            self.assertEqual((snap["gil"], snap["gil_why"], in_app), ("none", "", False))
            self.assertIn("ponte_gil_enabled 0\n", metrics)
        else:
            self.assertNotIn("GIL: ", log)
            self.assertEqual((snap["gil"], snap["gil_why"], in_app), ("gil", "", True))
            self.assertIn("ponte_gil_enabled 1\n", metrics)

    def test_a_module_that_needs_the_gil_is_named_within_a_second(self):
        with self.server() as s:
            before = self.snapshot()["gil"]
            Conn(s.connect()).request("GET", "/import")
            imported = time.monotonic()
            if FREE_THREADED:
                self.assertTrue(wait_for(lambda: "GIL: back on" in s.stderr(), timeout=1.0), s.stderr())
                self.assertLess(time.monotonic() - imported, 1.0)
                # the page's snapshot is taken every 100 ms: the next one has it
                self.assertTrue(wait_for(lambda: self.snapshot()["gil"] == "back on", timeout=0.5))
            else:
                time.sleep(1.0)  # as long as ponte would have taken to say it
            snap = self.snapshot()
            metrics = get(self.port, "/metrics").body.decode()
            log = s.stderr()
            in_app = self.gil_in_app(s)
        if FREE_THREADED:
            self.assertEqual(before, "none")
            self.assertIn("GIL: back on: CPython turned it on to import needs_gil, which does not declare that it "
                          "runs without the GIL (Py_mod_gil), at ", log)
            self.assertIn("s of serving. Threads take turns running Python again", log)
            self.assertEqual(snap["gil"], "back on")
            self.assertIn("import needs_gil", snap["gil_why"])
            self.assertIn("ponte_gil_enabled 1\n", metrics)
            self.assertTrue(in_app)
        else:
            self.assertEqual((before, snap["gil"]), ("gil", "gil"))
            self.assertNotIn("back on", log)
            self.assertIn("ponte_gil_enabled 1\n", metrics)
            self.assertTrue(in_app)

    def test_a_module_imported_with_the_app(self):
        with self.server(env={"PONTE_TEST_NEEDS_GIL_AT_IMPORT": "1"}) as s:
            log = s.stderr()
            # the page's view may have been taken (every 100 ms) before the app was imported: the next one has it
            back = wait_for(lambda: self.snapshot()["gil"] == "back on", timeout=0.5)
            snap = self.snapshot()
        if FREE_THREADED:
            self.assertIn("GIL: back on: CPython turned it on to import needs_gil, which does not declare that it "
                          "runs without the GIL (Py_mod_gil), while the app was imported", log)
            self.assertTrue(back, snap)
        else:
            self.assertEqual(snap["gil"], "gil")

    def test_python_gil_1_asks_for_it(self):
        with self.server(env={"PYTHON_GIL": "1"}) as s:
            log = s.stderr()
            snap = self.snapshot()
            in_app = self.gil_in_app(s)
        self.assertTrue(in_app)
        if FREE_THREADED:
            self.assertIn("GIL: on (free-threaded CPython, but PYTHON_GIL=1 or -X gil=1 asked for it)", log)
            # The GIL is a real one again: the probe finds it and sees every transition, as on a GIL build.
            self.assertIn("GIL probe: exact", log)
            self.assertEqual((snap["gil"], snap["gil_why"]), ("back on", "PYTHON_GIL=1 or -X gil=1 asked for it"))
        else:
            self.assertEqual(snap["gil"], "gil")

    def test_two_workers_run_python_at_once_only_without_a_gil(self):
        # Two requests spin in pure Python for 3 s each, on two worker threads. Without a GIL both run Python the
        # whole time, and the view says 2 threads at once, twice over: from the workers' own time attached to Python,
        # and from the sampler, which reads every thread's state and stack. Neither depends on how the OS schedules
        # the two threads (a thread it preempts is still attached). With a GIL they take turns: at most one.
        snap = self.snapshot_under_two("/spin?3")
        busy, p = snap["busy"], snap["sampler"]
        at_once = p["held"] / p["samples"]
        self.assertTrue(p["by_self"] and p["by_self"][0]["name"].startswith("spin ("), p)
        if FREE_THREADED:
            self.assertGreaterEqual(busy, 150, snap)
            self.assertGreaterEqual(at_once, 1.5, p)
        else:
            self.assertLessEqual(busy, 100, snap)
            self.assertGreaterEqual(busy, 50, snap)
            self.assertLessEqual(at_once, 1.0, p)
            self.assertGreaterEqual(at_once, 0.5, p)

    def test_two_loops_run_python_at_once_only_without_a_gil(self):
        # ASGI on --loops 2: a request spins 3 s in pure Python inside its loop (blocking it, as CPU-bound code in an
        # async app does), and a second connection, opened once the first spin has begun, can only be taken by the
        # other loop. Without a GIL both loops run Python at once; with one they take turns, as two workers do.
        fd, mark = tempfile.mkstemp(prefix="ponte-loops-mark-")
        os.close(fd)
        self.addCleanup(os.unlink, mark)

        def marks():
            with open(mark) as f:
                return f.read().split()
        self.port = free_port()
        with Server("loops_app:app", "--loops", "2", "--gil-monitor", "127.0.0.1:%d" % self.port, "--no-access-log",
                    env={"PONTE_TEST_MARK": mark}) as s:
            conns = [Conn(s.connect(timeout=20)) for _ in range(1)]
            conns[0].send(b"GET /spin?3 HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertTrue(wait_for(lambda: len(marks()) == 1, 10))
            conns.append(Conn(s.connect(timeout=20)))
            conns[1].send(b"GET /spin?3 HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertTrue(wait_for(lambda: len(marks()) == 2, 10))
            time.sleep(2)
            snap = self.snapshot()
            answers = [json.loads(c.read_response().body)["thread"] for c in conns]
        self.assertEqual(len(set(answers)), 2, answers)
        loops = sorted(t["name"] for t in snap["threads"] if t["role"] == "loop")
        self.assertEqual(loops, ["loop", "loop-2"], snap["threads"])
        p = snap["sampler"]
        at_once = p["held"] / p["samples"]
        self.assertTrue(p["by_self"] and p["by_self"][0]["name"].startswith("spin ("), p)
        if FREE_THREADED:
            self.assertGreaterEqual(snap["busy"], 150, snap)
            self.assertGreaterEqual(at_once, 1.5, p)
        else:
            self.assertLessEqual(at_once, 1.0, p)
            self.assertGreaterEqual(at_once, 0.5, p)

    def test_lock_waits_are_shown_and_named(self):
        # Two requests take turns on one lock for 3 s, each holding it while it computes. Without a GIL the view
        # counts the waits that park a thread (CPython's lock first spins, attached, calling sched_yield: that part
        # shows as running, in the same function), and the sampler names the function that waits (contended). With
        # a GIL the waits it shows are the GIL's, and there are no lock waits to name.
        snap = self.snapshot_under_two("/contended?3")
        p, workers = snap["sampler"], [x for x in snap["threads"] if x["role"] == "worker"]
        parked = [sum(x["wait_hist"]) for x in workers]
        if FREE_THREADED:
            self.assertGreater(p["waiting"], 0, p)
            self.assertTrue(p["waits"][0]["name"].startswith("contended ("), p)
            self.assertTrue(len(parked) == 2 and all(parked), workers)
        else:
            self.assertEqual((p["waiting"], p["waits"]), (0, []), p)


if __name__ == "__main__":
    run_tests()
