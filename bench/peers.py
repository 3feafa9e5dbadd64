"""Current peers from PyPI, for the benchmarks only: a virtual environment bench/ makes for itself on Debian's
/usr/bin/python3 (python3-venv), with pinned versions. Never the system Python; without PyPI the benchmarks run
without these peers and say so.

    from peers import pypi_peers
    venv_bin = pypi_peers(log)      # the venv's bin/ folder, or None (with the reason logged)
"""

import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
# Pinned: a new release is a deliberate change here, measured like any other.
PINS = ["granian==2.8.9", "uvicorn==0.54.0", "uvloop==0.23.0", "httptools==0.9.0", "websockets==17.4",
        "gunicorn==27.0.1", "py-spy==0.4.3"]


def pypi_peers(log, python="/usr/bin/python3", venv=VENV, run=lambda argv: argv, pins=PINS):
    """Makes (once) or reuses a venv of `python` (bench/.venv; bench/.venv-3.X for bench/run --python, where `run`
    puts a command inside the root of tests/pythons) with `pins` (default PINS); returns its bin/ folder, or None
    after logging why not."""
    stamp = os.path.join(venv, "ponte-pins.txt")
    want = "system-site-packages, ignore-installed\n" + "\n".join(pins) + "\n"
    try:
        with open(stamp) as f:
            if f.read() == want:
                return os.path.join(venv, "bin")
    except OSError:
        pass
    log("PyPI peers: making %s on %s (%s) ..." % (os.path.relpath(venv), python, ", ".join(pins)))
    # Debian's packages stay visible (Django for the Django endpoint); the pinned ones, installed into the venv,
    # come first on its path. --ignore-installed: a Debian package of the same version (sid's python3-uvloop) would
    # otherwise count as installed, and its extension is built for the root's default CPython only (uvicorn then
    # failed on 3.13 and 3.15: "No module named 'uvloop.loop'").
    r = subprocess.run(run([python, "-m", "venv", "--clear", "--system-site-packages", venv]),
                       capture_output=True, text=True)
    if r.returncode != 0:
        log("PyPI peers skipped: cannot make a virtual environment (apt-get install python3-venv): %s"
            % r.stderr.strip()[-200:])
        return None
    r = subprocess.run(run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check",
                            "--ignore-installed", "--timeout", "20"] + pins), capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        log("PyPI peers skipped: pip could not install them on %s (is PyPI reachable, and are there wheels for "
            "it?): %s" % (python, r.stderr.strip()[-300:]))
        return None
    with open(stamp, "w") as f:
        f.write(want)
    return os.path.join(venv, "bin")
