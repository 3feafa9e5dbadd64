"""`pip install` (pyproject.toml, meson-python), as a user of the CPython ponte is built for does it: in a fresh venv
pip builds ponte from this clone, and (on Debian's 3.11) in another from the sdist `python -m build --sdist` makes of
it; the `ponte` pip put on the venv's PATH then serves, from that venv, a Flask app and a FastAPI app with a
WebSocket route, both pip-installed at pinned versions, with the exact GIL probe, and so does `python -m ponte`.

This test needs PyPI (meson-python, meson, Flask, FastAPI, build): without it, it fails and says so."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import BUILT_FOR, BUILT_PYTHON, PROBE_OK, Conn, Server, run_tests
from wsclient import WS

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PINS = ["flask==3.1.3", "fastapi==0.165.0"]
BUILD_PIN = "build==1.6.1"

FLASK_APP = '''
import sys
from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return {"framework": "flask", "prefix": sys.prefix}
'''

FASTAPI_APP = '''
import sys
from fastapi import FastAPI, WebSocket

app = FastAPI()


@app.get("/")
async def index():
    return {"framework": "fastapi", "prefix": sys.prefix}


@app.websocket("/ws")
async def echo(ws: WebSocket):
    await ws.accept()
    while True:
        text = await ws.receive_text()
        if text == "bye":
            await ws.close(code=4000)
            return
        await ws.send_text("echo: " + text)
'''


def pip(venv, *args, timeout=900):
    r = subprocess.run([venv + "/bin/python", "-m", "pip", "--disable-pip-version-check", "--no-input"] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("pip %s failed (PyPI is needed: README.md, 'Installing with pip'):\n%s%s"
                             % (" ".join(args), r.stdout[-3000:], r.stderr[-3000:]))
    return r


class PipInstall(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ponte-pip-")
        cls.venv = os.path.join(cls.tmp, "venv")
        subprocess.run([BUILT_PYTHON, "-m", "venv", cls.venv], check=True, timeout=300)
        pip(cls.venv, "install", "--quiet", REPO)
        pip(cls.venv, "install", "--quiet", *PINS)
        cls.app_dir = os.path.join(cls.tmp, "apps")
        os.mkdir(cls.app_dir)
        for name, src in (("flask_app.py", FLASK_APP), ("fastapi_app.py", FASTAPI_APP)):
            with open(os.path.join(cls.app_dir, name), "w") as f:
                f.write(src)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check_log(self, s):
        log = s.stderr()
        self.assertIn("Python: CPython %s." % BUILT_FOR, log)
        self.assertIn(", venv %s" % self.venv, log)
        self.assertIn(PROBE_OK, log)

    def test_the_installed_ponte_is_on_the_venvs_path(self):
        r = subprocess.run([self.venv + "/bin/ponte", "--version"], capture_output=True, text=True, check=True)
        self.assertIn("CPython %s." % BUILT_FOR, r.stdout)
        # the interpreter ponte starts outside a venv is the one the venv was made from, not pip's build environment
        started = re.search(r"CPython \S+ \((?:GIL|free-threaded)[^,]*, ([^)]+)\)", r.stdout)
        self.assertIsNotNone(started, r.stdout)
        self.assertIn(os.path.realpath(BUILT_PYTHON), os.path.realpath(started.group(1)))

    def test_flask_from_the_venv(self):
        with Server("flask_app:app", "--no-access-log", app_dir=self.app_dir, exe=[self.venv + "/bin/ponte"]) as s:
            r = Conn(s).request("GET", "/")
            self.assertEqual(json.loads(r.body), {"framework": "flask", "prefix": self.venv})
            self.check_log(s)

    def test_fastapi_with_a_websocket_route(self):
        with Server("fastapi_app:app", "--no-access-log", app_dir=self.app_dir,
                    exe=[self.venv + "/bin/ponte"]) as s:
            self.assertEqual(json.loads(Conn(s).request("GET", "/").body), {"framework": "fastapi",
                                                                            "prefix": self.venv})
            ws = WS(s, "/ws")
            self.assertEqual(ws.status, 101)
            ws.text("hi")
            m = ws.recv_message()
            self.assertEqual((m.opcode, m.payload), (1, b"echo: hi"))
            ws.text("bye")
            self.assertEqual(ws.expect_close().code, 4000)
            self.check_log(s)

    def test_its_own_venv_wins_over_an_active_one(self):
        # as gunicorn installed in a venv runs that venv's python whichever venv is active (gateway/venv.c)
        with Server("flask_app:app", "--no-access-log", app_dir=self.app_dir, exe=[self.venv + "/bin/ponte"],
                    env={"VIRTUAL_ENV": self.tmp}) as s:
            self.assertEqual(json.loads(Conn(s).request("GET", "/").body)["prefix"], self.venv)

    def test_python_dash_m_ponte(self):
        with Server("flask_app:app", "--no-access-log", app_dir=self.app_dir,
                    exe=[self.venv + "/bin/python", "-m", "ponte"]) as s:
            self.assertEqual(json.loads(Conn(s).request("GET", "/").body)["prefix"], self.venv)
            self.check_log(s)

    @unittest.skipUnless(BUILT_FOR == "3.11", "the sdist is the same for every CPython: made, installed and served "
                         "once, on Debian's 3.11 (tests/run's first lane); here pip builds from the clone only")
    def test_from_the_sdist(self):
        dist = os.path.join(self.tmp, "dist")
        pip(self.venv, "install", "--quiet", BUILD_PIN)
        r = subprocess.run([self.venv + "/bin/python", "-m", "build", "--sdist", "--outdir", dist, REPO],
                           capture_output=True, text=True, timeout=900)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        (sdist,) = os.listdir(dist)
        self.assertRegex(sdist, r"^ponte-\d+\.\d+\.\d+\.tar\.gz$")
        other = os.path.join(self.tmp, "from-sdist")
        subprocess.run([BUILT_PYTHON, "-m", "venv", other], check=True, timeout=300)
        pip(other, "install", "--quiet", os.path.join(dist, sdist), "flask==3.1.3")
        with Server("flask_app:app", "--no-access-log", app_dir=self.app_dir, exe=[other + "/bin/ponte"]) as s:
            self.assertEqual(json.loads(Conn(s).request("GET", "/").body)["prefix"], other)


if __name__ == "__main__":
    run_tests()
