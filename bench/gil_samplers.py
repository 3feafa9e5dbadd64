#!/usr/bin/python3
"""ponte's GIL sampler against py-spy's, on the same run: ponte serves a workload under wrk with --gil-profile
(100 Hz), and `py-spy record --gil` (100 Hz, from outside, only the GIL holder's stack) samples the same process
at the same time. Prints the top functions by self share (innermost frame) from each, side by side, as markdown
for docs/gil.md.

    bench/gil_pyspy.py [--seconds 8]

py-spy comes from PyPI into bench/.venv (bench/peers.py, pinned); without PyPI, or where py-spy may not attach
(ptrace refused), this says so and stops. Server on CPU 0, wrk on CPU 1. py-spy names a frame by the line it is
on and ponte by the function's first line, so functions are compared as "name (file)".
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "blackbox"))
from harness import free_port  # noqa: E402 (tests/blackbox is on the path above)
from peers import pypi_peers  # noqa: E402

PONTE = os.path.join(REPO, "build-rel", "ponte")
WORKLOADS = [
    # name, app dir, app, ponte's threads, wrk connections, path
    ("cpu_bound.py, 4 threads, wrk -c6", os.path.join(REPO, "apps"), "cpu_bound:app", 4, 6, "/?n=20000"),
    ("the Django demo's index page, 8 threads, wrk -c16", os.path.join(REPO, "apps"), "django_site.wsgi:application",
     8, 16, "/"),
]


def folded(path):
    """{"name (file)": self samples}, and the number of samples, from a collapsed-stack file."""
    self_counts, n = {}, 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n += int(count)
            leaf = stack.split(";")[-1] if stack else "[no Python frame]"
            leaf = re.sub(r":\d+\)$", ")", leaf)
            self_counts[leaf] = self_counts.get(leaf, 0) + int(count)
    return self_counts, n


def run(workload, seconds, pyspy, tmp):
    name, appdir, app, threads, conns, path = workload
    port, prof, raw = free_port(), os.path.join(tmp, "ponte.folded"), os.path.join(tmp, "pyspy.folded")
    env = dict(os.environ, PONTE_DJANGO_DB=os.path.join(tmp, "db.sqlite3"))
    server = subprocess.Popen(["taskset", "-c", "0", PONTE, "--no-access-log", "--log-level", "warning", "-b",
                               "127.0.0.1:%d" % port, "--app-dir", appdir, "--threads", str(threads),
                               "--gil-profile", prof, app], env=env)
    try:
        time.sleep(2)
        subprocess.run(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:%d%s" % (port, path)], check=True)
        wrk = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % (seconds + 2),
                                "http://127.0.0.1:%d%s" % (port, path)], stdout=subprocess.DEVNULL)
        time.sleep(1)
        spy = subprocess.run([pyspy, "record", "--gil", "--nonblocking", "--rate", "100", "--format", "raw",
                              "--duration", str(seconds), "-o", raw, "--pid", str(server.pid)],
                             capture_output=True, text=True)
        wrk.wait()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    if spy.returncode != 0 or not os.path.exists(raw):
        return "py-spy could not sample ponte (%s)" % (spy.stderr.strip().splitlines() or ["?"])[0]
    ours, n_ours = folded(prof)
    theirs, n_theirs = folded(raw)
    top = sorted(set(ours) | set(theirs), key=lambda k: -(ours.get(k, 0) / n_ours + theirs.get(k, 0) / n_theirs))
    said = re.search(r"Samples: \d+ Errors: \d+", spy.stdout + spy.stderr)
    lines = ["**%s** (ponte: %d samples over the whole run; py-spy: %d over %d s of it; py-spy said \"%s\")" % (
        name, n_ours, n_theirs, seconds, said.group(0) if said else "?"), "", "| function (innermost frame) | ponte self | py-spy --gil self |",
        "|---|---:|---:|"]
    for k in top[:8]:
        lines.append("| `%s` | %.1f%% | %.1f%% |" % (k, 100.0 * ours.get(k, 0) / n_ours,
                                                    100.0 * theirs.get(k, 0) / n_theirs))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=8)
    a = ap.parse_args()
    if not os.path.exists(PONTE):
        subprocess.run(["meson", "setup", os.path.join(REPO, "build-rel"), "--buildtype=release"], cwd=REPO,
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", os.path.join(REPO, "build-rel")], check=True, stdout=subprocess.DEVNULL)
    venv_bin = pypi_peers(print)
    if venv_bin is None or not os.path.exists(os.path.join(venv_bin, "py-spy")):
        print("skipped: py-spy is not installable here (PyPI unreachable?)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for w in WORKLOADS:
            print(run(w, a.seconds, os.path.join(venv_bin, "py-spy"), tmp))
            print()


if __name__ == "__main__":
    main()
