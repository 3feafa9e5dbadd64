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
STAMP = os.path.join(VENV, "ponte-pins.txt")


def pypi_peers(log):
    """Makes (once) or reuses bench/.venv with PINS; returns its bin/ folder, or None after logging why not."""
    want = "system-site-packages\n" + "\n".join(PINS) + "\n"
    try:
        with open(STAMP) as f:
            if f.read() == want:
                return os.path.join(VENV, "bin")
    except OSError:
        pass
    log("PyPI peers: making bench/.venv (%s) ..." % ", ".join(PINS))
    # Debian's packages stay visible (Django for the Django endpoint); the pinned ones, installed into the venv,
    # come first on its path.
    r = subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", "--system-site-packages", VENV],
                       capture_output=True, text=True)
    if r.returncode != 0:
        log("PyPI peers skipped: cannot make a virtual environment (apt-get install python3-venv): %s"
            % r.stderr.strip()[-200:])
        return None
    r = subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check",
                        "--timeout", "20"] + PINS, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        log("PyPI peers skipped: pip could not install them (is PyPI reachable?): %s" % r.stderr.strip()[-300:])
        return None
    with open(STAMP, "w") as f:
        f.write(want)
    return os.path.join(VENV, "bin")
