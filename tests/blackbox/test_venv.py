"""Virtual environments (gateway/venv.c): ponte serves an app from a venv of the CPython it was built for, named by
--virtualenv or active in VIRTUAL_ENV, in both interpreter modes. The app imports the venv's packages, and
sys.prefix, sys.executable, subprocess and multiprocessing are the venv's, in --processes workers too and after a
reload. A venv of another CPython, a folder that is no venv, and an app whose own import lacks a package are each
refused with a message that says what and how to fix it."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import unittest

from harness import (BUILT_FOR, BUILT_PREFIX, BUILT_PYTHON, PONTE, SANITIZED, Conn, Master, Server, ready_count,
                     run_tests, wait_for, workers_of)

APP = '''
import json, multiprocessing.spawn, os, subprocess, sys
import venv_only  # in the venv's site-packages only


def app(environ, start_response):
    child = subprocess.run([sys.executable, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"prefix": sys.prefix, "base_prefix": sys.base_prefix, "executable": sys.executable,
                        "child_prefix": child.stdout.strip(), "mp": os.fsdecode(multiprocessing.spawn.get_executable()),
                        "mark": venv_only.MARK, "pid": os.getpid()}).encode()]
'''


class Venv(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ponte-venv-")
        cls.venv = os.path.join(cls.tmp, "venv")
        subprocess.run([BUILT_PYTHON, "-m", "venv", "--without-pip", cls.venv], check=True)
        site = subprocess.run([cls.venv + "/bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
        with open(os.path.join(site, "venv_only.py"), "w") as f:
            f.write("MARK = 'from the venv'\n")
        cls.app_dir = os.path.join(cls.tmp, "app")
        os.mkdir(cls.app_dir)
        with open(os.path.join(cls.app_dir, "venv_app.py"), "w") as f:
            f.write(APP)
        with open(os.path.join(cls.app_dir, "lacks_a_package.py"), "w") as f:
            f.write("import venv_only\nimport no_such_package_anywhere\napp = None\n")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check_served(self, s, conn=None):
        got = json.loads((conn or Conn(s)).request("GET", "/").body)
        self.assertEqual(got["prefix"], self.venv)
        self.assertNotEqual(got["base_prefix"], self.venv)
        self.assertEqual(got["executable"], self.venv + "/bin/python")
        self.assertEqual(got["child_prefix"], self.venv, "a subprocess of sys.executable is in the venv")
        self.assertEqual(got["mp"], self.venv + "/bin/python")
        self.assertEqual(got["mark"], "from the venv")
        return got

    def modes(self):
        return ("embedded",) if SANITIZED else ("host", "embedded")

    def test_virtualenv_option(self):
        for mode in self.modes():
            for flag in ("--virtualenv", "-H", "--venv"):
                with self.subTest(interpreter=mode, flag=flag), \
                        Server("venv_app:app", flag, self.venv, "--interpreter", mode, app_dir=self.app_dir) as s:
                    self.check_served(s)
                    self.assertIn(", venv %s" % self.venv, s.stderr())

    def test_active_venv(self):
        for mode in self.modes():
            with self.subTest(interpreter=mode), Server("venv_app:app", "--interpreter", mode, app_dir=self.app_dir,
                                                        env={"VIRTUAL_ENV": self.venv}) as s:
                self.check_served(s)

    def test_without_a_venv_the_package_is_missing_and_named(self):
        r = subprocess.run([PONTE, "--app-dir", self.app_dir, "-b", "127.0.0.1:0", "lacks_a_package:app"],
                           capture_output=True, text=True, timeout=30, env=self.env_without_venv())
        self.assertEqual(r.returncode, 1)
        self.assertIn("importing 'lacks_a_package' failed: it imports 'venv_only', which this Python (sys.prefix %s)"
                      " does not have" % BUILT_PREFIX, r.stderr)
        r = subprocess.run([PONTE, "--app-dir", self.app_dir, "-H", self.venv, "-b", "127.0.0.1:0",
                            "lacks_a_package:app"], capture_output=True, text=True, timeout=30)
        self.assertIn("it imports 'no_such_package_anywhere', which this Python (sys.prefix %s)" % self.venv,
                      r.stderr)
        self.assertIn("ModuleNotFoundError: No module named 'no_such_package_anywhere'", r.stderr)

    def test_a_venv_of_another_python_is_refused(self):
        other = os.path.join(self.tmp, "other")
        os.makedirs(other + "/bin", exist_ok=True)
        with open(other + "/pyvenv.cfg", "w") as f:
            f.write("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.9.7\n")
        if not os.path.exists(other + "/bin/python"):
            os.symlink(BUILT_PYTHON, other + "/bin/python")
        for how in (["-H", other], ["--interpreter", "embedded", "-H", other]):
            r = subprocess.run([PONTE, "--app-dir", self.app_dir, "-b", "127.0.0.1:0"] + how + ["venv_app:app"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1)
            self.assertIn("ponte: error: --virtualenv %s is a virtual environment of CPython 3.9.7, and this ponte is "
                          "built for CPython %s" % (other, BUILT_FOR), r.stderr)
            self.assertIn("-m venv %s" % other, r.stderr)
        r = subprocess.run([PONTE, "--app-dir", self.app_dir, "-b", "127.0.0.1:0", "venv_app:app"],
                           capture_output=True, text=True, timeout=30, env=dict(os.environ, VIRTUAL_ENV=other))
        self.assertIn("ponte: error: VIRTUAL_ENV %s is a virtual environment of CPython 3.9.7" % other, r.stderr)

    def test_a_folder_that_is_no_venv_is_refused(self):
        r = subprocess.run([PONTE, "--app-dir", self.app_dir, "-H", self.app_dir, "venv_app:app"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("ponte: error: --virtualenv %s: not a virtual environment" % self.app_dir, r.stderr)

    def test_processes_and_reload_keep_the_venv(self):
        with Master("venv_app:app", "-H", self.venv, "--no-access-log", app_dir=self.app_dir) as s:
            pids = {self.check_served(s)["pid"] for _ in range(12)}
            self.assertLessEqual(pids, set(workers_of(s.proc.pid)))
            s.signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: ready_count(s) >= 4, 30), s.stderr())
            self.assertTrue(wait_for(lambda: len(workers_of(s.proc.pid)) == 2, 15))
            for _ in range(4):
                self.assertIn(self.check_served(s)["pid"], workers_of(s.proc.pid))

    @staticmethod
    def env_without_venv():
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        return env


if __name__ == "__main__":
    run_tests()
