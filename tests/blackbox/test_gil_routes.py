"""The GIL per route (--gil-routes): known workloads with known answers. A route that spins 5 ms holding the GIL and
routes that sleep: the table ranks the spinner first, gives it about 5 ms of GIL per request and the sleepers almost
none, and the sleepers, which must get the GIL back from the spinner, wait for it. Routes are collapsed ({n},
{uuid}) and capped ("other"); /metrics counts exactly the requests the clients made."""

import json
import os
import re
import time
import unittest

from harness import APPS, Conn, Server, free_port, run_tests
from test_gil import get, load_paths as load


def into_the_window():
    """The table counts the last whole seconds: wait until the second the load ended in is whole."""
    time.sleep(1 - time.monotonic() % 1 + 0.1)


class Routes(unittest.TestCase):
    def start(self, app, *args, threads=4):
        port = free_port()
        s = Server(app, "--gil-monitor", "127.0.0.1:%d" % port, "--no-access-log", *args, threads=threads,
                   app_dir=APPS, env={"PONTE_TEST_EVENTS": os.devnull}).start()
        self.addCleanup(s.__exit__, None, None, None)
        return s, port

    def routes(self, port):
        time.sleep(0.25)  # /snapshot is the monitor's latest 100 ms tick
        return {r["route"]: r for r in json.loads(get(port, "/snapshot").body)["routes"]["rows"]}

    def metric(self, port, name, route):
        body = get(port, "/metrics").body.decode()
        return float(re.search(r'^%s\{route="%s"\} ([\d.]+)$' % (name, re.escape(route)), body, re.M).group(1))

    def check_spin_and_sleep(self, port, counts, spin, sleep, waits):
        into_the_window()
        rows = self.routes(port)
        self.assertEqual(max(rows.values(), key=lambda r: r["gil_held_share"])["route"], spin, rows)
        self.assertGreaterEqual(rows[spin]["gil_held_ms"], 4.0, rows)
        self.assertLess(rows[spin]["gil_held_ms"], 8.0, rows)
        # Almost no holding, against the spinner's (absolute times grow several-fold under ASan).
        self.assertLess(rows[sleep]["gil_held_ms"], rows[spin]["gil_held_ms"] / 5, rows)
        self.assertGreater(rows[spin]["gil_held_share"], 5 * rows[sleep]["gil_held_share"], rows)
        if waits:
            self.assertGreater(rows[sleep]["gil_wait_start_ms"] + rows[sleep]["gil_wait_run_ms"], 0.5, rows)
        self.assertGreaterEqual(rows[sleep]["p50_ms"], 10, rows)
        for path, n in counts.items():
            route = path.split("?")[0]
            self.assertEqual(self.metric(port, "ponte_route_requests_total", route), n)
            self.assertEqual(rows[route]["requests_total"], n)

    def test_wsgi_spinner_holds_and_sleepers_wait(self):
        s, port = self.start("testapp:application")
        counts = load(s, ["/spin?seconds=0.005", "/slow?delay=0.01", "/slow?delay=0.01"], 2.5)
        counts = {"/spin": counts["/spin?seconds=0.005"], "/slow": counts["/slow?delay=0.01"]}
        self.check_spin_and_sleep(port, counts, "/spin", "/slow", waits=True)

    def test_asgi_spinner_holds_and_sleepers_do_not(self):
        s, port = self.start("asgi_testapp:app", threads=None)
        counts = load(s, ["/spin?seconds=0.005", "/slow?delay=0.01", "/slow?delay=0.01"], 2.5)
        counts = {"/spin": counts["/spin?seconds=0.005"], "/slow": counts["/slow?delay=0.01"]}
        self.check_spin_and_sleep(port, counts, "/spin", "/slow", waits=False)

    def test_routes_are_collapsed_and_capped(self):
        s, port = self.start("testapp:application", "--gil-routes", "2")
        c = Conn(s)
        for path in ["/items/1", "/items/22?x=1", "/u/123e4567-e89b-12d3-a456-426614174000",
                     "/u/123E4567E89B12D3A456426614174000", "/zzz", "/items/333/edit"]:
            self.assertEqual(c.request("GET", path).status, 200)
        c.close()
        rows = self.routes(port)
        self.assertEqual({k: r["requests_total"] for k, r in rows.items()},
                         {"/items/{n}": 2, "/u/{uuid}": 2, "other": 2}, rows)
        self.assertEqual(self.metric(port, "ponte_route_requests_total", "other"), 2)

    def test_off(self):
        s, port = self.start("testapp:application", "--gil-routes", "0")
        self.assertEqual(Conn(s).request("GET", "/x").status, 200)
        time.sleep(0.25)
        self.assertEqual(json.loads(get(port, "/snapshot").body)["routes"], {"window_s": 5, "max": 0, "rows": []})
        self.assertNotIn(b"ponte_route_", get(port, "/metrics").body)


if __name__ == "__main__":
    run_tests()
