"""Start-up, the command line and shutdown: clear errors with a non-zero exit, graceful SIGTERM with a request in
flight, several addresses (IPv4, IPv6, unix), and the interpreter believing it is the python3 ponte was built for
(/usr/bin/python3 by default)."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import APPS, BUILT_PREFIX, BUILT_PYTHON, PONTE, PROBE_OK, REPO_APPS, Conn, Server, run_tests


def run_ponte(*args, timeout=30, app_dir=APPS):
    return subprocess.run([PONTE, "--app-dir", app_dir] + list(args), capture_output=True, text=True,
                          timeout=timeout)


class StartupErrors(unittest.TestCase):
    def expect_error(self, args, text):
        r = run_ponte(*args)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(text, r.stderr)
        self.assertIn("ponte: error:", r.stderr)
        return r

    def test_module_not_found(self):
        self.expect_error(["-b", "127.0.0.1:0", "no_such_module:app"], "cannot import 'no_such_module': module not found")

    def test_module_raises_with_traceback(self):
        r = self.expect_error(["-b", "127.0.0.1:0", "raises_on_import:app"], "it raised an exception")
        self.assertIn("Traceback", r.stderr)
        self.assertIn("ValueError: this module fails to import", r.stderr)

    def test_attribute_missing(self):
        self.expect_error(["-b", "127.0.0.1:0", "startup_cases:nope"], "has no attribute 'nope'")

    def test_default_callable_missing(self):
        self.expect_error(["-b", "127.0.0.1:0", "startup_cases"], "has no 'application' or 'app'")

    def test_not_callable(self):
        self.expect_error(["-b", "127.0.0.1:0", "startup_cases:not_callable"], "is not callable")

    def test_interface_detection(self):
        # A coroutine function is served as ASGI without being told; --interface overrides the guess.
        with Server("startup_cases:asgi_app") as s:
            self.assertIn("(asgi, asyncio on the loop thread)", s.stderr())
        with Server("startup_cases:sys_info", "--interface", "wsgi", "--threads", "2") as s:
            self.assertIn("(wsgi, 2 worker threads)", s.stderr())

    def test_bad_options(self):
        self.expect_error(["--threads", "-1", "hello:app"], "--threads -1")
        self.expect_error(["--threads", "many", "hello:app"], "whole number")
        self.expect_error(["--frobnicate", "hello:app"], "unknown option --frobnicate")
        self.expect_error(["--interface", "cgi", "hello:app"], "expected auto, wsgi, asgi or asgi2")
        self.expect_error(["--keep-alive-timeout", "0", "hello:app"], "positive number of seconds")
        self.expect_error([], "no APP given")
        self.expect_error(["--bind", "nonsense", "hello:app"], "--bind nonsense: expected HOST:PORT")
        self.expect_error(["--bind", "localhost:80", "hello:app"], "numeric address")

    def test_address_in_use(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        self.addCleanup(s.close)
        r = run_ponte("-b", "127.0.0.1:%d" % s.getsockname()[1], "hello:app", app_dir=REPO_APPS)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("address already in use", r.stderr)

    def test_help_and_version(self):
        r = run_ponte("--help")
        self.assertEqual(r.returncode, 0)
        for opt in ("--bind", "--interface", "--threads", "--app-dir", "--access-log", "--no-access-log",
                    "--log-level", "--max-header-size", "--max-body-size", "--keep-alive-timeout",
                    "--header-timeout", "--graceful-timeout", "--version", "(default"):
            self.assertIn(opt, r.stdout)
        r = run_ponte("--version")
        self.assertEqual(r.returncode, 0)
        # which CPython, how it was built, and the interpreter ponte starts outside a venv
        self.assertRegex(r.stdout, r"^ponte \d+\.\d+\.\d+, CPython 3\.\d+\.\d+\S* \((GIL|free-threaded)[^,]*, /\S+\), libuv \S+, llhttp \d")


class Interpreter(unittest.TestCase):
    """--interpreter: the plain build runs the app inside python3 (ponte loaded as an extension module,
    its GIL library preloaded), a sanitized build in the libpython linked into ponte; both look the same to the
    app."""

    SANITIZED = bool(os.environ.get("PONTE_SANITIZED"))
    PYTHON = os.path.realpath(BUILT_PYTHON)

    def info(self, *args, env=None):
        with Server("startup_cases:interpreter_info", *args, env=env) as s:
            got = json.loads(Conn(s).request("GET", "/").body)
            log = s.stderr()
            with open("/proc/%d/comm" % s.proc.pid) as f:
                self.assertEqual(f.read().strip(), "ponte", "ps, top and pgrep see ponte, not python3")
            with open("/proc/%d/cmdline" % s.proc.pid, "rb") as f:
                shown = [a.decode() for a in f.read().rstrip(b"\0").split(b"\0")]
            self.assertEqual(shown, s.args, "ps shows the command line ponte was started with, not python3's")
        self.assertEqual(got["executable"], BUILT_PYTHON)
        self.assertEqual(got["argv"], ["ponte"])
        self.assertEqual(got["leftovers"], [])
        self.assertEqual(got["path0"], os.path.realpath(APPS), "--app-dir first, no script directory before it")
        self.assertIn(PROBE_OK, log)
        return got

    def test_default(self):
        got = self.info()
        self.assertEqual(got["exe"], os.path.realpath(PONTE) if self.SANITIZED else self.PYTHON)
        self.assertEqual(got["ld_preload"], "unset")
        self.assertEqual(got["child_ld_preload"], "unset", "ponte's GIL library is not preloaded into subprocesses")

    def test_embedded(self):
        got = self.info("--interpreter", "embedded")
        self.assertEqual(got["exe"], os.path.realpath(PONTE))
        self.assertEqual(got["child_ld_preload"], "unset")

    def test_users_ld_preload_is_kept(self):
        lib = next(p for p in ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1")
                   if os.path.exists(p))
        env = {"LD_PRELOAD": lib}
        if self.SANITIZED:  # ASan wants its runtime first; libz before it is harmless
            env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
        for mode in ("auto", "embedded"):
            with self.subTest(interpreter=mode):
                got = self.info("--interpreter", mode, env=env)
                self.assertEqual(got["ld_preload"], lib)
                self.assertEqual(got["child_ld_preload"], lib)

    def test_host(self):
        if self.SANITIZED:
            r = run_ponte("--interpreter", "host", "-b", "127.0.0.1:0", "hello:app", app_dir=REPO_APPS)
            self.assertEqual(r.returncode, 1)
            self.assertIn("ponte: error: --interpreter host: no _ponte_host", r.stderr)
            return
        self.assertEqual(self.info("--interpreter", "host")["exe"], self.PYTHON)

    def test_bad_value(self):
        r = run_ponte("--interpreter", "pypy", "hello:app")
        self.assertEqual(r.returncode, 2)
        self.assertIn("expected auto, host or embedded", r.stderr)


class Running(unittest.TestCase):
    def test_file_path_app_and_dotted_attribute(self):
        path = os.path.join(APPS, "startup_cases.py")
        with Server(path + ":Nested.Inner.app") as s:
            self.assertEqual(Conn(s).request("GET", "/").body, b"nested")

    def test_sys_executable_is_debian_python(self):
        with Server("startup_cases:sys_info") as s:
            info = json.loads(Conn(s).request("GET", "/").body)
        self.assertEqual(info["executable"], BUILT_PYTHON)
        self.assertEqual(info["prefix"], BUILT_PREFIX)

    def test_extension_modules_work(self):
        for mode in ("auto", "embedded"):
            with self.subTest(interpreter=mode), Server("startup_cases:extension_modules", "--interpreter", mode) as s:
                got = json.loads(Conn(s).request("GET", "/").body)
            self.assertEqual(got, {"decimal": "3.30", "sqlite3": 42, "ssl": True, "json": True, "ctypes": 1,
                                   "asyncio": "_asyncio"})

    def test_ipv6_unix_and_ipv4_together(self):
        sock = tempfile.mktemp(prefix="ponte-", suffix=".sock")
        with Server("hello:app", "--bind", "[::1]:0", "--bind", "unix:" + sock, app_dir=REPO_APPS) as s:
            log = s.stderr()
            import re
            v4 = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", log).group(1))
            v6 = int(re.search(r"listening on http://\[::1\]:(\d+)", log).group(1))
            self.assertIn("listening on unix:" + sock, log)
            for fam, addr in ((socket.AF_INET, ("127.0.0.1", v4)), (socket.AF_INET6, ("::1", v6)),
                              (socket.AF_UNIX, sock)):
                c = socket.socket(fam, socket.SOCK_STREAM)
                c.settimeout(5)
                c.connect(addr)
                r = Conn(c).request("GET", "/")
                self.assertEqual(r.body, b"Hello, world!")
                c.close()
        self.assertFalse(os.path.exists(sock), "the unix socket file is removed on exit")

    def test_graceful_shutdown_finishes_request_in_flight(self):
        for threads in (4, 0):
            with self.subTest(threads=threads):
                s = Server("testapp:application", "--graceful-timeout", "10", threads=threads,
                           env={"PONTE_TEST_EVENTS": os.devnull}).start()
                idle = Conn(s)
                self.assertEqual(idle.request("GET", "/echo").status, 200)
                busy = Conn(s)
                busy.send(b"GET /slow?delay=1 HTTP/1.1\r\nHost: t\r\n\r\n")
                time.sleep(0.3)
                s.signal(signal.SIGTERM)
                r = busy.read_response()
                self.assertEqual(r.body, b"slept 1")
                if threads:
                    # The head was built after SIGTERM: it says so. (--threads 0 built it before the loop saw it.)
                    self.assertEqual(r.header("connection"), "close")
                self.assertTrue(busy.closed_by_peer(timeout=5))
                self.assertTrue(idle.closed_by_peer(timeout=5))
                self.assertEqual(s.wait(15), 0)
                # No new connections once stopping.
                with self.assertRaises(OSError):
                    socket.create_connection(("127.0.0.1", s.port), timeout=1)
                s.__exit__(None, None, None)

    def test_graceful_timeout_forces_exit(self):
        s = Server("testapp:application", "--graceful-timeout", "1", threads=2,
                   env={"PONTE_TEST_EVENTS": os.devnull}).start()
        busy = Conn(s)
        busy.send(b"GET /slow?delay=30 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)
        started = time.time()
        s.signal(signal.SIGTERM)
        self.assertEqual(s.wait(10), 0)
        self.assertLess(time.time() - started, 5)
        self.assertIn("--graceful-timeout", s.stderr())
        s.__exit__(None, None, None)

    def test_sigint_stops_too(self):
        s = Server("hello:app", app_dir=REPO_APPS).start()
        s.signal(signal.SIGINT)
        self.assertEqual(s.wait(10), 0)
        s.__exit__(None, None, None)

    def test_no_access_log(self):
        with Server("hello:app", "--no-access-log", app_dir=REPO_APPS) as s:
            Conn(s).request("GET", "/")
            time.sleep(1.2)
            self.assertEqual(s.stdout(), "")

    def test_many_concurrent_clients(self):
        with Server("testapp:application", threads=8, env={"PONTE_TEST_EVENTS": os.devnull}) as s:
            errors = []

            def client(i):
                try:
                    c = Conn(s)
                    for j in range(20):
                        r = c.request("POST", "/echo?c=%d&j=%d" % (i, j), body=b"x" * (i * 100 + j))
                        doc = json.loads(r.body)
                        assert doc["environ"]["QUERY_STRING"] == "c=%d&j=%d" % (i, j)
                        assert len(doc["body"]) == i * 100 + j
                    c.close()
                except Exception as e:  # noqa: BLE001 - collected and reported below
                    errors.append(repr(e))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(errors, [])


if __name__ == "__main__":
    run_tests()
