"""Shared helpers for ponte's black-box tests: start the real server on a free loopback port, talk raw HTTP/1.1
over sockets, stop the server by its PID. Standard library only (Debian's /usr/bin/python3)."""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")
REPO_APPS = os.path.abspath(os.path.join(HERE, "..", "..", "apps"))
PONTE = os.path.abspath(os.environ.get("PONTE", os.path.join(HERE, "..", "..", "build", "ponte")))
TIMEOUT = 10.0
# The CPython ponte was built for, from `ponte --version` ("ponte 0.1.0, CPython 3.11.2 (GIL, /usr/bin/python3), ..."):
# its minor version ("3.11", and (3, 11) to compare) and the interpreter it starts outside a venv.
# And the llhttp it parses with (8 on Debian 12, 9 later), whose verdicts differ on a few requests.
_VERSION = subprocess.run([PONTE, "--version"], capture_output=True, text=True, check=True).stdout
_CPYTHON = re.search(r"CPython (\d+)\.(\d+)\S* \([^,]*, ([^)]+)\)", _VERSION)
BUILT_FOR = "%s.%s" % _CPYTHON.group(1, 2)
BUILT_FOR_INFO = tuple(int(x) for x in _CPYTHON.group(1, 2))
BUILT_PYTHON = _CPYTHON.group(3)
BUILT_PREFIX = os.path.dirname(os.path.dirname(BUILT_PYTHON))  # its sys.prefix: /usr, or /opt/cpython-3.14.7t
FREE_THREADED = "(free-threaded," in _VERSION  # a 3.14t: no GIL (test_free_threaded.py)
# What the log's "GIL probe:" line starts with when all is well: exact, or (free-threaded) that there is no GIL.
PROBE_OK = "GIL probe: no GIL to probe (free-threaded CPython)" if FREE_THREADED else "GIL probe: exact"


def with_the_gil():
    """For the tests of the GIL view: on a free-threaded build their servers run with the GIL asked for
    (PYTHON_GIL=1), which makes the view the GIL's, as on a GIL build; test_free_threaded.py covers the view
    without one."""
    if FREE_THREADED:
        os.environ["PYTHON_GIL"] = "1"


# The C extensions the tests build with ponte (tests/meson.build), beside its executable.
TEST_EXTENSIONS = os.environ.get("PONTE_TEST_EXTENSIONS", os.path.join(os.path.dirname(PONTE), "tests"))
LLHTTP_INFO = tuple(int(x) for x in re.search(r"llhttp (\d+)\.(\d+)", _VERSION).groups())
SANITIZED = os.environ.get("PONTE_SANITIZED") == "1"


def free_port():
    """A loopback port nobody listens on right now (for addresses a test passes to ponte itself)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout=10):
    """Polls pred() until it is true or timeout seconds pass; returns whether it became true."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def rss_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def assert_rss_below(test, value, limit, what):
    """Memory bounds hold on the plain build; under ASan RSS measures the sanitizer, not ponte."""
    if not SANITIZED:
        test.assertLess(value, limit, what)


