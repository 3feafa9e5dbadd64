#!/usr/bin/python3
"""CPU-bound Python on threads, with the GIL and without: CPython 3.14 from Debian's pool tarball built twice with the
same flags (tests/cpython_tarball: 3.14.7 with the GIL, 3.14t free-threaded), each bare and under ponte.

    bench/free_threaded.py [--rounds 3] [--seconds 5] [--n 100000]

- bare: apps/cpu_bound.py's work(n), called back to back on one thread, then on two, for --seconds: calls/s;
- ponte: the same function behind its route (apps/cpu_bound.py, one call per request) on --threads 1 and 2, under
  wrk with two connections per thread, so that a worker finds the next request waiting when it finishes one (with
  one each, it would wait for the round trip, and on two busy CPUs for the loop thread and wrk to be scheduled):
  requests/s. Release builds, inside tests/pythons' root: build-rel-3.14.7 and build-rel-3.14t.

Each round runs every case once, bare and ponte side by side, in the opposite order every other round (this VM's
speed drifts by a third within minutes). Prints a markdown table (the median of the rounds, and their range) and
issue 30's two goals, as ratios within each round: ponte on 3.14t with two threads keeps >= 85% of bare 3.14t's two
threads, and is >= 1.3x ponte on 3.14. Two threads need both CPUs: the
server and the bare runs may use both; wrk shares them, at a few hundred requests a second it costs next to nothing.
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

from loopback import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PYTHONS = os.path.join(REPO, "tests", "pythons")
TARBALL = os.path.join(REPO, "tests", "cpython_tarball")
APPS = os.path.join(REPO, "apps")

# The bare run: work(n) from the app itself, so that both measure the same function.
BARE = """
import sys, threading, time
sys.path.insert(0, sys.argv[1])
from cpu_bound import work
n, threads, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
work(n)
counts = [0] * threads
stop = time.perf_counter() + seconds
def run(i):
    while time.perf_counter() < stop:
        work(n)
        counts[i] += 1
ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
t0 = time.perf_counter()
for t in ts:
    t.start()
for t in ts:
    t.join()
print(sum(counts) / (time.perf_counter() - t0))
"""


def inside(argv):
    return ["bash", PYTHONS, "run"] + argv


def interpreter(kind):
    """The interpreter's path inside the root, built once by tests/cpython_tarball."""
    return subprocess.run(["bash", TARBALL, kind], check=True, capture_output=True, text=True).stdout.strip()


def build(kind, python):
    build_dir = os.path.join(REPO, "build-rel-" + ("3.14t" if kind == "3.14t" else "3.14.7"))
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        subprocess.run(inside(["meson", "setup", build_dir, "--buildtype=release", "-Dpython=" + python]),
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run(inside(["ninja", "-C", build_dir]), check=True, stdout=subprocess.DEVNULL)
    return os.path.join(build_dir, "ponte")


def bare(python, n, threads, seconds):
    out = subprocess.run(inside([python, "-c", BARE, APPS, str(n), str(threads), str(seconds)]), check=True,
                         capture_output=True, text=True).stdout
    return float(out.split()[-1])


def served(ponte, n, threads, seconds):
    port = free_port()
    proc = subprocess.Popen(inside([ponte, "--no-access-log", "--log-level", "warning", "-b", "127.0.0.1:%d" % port,
                                    "--app-dir", APPS, "--threads", str(threads), "cpu_bound:app"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("ponte did not start: " + proc.stderr.read()[-1000:])
                time.sleep(0.1)
        url, conns = "http://127.0.0.1:%d/?n=%d" % (port, n), "-c%d" % (2 * threads)
        subprocess.run(["wrk", "-t1", conns, "-d1s", url], capture_output=True)  # warm up
        out = subprocess.run(["wrk", "-t1", conns, "-d%gs" % seconds, "--timeout", "10s", url],
                             capture_output=True, text=True).stdout
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if m is None or "Non-2xx" in out:
            raise RuntimeError("wrk: " + out)
        return float(m.group(1))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--n", type=int, default=100000, help="work(n)'s size: 100000 is a few ms of Python here")
    a = ap.parse_args()
    kinds = {k: interpreter(k) for k in ("3.14", "3.14t")}
    pontes = {k: build(k, p) for k, p in kinds.items()}
    # bare and ponte side by side, so that each round's ratio of the two compares runs seconds apart
    cases = [(what, kind, threads) for threads in (1, 2) for kind in ("3.14", "3.14t") for what in ("bare", "ponte")]
    got = {c: [] for c in cases}
    for r in range(a.rounds):
        order = cases if r % 2 == 0 else [c for c in reversed(cases)]
        for what, kind, threads in order:
            if what == "bare":
                v = bare(kinds[kind], a.n, threads, a.seconds)
            else:
                v = served(pontes[kind], a.n, threads, a.seconds)
            got[(what, kind, threads)].append(v)
            print("round %d: %s %s, %d thread%s: %.1f/s" % (r + 1, what, kind, threads, "s" if threads > 1 else "",
                                                           v), file=sys.stderr, flush=True)
    med = {c: statistics.median(v) for c, v in got.items()}
    print("\nwork(%d), calls/s (bare) or requests/s (ponte, one call each): median of %d rounds of %g s, and range\n"
          % (a.n, a.rounds, a.seconds))
    print("| | 3.14 (GIL), 1 thread | 3.14, 2 threads | 3.14t, 1 thread | 3.14t, 2 threads |")
    print("|---|---|---|---|---|")
    for what in ("bare", "ponte"):
        cells = ["%.1f (%.1f-%.1f)" % (med[(what, k, t)], min(got[(what, k, t)]), max(got[(what, k, t)]))
                 for k in ("3.14", "3.14t") for t in (1, 2)]
        print("| %s | %s |" % (what, " | ".join([cells[0], cells[1], cells[2], cells[3]])))
    # The goals as ratios within each round (the cases compared ran seconds apart), then their median and range.
    def ratio(a, b):
        rs = [x / y for x, y in zip(got[a], got[b])]
        return statistics.median(rs), min(rs), max(rs)
    keep = ratio(("ponte", "3.14t", 2), ("bare", "3.14t", 2))
    ahead = ratio(("ponte", "3.14t", 2), ("ponte", "3.14", 2))
    print("\nponte on 3.14t, 2 threads: %.0f%% of bare 3.14t's 2 threads (rounds %.0f-%.0f%%; goal >= 85%%): %s" %
          (100 * keep[0], 100 * keep[1], 100 * keep[2], "met" if keep[0] >= 0.85 else "NOT met"))
    print("ponte on 3.14t, 2 threads: %.2fx ponte on 3.14 with the GIL (rounds %.2f-%.2fx; goal >= 1.3x): %s" %
          (ahead[0], ahead[1], ahead[2], "met" if ahead[0] >= 1.3 else "NOT met"))


if __name__ == "__main__":
    main()
