"""The GIL, measured exactly: known workloads must report what they do. CPU-bound requests on 4 worker threads
keep the GIL busy with threads waiting and sharing it; I/O-bound ones leave it nearly idle; an idle server is idle.
The probe must say it is exact (it sees every transition of every thread)."""

import re
import threading
import time
import unittest

from harness import REPO_APPS, Conn, Server, run_tests

LINE = re.compile(r"gil: busy ([\d.]+)%, (\d+) waiting, (\d+) switches/s, (\d+) forced/s, interval (\d+) us; "
                  r"hold/wait:(.*)")


def load(server, path, clients, seconds):
    """`clients` connections each sending requests back to back for `seconds`; returns the count served."""
    done = []

    def run():
        c = Conn(server)
        n, end = 0, time.time() + seconds
        while time.time() < end:
            assert c.request("GET", path).status == 200
            n += 1
        c.close()
        done.append(n)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return sum(done)


def reports(server):
    out = []
    for line in server.stderr().splitlines():
        m = LINE.search(line)
        if m:
            per = {name: (float(h), float(w)) for name, h, w in re.findall(r" (\S+)=([\d.]+)%/([\d.]+)%", m.group(6))}
            out.append({"busy": float(m.group(1)), "waiting": int(m.group(2)), "switches": int(m.group(3)),
                        "forced": int(m.group(4)), "interval": int(m.group(5)), "threads": per})
    return out


class GILView(unittest.TestCase):
    def test_probe_is_exact(self):
        with Server("hello:app", app_dir=REPO_APPS) as s:
            self.assertIn("GIL probe: exact (every acquire and release, all threads)", s.stderr())

    def test_cpu_bound_threads_contend(self):
        with Server("cpu_bound:app", "--gil-report", "0.5", "--no-access-log", threads=4, app_dir=REPO_APPS) as s:
            served = load(s, "/?n=300000", clients=4, seconds=3)
            time.sleep(0.6)
            busy = [r for r in reports(s) if r["busy"] > 50]
        self.assertGreater(served, 4)
        self.assertTrue(busy, "no busy interval reported")
        top = max(busy, key=lambda r: r["busy"])
        self.assertGreater(top["busy"], 80, top)
        workers = {k: v for k, v in top["threads"].items() if k.startswith("worker-")}
        self.assertEqual(len(workers), 4, top)
        # The GIL is shared: every worker holds some of it and waits for the rest.
        for name, (hold, wait) in workers.items():
            self.assertGreater(hold, 5, (name, top))
            self.assertGreater(wait, 20, (name, top))
        # Requests longer than the 5 ms switch interval force switches between the threads.
        self.assertTrue(any(r["forced"] > 0 for r in busy), busy)
        self.assertEqual(top["interval"], 5000)

    def test_io_bound_leaves_the_gil_idle(self):
        with Server("io_bound:app", "--gil-report", "0.5", "--no-access-log", threads=8, app_dir=REPO_APPS) as s:
            served = load(s, "/?delay=0.02", clients=8, seconds=2.5)
            time.sleep(0.6)
            active = [r for r in reports(s) if r["switches"] > 0]
        # 8 threads wait at once: far more than one request per 20 ms goes through.
        self.assertGreater(served, 300)
        self.assertTrue(active)
        self.assertLess(max(r["busy"] for r in active), 30, active)

    def test_idle_server_is_idle(self):
        with Server("hello:app", "--gil-report", "0.3", threads=2, app_dir=REPO_APPS) as s:
            time.sleep(1.2)
            rs = reports(s)
        self.assertTrue(rs)
        self.assertLess(max(r["busy"] for r in rs[1:] or rs), 5, rs)


if __name__ == "__main__":
    run_tests()