class Server:
    """A running ponte. Use as a context manager; the log is kept for assertions."""

    def __init__(self, app, *args, threads=None, app_dir=APPS, env=None, bind="127.0.0.1:0", allowed_warnings=(),
                 exe=(PONTE,)):
        self.allowed_warnings = allowed_warnings   # wsgiref.validate warnings that are the request's doing
        # exe: how ponte is started (another one than the build's: test_pip's installed ponte, `python -m ponte`)
        self.args = list(exe) + ["--app-dir", app_dir, "--bind", bind]
        if threads is not None:
            self.args += ["--threads", str(threads)]
        self.args += list(args) + [app]
        self.env = dict(os.environ)
        self.env.pop("VIRTUAL_ENV", None)  # ponte would serve from an active venv: tests say so when they mean it
        self.warnings_file = tempfile.NamedTemporaryFile(prefix="ponte-wsgi-warnings-", delete=False).name
        self.env["PONTE_TEST_WARNINGS"] = self.warnings_file
        self.env.update(env or {})
        self.proc = None
        self.port = None
        self.host = None
        self.err_path = None
        self.out_path = None

    def start(self):
        self.err = tempfile.NamedTemporaryFile(prefix="ponte-err-", delete=False)
        self.out = tempfile.NamedTemporaryFile(prefix="ponte-out-", delete=False)
        self.proc = subprocess.Popen(self.args, stdout=self.out, stderr=self.err, env=self.env, cwd=HERE)
        deadline = time.time() + 30
        while time.time() < deadline:
            log = self.stderr()
            m = re.search(r"listening on (?:https?://\[?([^\]\s]*?)\]?:(\d+)|unix:(\S+))", log)
            if m and "serving" in log:
                if m.group(3):
                    self.host, self.port = m.group(3), None
                else:
                    self.host, self.port = m.group(1), int(m.group(2))
                return self
            if self.proc.poll() is not None:
                # read again: what it wrote between the read above and its exit is the reason
                raise RuntimeError("ponte exited with %s:\n%s" % (self.proc.returncode, self.stderr()))
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("ponte did not start:\n" + self.stderr())

    def stderr(self):
        with open(self.err.name, "r", errors="replace") as f:
            return f.read()

    def stdout(self):
        with open(self.out.name, "r", errors="replace") as f:
            return f.read()

    def wsgi_warnings(self):
        with open(self.warnings_file) as f:
            return f.read()

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout=TIMEOUT):
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM and wait; returns the exit code. A stop slower than 10 s is said in the TAP output (a comment):
        no test here leaves a request in flight that long, so it is worth a look."""
        if self.proc.poll() is None:
            started = time.time()
            self.signal(signal.SIGTERM)
            try:
                code = self.proc.wait(TIMEOUT + 30)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
            if time.time() - started > 10:
                print("# slow stop: %.1f s after SIGTERM; the log's end:\n# %s" % (
                    time.time() - started, "\n# ".join(self.stderr()[-3000:].splitlines())), flush=True)
            return code
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        code = self.stop()
        log = self.stderr()
        warnings = self.wsgi_warnings()
        for path in (self.err.name, self.out.name, self.warnings_file):
            try:
                os.unlink(path)
            except OSError:
                pass
        if exc[0] is None:
            # Every test app runs under wsgiref.validate: any complaint is a failure, and so is a crash.
            assert code == 0, "ponte exited %s:\n%s" % (code, log)
            assert "AssertionError" not in log, "WSGI validator error:\n" + log
            assert "Sanitizer" not in log and "runtime error:" not in log, "sanitizer report:\n" + log
            unexpected = [w for w in warnings.splitlines() if w and not any(a in w for a in self.allowed_warnings)]
            assert not unexpected, "wsgiref.validate warnings:\n" + warnings

    def connect(self, timeout=TIMEOUT):
        if self.port is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.host)
            return s
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect((self.host, self.port))
        return s


class ServerCase:
    """Mixin for a unittest class that shares one ponte: set `app`, `args`, `threads`, `app_dir` on the class.
    $PONTE_TEST_EVENTS points at a fresh file the test apps append events to (read_events)."""

    app = "testapp:application"
    args = ()
    threads = 4
    app_dir = APPS
    allowed_warnings = ()

    @classmethod
    def extra_env(cls):
        return {}

    @classmethod
    def setUpClass(cls):
        cls.events = tempfile.NamedTemporaryFile(prefix="ponte-events-", delete=False).name
        env = {"PONTE_TEST_EVENTS": cls.events}
        env.update(cls.extra_env())
        cls.server = Server(cls.app, *cls.args, threads=cls.threads, app_dir=cls.app_dir, env=env,
                            allowed_warnings=cls.allowed_warnings).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.__exit__(None, None, None)
        finally:
            os.unlink(cls.events)

    def conn(self):
        c = Conn(self.server)
        self.addCleanup(c.close)
        return c

    def read_events(self):
        with open(self.events) as f:
            return f.read().split("\n")


class Response:
    def __init__(self, status, reason, version, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers          # list of (lower-case name, value)
        self.body = body
        self.raw_head = raw_head

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


class Conn:
    """A client connection that reads responses exactly as framed, so pipelining and keep-alive can be checked."""

    def __init__(self, server_or_sock):
        self.sock = server_or_sock.connect() if isinstance(server_or_sock, Server) else server_or_sock
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_close(self):
        while True:
            try:
                self._fill()
            except EOFError:
                break
        out, self.buf = self.buf, b""
        return out

    def read_response(self, head=False):
        raw = self.read_until(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        version, status, *reason = lines[0].decode("latin-1").split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        resp = Response(int(status), reason[0] if reason else "", version, headers, b"", raw)
        if int(status) < 200:
            return resp
        if head or int(status) in (204, 304):
            return resp
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if te is not None and "chunked" in te.lower():
            body = b""
            while True:
                size_line = self.read_until(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                body += self.read_exact(size)
                assert self.read_exact(2) == b"\r\n", "bad chunk terminator"
            resp.body = body
        elif cl is not None:
            resp.body = self.read_exact(int(cl))
        else:
            resp.body = self.read_to_close()
        return resp

    def request(self, method, path, headers=(), body=b"", version="HTTP/1.1"):
        self.send(build_request(method, path, headers, body, version))
        return self.read_response(head=(method == "HEAD"))

    def closed_by_peer(self, timeout=TIMEOUT):
        """True when the server closes the connection (EOF or reset) within timeout, with nothing else to read."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return data == b""

    def close(self):
        self.sock.close()


