#!/usr/bin/python3
"""The experiments docs/gil.md walks through, re-run: each starts ponte with --gil-monitor, loads it with wrk,
reads the monitor's /snapshot while the load runs, and (with --shots) saves a screenshot of the live page through
Debian's headless Chromium. Prints the figures as markdown.

    bench/gil_demos.py [--shots docs/gil] [--seconds 4]

Needs wrk and, for --shots, chromium. Server on CPU 0, wrk on CPU 1 (the --processes demo uses both CPUs).
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "blackbox"))
from harness import free_port  # noqa: E402 (tests/blackbox is on the path above)

PONTE = os.path.join(REPO, "build-rel", "ponte")
APPS = os.path.join(HERE, "apps")
REPO_APPS = os.path.join(REPO, "apps")


class Ponte:
    def __init__(self, *args, cpus="0", app="bench_wsgi:app", appdir=APPS):
        self.port, self.mon = free_port(), free_port()
        self.proc = subprocess.Popen(["taskset", "-c", cpus, PONTE, "--no-access-log", "--log-level", "warning",
                                      "-b", "127.0.0.1:%d" % self.port, "--gil-monitor", "127.0.0.1:%d" % self.mon,
                                      "--app-dir", appdir, *args, app], start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.mon), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)

    def snapshot(self, mon=None):
        with urllib.request.urlopen("http://127.0.0.1:%d/snapshot" % (mon or self.mon), timeout=5) as r:
            return json.loads(r.read())

    def interval(self, us):
        urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%d/interval?us=%d" % (self.mon, us),
                                                      method="POST"), timeout=5).read()

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def wrk(port, path, conns, seconds, out):
    r = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%gs" % seconds, "--latency",
                        "http://127.0.0.1:%d%s" % (port, path)], capture_output=True, text=True)
    text = r.stdout

    def lat(q):
        m = re.search(r"^\s+%s%%\s+(\S+)" % q, text, re.M)
        return m.group(1) if m else "-"

    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out.update(rps=float(m.group(1)) if m else 0.0, p50=lat("50"), p99=lat("99"))


def under_load(p, path, conns, seconds, shot=None, shots_dir=None, extra=None):
    """Runs wrk; samples the monitor in the middle; optionally screenshots the page. Returns the figures."""
    res = {}
    # A screenshot needs the load to outlast the browser's start and a few seconds of lanes.
    t = threading.Thread(target=wrk, args=(p.port, path, conns, seconds + (6 if shot and shots_dir else 0), res))
    t.start()
    if extra:
        extra()
    time.sleep(seconds * 0.5)
    snaps = [p.snapshot()]
    time.sleep(0.3)
    snaps.append(p.snapshot())
    if shot and shots_dir:
        from browser import Browser
        with Browser(1180, 720) as b:
            page = b.open("http://127.0.0.1:%d/" % p.mon)
            time.sleep(4)
            b.screenshot(page, os.path.join(shots_dir, shot))
    t.join()
    s = snaps[-1]
    threads = [x for x in s["threads"] if x["role"] in ("worker", "loop", "app")]
    res.update(busy=sum(x["busy"] for x in snaps) / len(snaps), waiting=s["waiting"],
               switches=sum(x["switches_per_s"] for x in snaps) / len(snaps),
               forced=sum(x["forced_per_s"] for x in snaps) / len(snaps), loop_busy=s["loop_busy"],
               loop_lag=s["loop_lag_ms"], interval=s["interval_us"],
               top=sorted(((x["name"], x["hold"], x["wait"]) for x in threads), key=lambda x: -x[1])[:3])
    return res


def row(label, r):
    return "| %s | %.0f | %s | %s | %.0f%% | %d | %.0f | %.0f |" % (label, r["rps"], r["p50"], r["p99"], r["busy"],
                                                                 r["waiting"], r["switches"], r["forced"])


HEAD = ("| setup | req/s | p50 | p99 | GIL busy | waiting | switches/s | forced/s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", help="folder for the page screenshots (needs chromium)")
    ap.add_argument("--seconds", type=float, default=4)
    a = ap.parse_args()
    if a.shots:
        os.makedirs(a.shots, exist_ok=True)
    secs = a.seconds
    out = []

    out += ["### 1. I/O-bound (`/io`: 10 ms wait), wrk -c64", "", HEAD]
    for threads in (1, 8, 64):
        p = Ponte("--threads", str(threads))
        try:
            r = under_load(p, "/io", 64, secs, shot="io-threads-%d.png" % threads if threads == 8 else None,
                           shots_dir=a.shots)
        finally:
            p.stop()
        out.append(row("WSGI --threads %d" % threads, r))
    p = Ponte(app="bench_asgi:app")
    try:
        r = under_load(p, "/io", 64, secs)
    finally:
        p.stop()
    out.append(row("ASGI (one thread)", r) + " loop busy %.0f%%" % r["loop_busy"])

    out += ["", "### 2. CPU-bound (`/cpu`: about 1 ms of Python), wrk -c8", "", HEAD]
    for threads in (0, 1, 8):
        p = Ponte("--threads", str(threads))
        try:
            r = under_load(p, "/cpu", 8, secs, shot="cpu-threads-8.png" if threads == 8 else None, shots_dir=a.shots)
        finally:
            p.stop()
        out.append(row("WSGI --threads %d" % threads, r) + (" top: " + ", ".join(
            "%s %.0f%%/%.0f%%" % t for t in r["top"]) if threads == 8 else ""))
    p = Ponte(app="bench_asgi:app")
    try:
        r = under_load(p, "/cpu", 8, secs, shot="cpu-asgi.png", shots_dir=a.shots)
    finally:
        p.stop()
    out.append(row("ASGI (one thread)", r) + " loop busy %.0f%%, longest callback %.1f ms" % (r["loop_busy"],
                                                                                          r["loop_lag"]))
    for procs in (1, 2):
        # One process needs one CPU; two get both, sharing CPU 1 with wrk.
        p = Ponte("--processes", str(procs), "--threads", "1", cpus="0" if procs == 1 else "0,1")
        try:
            res = {}
            wrk(p.port, "/cpu", 8, secs, res)
            busy = []
            for k in range(procs):
                try:
                    busy.append("%.0f%%" % p.snapshot(p.mon + k)["busy"])
                except OSError:
                    busy.append("?")
        finally:
            p.stop()
        out.append("| WSGI --processes %d (%s) | %.0f | %s | %s | %s | | | |" % (
            procs, "CPU 0" if procs == 1 else "CPUs 0,1, one shared with wrk", res["rps"], res["p50"], res["p99"],
            " + ".join(busy)))

    out += ["", "### 3. The switch interval and the convoy: a tiny request (`/?n=1`) answered while 4 threads run "
            "10 ms CPU-bound requests (`apps/cpu_bound.py`, `/?n=200000`)", "",
            "| switch interval | tiny request p50 | p99 | CPU-bound req/s | switches/s | forced/s |",
            "|---:|---:|---:|---:|---:|---:|"]
    for us in (500, 5000, 20000):
        p = Ponte("--threads", "5", app="cpu_bound:app", appdir=REPO_APPS)
        try:
            p.interval(us)
            tiny = {}
            tt = threading.Thread(target=lambda: (time.sleep(0.5), wrk(p.port, "/?n=1", 1, secs - 1, tiny)))
            r = under_load(p, "/?n=200000", 4, secs, extra=tt.start,
                           shot="convoy-%dus.png" % us if us == 5000 else None, shots_dir=a.shots)
            tt.join()
        finally:
            p.stop()
        out.append("| %d µs | %s | %s | %.0f | %.0f | %.0f |" % (us, tiny.get("p50"), tiny.get("p99"), r["rps"],
                                                                 r["switches"], r["forced"]))
    print("\n".join(out))


if __name__ == "__main__":
    main()
