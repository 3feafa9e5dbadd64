"""The GIL page's load buttons (--gil-load IO,CPU): the server loads itself on loopback, from C on the monitor's
thread, for 10 s, and stops by itself; every request it counted was finished by the server (the routes table
agrees exactly); and in headless Chromium, a click fills the worker lanes and the load ends on its own."""

import json
import os
import re
import subprocess
import time
import unittest

from browser import CHROMIUM, Browser
from harness import APPS, PONTE, REPO_APPS, Conn, Server, free_port, run_tests
from test_gil import get

PATHS = "/slow?delay=0.01,/spin?seconds=0.002"  # --gil-load IO,CPU


def post(port, path):
    return get(port, path, method="POST")


def snapshot(port):
    time.sleep(0.25)  # the monitor's latest 100 ms tick
    return json.loads(get(port, "/snapshot").body)


def wait_stopped(test, port, timeout=25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        snap = snapshot(port)
        if not snap["load"]["running"]:
            return snap
    test.fail("the load did not stop by itself: %s" % snap["load"])


class LoadButtons(unittest.TestCase):
    def start(self, *args):
        port = free_port()
        s = Server("testapp:application", "--gil-monitor", "127.0.0.1:%d" % port, "--no-access-log", *args,
                   threads=4, app_dir=APPS, env={"PONTE_TEST_EVENTS": os.devnull}).start()
        self.addCleanup(s.__exit__, None, None, None)
        return s, port

    def test_mixed_load_runs_10_s_and_the_routes_agree(self):
        s, port = self.start("--gil-load", PATHS)
        self.assertTrue(snapshot(port)["load_buttons"])
        started = time.time()
        r = post(port, "/load?kind=mixed")
        self.assertEqual(r.status, 202, r.body)
        self.assertEqual(get(port, "/load?kind=mixed").status, 405)
        again = post(port, "/load?kind=io")
        self.assertEqual(again.status, 409)
        self.assertIn(b"already running", again.body)
        load = snapshot(port)["load"]
        self.assertEqual((load["running"], load["label"], load["clients"]), (True, "mixed: 4 I/O + 4 CPU", 8), load)
        self.assertEqual(load["target"], "127.0.0.1:%d" % s.port)
        snap = wait_stopped(self, port)
        self.assertGreater(time.time() - started, 9.5)
        load = snap["load"]
        self.assertEqual(load["errors"], 0, load)
        rows = {r["route"]: r["requests_total"] for r in snap["routes"]["rows"]}
        self.assertGreater(rows.get("/spin", 0), 0, rows)
        self.assertGreater(rows.get("/slow", 0), 0, rows)
        self.assertEqual(rows["/spin"] + rows["/slow"], load["requests"], (rows, load))
        self.assertIn("load from the GIL page: mixed: 4 I/O + 4 CPU, 8 client(s) for 10 s", s.stderr())

    def test_without_gil_load_and_bad_kinds(self):
        s, port = self.start()
        self.assertFalse(snapshot(port)["load_buttons"])
        r = post(port, "/load?kind=cpu")
        self.assertEqual(r.status, 409)
        self.assertIn(b"no load configured", r.body)
        s2, port2 = self.start("--gil-load", PATHS)
        self.assertEqual(post(port2, "/load?kind=everything").status, 409)
        no_third = post(port2, "/load?kind=shared")
        self.assertEqual(no_third.status, 409)
        self.assertIn(b"no shared-state path configured", no_third.body)
        self.assertFalse(snapshot(port2)["load_shared"])
        self.assertFalse(snapshot(port2)["load"]["running"])

    def test_gil_load_needs_the_monitor_and_two_paths(self):
        for args, why in [(["--gil-load", PATHS], "needs --gil-monitor"),
                          (["--gil-monitor", "127.0.0.1:%d" % free_port(), "--gil-load", "/io"], "IO_PATH,CPU_PATH"),
                          (["--gil-monitor", "127.0.0.1:%d" % free_port(), "--gil-load", "/a,/b,/c,/d"],
                           "IO_PATH,CPU_PATH[,SHARED_PATH]")]:
            r = subprocess.run([PONTE, "--app-dir", APPS, *args, "testapp:application"], capture_output=True,
                               text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(why, r.stderr)


class Demo(unittest.TestCase):
    def test_the_demo_with_apps_runs_options(self):
        # apps/run's own --gil-load paths, against the demo's mounts: all three answer 200, the shared-state button
        # loads the third, and the landing page links the live view.
        with open(os.path.join(REPO_APPS, "run")) as f:
            paths = re.search(r"--gil-monitor 127\.0\.0\.1:8001 --gil-load '([^']+)'", f.read()).group(1)
        port = free_port()
        url = "http://127.0.0.1:%d/" % port
        with Server("demo:application", "--gil-monitor", "127.0.0.1:%d" % port, "--gil-load", paths,
                    "--no-access-log", app_dir=REPO_APPS, env={"PONTE_DEMO_GIL_URL": url}) as s:
            landing = Conn(s).request("GET", "/")
            self.assertIn(('<a href="%s">' % url).encode(), landing.body)
            for path in paths.split(","):
                self.assertEqual(Conn(s).request("GET", path).status, 200, path)
            self.assertTrue(snapshot(port)["load_shared"])
            self.assertEqual(post(port, "/load?kind=shared").status, 202)
            snap = wait_stopped(self, port)
            rows = {r["route"]: r["requests_total"] for r in snap["routes"]["rows"]}
            self.assertEqual(snap["load"]["errors"], 0, snap["load"])
            self.assertEqual(rows.get("/shared", 0), snap["load"]["requests"] + 1, rows)  # and the GET above


@unittest.skipUnless(os.path.exists(CHROMIUM) or os.environ.get("CI") == "true",
                     "needs Debian's chromium (installed by .ci/deps on CI)")
class LoadButtonsInTheBrowser(unittest.TestCase):
    def test_the_cpu_button_fills_the_lanes_and_the_load_ends_by_itself(self):
        port = free_port()
        with Server("testapp:application", "--gil-monitor", "127.0.0.1:%d" % port, "--no-access-log",
                    "--gil-load", PATHS, threads=4, app_dir=APPS, env={"PONTE_TEST_EVENTS": os.devnull}):
            with Browser() as b:
                page = b.open("http://127.0.0.1:%d/" % port)
                b.wait_for(page, "!!document.getElementById('loadbar') && !document.getElementById('loadbar').hidden")
                b.evaluate(page, "document.querySelector('#loadbar button[data-kind=cpu]').click()")
                b.wait_for(page, "document.getElementById('loadstate').textContent.includes('s left')")
                holds = "[...document.querySelectorAll('.lane[data-role=worker] .pct')]" \
                        ".map(p => parseFloat(p.textContent.split('hold ')[1]))"
                b.wait_for(page, "(%s).filter(h => h > 5).length >= 2" % holds, timeout=10)
                self.assertTrue(b.evaluate(page, "document.querySelector('#loadbar button').disabled"))
                b.wait_for(page, "document.getElementById('loadstate').textContent.startsWith('last load')",
                           timeout=25)
                state = b.evaluate(page, "document.getElementById('loadstate').textContent")
                self.assertRegex(state, r"^last load: 8 CPU-bound clients, [1-9]\d* requests, 0 errors$")
                self.assertFalse(b.evaluate(page, "document.querySelector('#loadbar button').disabled"))


if __name__ == "__main__":
    run_tests()