def get(port, path, method="GET", timeout=5):
    """One request on a connection of its own to 127.0.0.1:port (the GIL page's port, a server's)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c = Conn(s)
    try:
        return c.request(method, path)
    finally:
        c.close()


def workers_of(master_pid):
    out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def ready_count(server):
    return len(re.findall(r"worker \d+ \(pid \d+\) ready", server.stderr()))


class Master(Server):
    """ponte --processes N; started (by `with` or start()) once all N workers are ready."""

    def __init__(self, app, *args, processes=2, app_dir=APPS, **kw):
        super().__init__(app, "--processes", str(processes), *args, app_dir=app_dir, **kw)
        self.processes = processes

    def start(self):
        super().start()
        assert wait_for(lambda: ready_count(self) >= self.processes, 30), self.stderr()
        return self


def build_request(method, path, headers=(), body=b"", version="HTTP/1.1"):
    lines = ["%s %s %s" % (method, path, version)]
    names = {k.lower() for k, _ in headers}
    if "host" not in names and version == "HTTP/1.1":
        lines.append("Host: test")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class TapResult(unittest.TestResult):
    """Prints one TAP line per test as it finishes (class fixtures run as usual)."""

    def __init__(self):
        super().__init__()
        self.n = 0
        self.failed = 0
        self.started = {}

    def startTest(self, test):
        super().startTest(test)
        self.started[test.id()] = time.time()

    def _line(self, test, ok, extra=""):
        self.n += 1
        name = test.id().split(".", 1)[-1]
        took = time.time() - self.started.get(test.id(), time.time())
        print("%s %d - %s%s" % ("ok" if ok else "not ok", self.n, name, extra or " (%.2fs)" % took), flush=True)

    def _problem(self, test, err):
        self.failed += 1
        self._line(test, False)
        for line in self._exc_info_to_string(err, test).rstrip().splitlines():
            print("# " + line, flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._line(test, True)

    def addError(self, test, err):
        super().addError(test, err)
        self._problem(test, err)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._problem(test, err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line(test, True, " # SKIP " + reason)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._problem(subtest, err)


def run_tests():
    """unittest, reported as TAP so that meson (and .ci/run) count every test case."""
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules["__main__"])
    result = TapResult()
    suite.run(result)
    print("1..%d" % result.n, flush=True)
    sys.exit(1 if result.failed else 0)
