#!/usr/bin/python3
"""ponte's GIL sampler against a sampler from outside the process, on the same run: ponte serves a workload under
wrk with --gil-profile (100 Hz), and at the same time the outside sampler, at 100 Hz and counting only the GIL
holder's stack, samples the same process. Prints the top functions by self share (innermost frame) from each, side
by side, as markdown for docs/gil.md.

    bench/gil_samplers.py [--seconds 8]                  on 3.11: py-spy record --gil
    bench/gil_samplers.py --python 3.15 [--seconds 8] [--blocking]
                                                         on 3.15: python3.15 -m profiling.sampling attach --mode gil

py-spy comes from PyPI into bench/.venv (bench/peers.py, pinned); without PyPI, or where it may not attach (ptrace
refused), this says so and stops. It cannot find the GIL holder from 3.12 on (benfred/py-spy#692), which is why 3.15
is compared with CPython's own sampler instead; ponte for 3.15 is build-rel-3.15, run inside tests/pythons' Debian
sid root. Server on CPU 0, wrk on CPU 1. The samplers name a frame by the line it is on, ponte by the function's
first line, so functions are compared as "name (file)".
"""

import argparse
import os
import re
import signal
import subprocess
import tempfile
import time

from loopback import free_port
from peers import pypi_peers

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

PYTHONS = os.path.join(REPO, "tests", "pythons")
WORKLOADS = [
    # name, app dir, app, ponte's threads, wrk connections, path
    ("cpu_bound.py, 4 threads, wrk -c6", os.path.join(REPO, "apps"), "cpu_bound:app", 4, 6, "/?n=20000"),
    ("the Django demo's index page, 8 threads, wrk -c16", os.path.join(REPO, "apps"), "django_site.wsgi:application",
     8, 16, "/"),
]


def folded(path):
    """{"name (file)": self samples}, and the number of samples, from a collapsed-stack file (ponte's and py-spy's
    frames read "name (file:line)"; profiling.sampling's "file:name:line")."""
    self_counts, n = {}, 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n += int(count)
            frames = [f for f in stack.split(";") if f and not f.startswith("tid:")]
            leaf = frames[-1] if frames else ""
            m = re.match(r"^(.*):([^:()]+):\d+$", leaf)
            if m:
                leaf = "%s (%s)" % (m.group(2), m.group(1))
            leaf = re.sub(r":\d+\)$", ")", leaf)
            leaf = base_file(leaf) if leaf and leaf != "/" else "[no Python frame]"
            self_counts[leaf] = self_counts.get(leaf, 0) + int(count)
    return self_counts, n


def base_file(leaf):
    """'f (django/db/x.py)' -> 'f (x.py)': profiling.sampling names a file by its base name only."""
    return re.sub(r"\([^()]*/", "(", leaf)


# One timeline for both samplers: ponte starts; UP seconds later it gets one request and wrk starts; a second later
# the sampler attaches, for --seconds, while wrk runs two seconds longer.
UP = 3
# On 3.15 the server and the sampler run in one command inside the root (profiling.sampling finds the interpreter
# through the files the process maps, which another invocation of the root, another mount namespace, cannot open).
IN_ROOT = """
up=$1 url=$2 python=$3 seconds=$4 out=$5 flags=$6
shift 6
taskset -c 0 "$@" & server=$!
sleep $up
curl -s -o /dev/null "$url"
sleep 1
python$python -m profiling.sampling attach --mode gil --no-gc $flags -a -r 100 -d "$seconds" \\
  --collapsed -o "$out" $server
kill -TERM $server
wait $server
"""


def pyspy():
    venv_bin = pypi_peers(print)
    path = venv_bin and os.path.join(venv_bin, "py-spy")
    return path if path and os.path.exists(path) else None


def run(workload, seconds, python, exe, tmp, blocking=False):
    name, appdir, app, threads, conns, path = workload
    port, prof, raw = free_port(), os.path.join(tmp, "ponte.folded"), os.path.join(tmp, "outside.folded")
    for f in (prof, raw):
        if os.path.exists(f):
            os.unlink(f)
    env = dict(os.environ, PONTE_DJANGO_DB=os.path.join(tmp, "db.sqlite3"), PONTE_PYTHONS_TMP="1")
    url = "http://127.0.0.1:%d%s" % (port, path)
    argv = [exe, "--no-access-log", "--log-level", "warning", "-b", "127.0.0.1:%d" % port, "--app-dir", appdir,
            "--threads", str(threads), "--gil-profile", prof, app]
    wrk = ["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % (seconds + 2), url]
    if python == "3.11":
        spy_exe = pyspy()
        if spy_exe is None:
            return "skipped: py-spy is not installable here (PyPI unreachable?)"
        server = subprocess.Popen(["taskset", "-c", "0"] + argv, env=env, start_new_session=True)
        try:
            time.sleep(UP)
            subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=True)
            load = subprocess.Popen(wrk, stdout=subprocess.DEVNULL)
            time.sleep(1)
            spy = subprocess.run([spy_exe, "record", "--gil", "--nonblocking", "--rate", "100", "--format", "raw",
                                  "--duration", str(seconds), "-o", raw, "--pid", str(server.pid)],
                                 capture_output=True, text=True)
            load.wait()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    else:
        both = subprocess.Popen(["bash", PYTHONS, "run", "env", "PONTE_DJANGO_DB=" + env["PONTE_DJANGO_DB"], "bash",
                                 "-c", IN_ROOT, "sampler", str(UP), url, python, str(seconds), raw,
                                 "--blocking" if blocking else ""] + argv,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        time.sleep(UP)
        load = subprocess.Popen(wrk, stdout=subprocess.DEVNULL)
        out, err = both.communicate(timeout=seconds + 60)
        load.wait()
        spy = subprocess.CompletedProcess(both.args, both.returncode, out, err)
    who = "py-spy --gil" if python == "3.11" else "profiling.sampling --mode gil"
    if spy.returncode != 0 or not os.path.exists(raw):
        return "%s could not sample ponte (%s)" % (who, (spy.stderr.strip().splitlines() or ["?"])[-1])
    ours, n_ours = folded(prof)
    theirs, n_theirs = folded(raw)
    top = sorted(set(ours) | set(theirs), key=lambda k: -(ours.get(k, 0) / n_ours + theirs.get(k, 0) / n_theirs))
    said = re.search(r"Samples: \d+ Errors: \d+|Error rate: [\d.]+%?", spy.stdout + spy.stderr)
    lines = ["**%s** (ponte: %d samples over the whole run; %s: %d over %d s of it%s)" % (
        name, n_ours, who.split()[0], n_theirs, seconds, "; it said \"%s\"" % said.group(0) if said else ""),
        "", "| function (innermost frame) | ponte self | %s self |" % who, "|---|---:|---:|"]
    for k in top[:8]:
        lines.append("| `%s` | %.1f%% | %.1f%% |" % (k, 100.0 * ours.get(k, 0) / n_ours,
                                                    100.0 * theirs.get(k, 0) / n_theirs))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--python", default="3.11", choices=["3.11", "3.15"])
    ap.add_argument("--blocking", action="store_true", help="3.15: profiling.sampling stops the process for each "
                    "sample (--blocking): consistent stacks, at the price of a slower server")
    a = ap.parse_args()
    build = os.path.join(REPO, "build-rel" if a.python == "3.11" else "build-rel-" + a.python)
    inside = [] if a.python == "3.11" else ["bash", PYTHONS, "run"]
    if not os.path.exists(os.path.join(build, "build.ninja")):
        subprocess.run(inside + ["meson", "setup", build, "--buildtype=release",
                                 "-Dpython=/usr/bin/python" + ("3" if a.python == "3.11" else a.python)],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(inside + ["ninja", "-C", build], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        for w in WORKLOADS:
            print(run(w, a.seconds, a.python, os.path.join(build, "ponte"), tmp, a.blocking))
            print()


if __name__ == "__main__":
    main()
