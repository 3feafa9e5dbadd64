"""Third-party request corpora (tests/corpus, MIT: see its README): gunicorn's valid/invalid requests and llhttp's request
fixtures, sent as raw bytes to ponte serving an echo app. Valid requests must reach the app exactly as parsed;
invalid ones must be answered with an error status (or a closed connection) and never reach it.

Where ponte deliberately differs from a parser's verdict, the server logs a reason that starts with "policy:" and
the test accepts exactly those (see POLICY below); every other difference fails."""

import glob
import json
import os
import re
import socket
import tempfile
import time
import types
import unittest
from urllib.parse import unquote_to_bytes, urlsplit

from harness import LLHTTP_INFO, Server, run_tests

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")
ERROR_STATUSES = {400, 413, 417, 431, 501, 505}
KNOWN_METHODS = {"DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK", "MKCOL",
                 "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT",
                 "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PATCH",
                 "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "QUERY"}

# Documented ponte policies (README "HTTP conformance"): what the log says when a parser-valid request is refused.
POLICY = (
    "policy: HTTP/1.1 request without Host",      # RFC 9112 3.2: a server MUST answer 400
    "policy: more than one Host header",           # RFC 9112 3.2
    "policy: more than one Content-Type",          # RFC 9110 8.3: a singleton field
    "policy: a transfer coding other than chunked",  # RFC 9112 6.1: 501 rather than pass a coded body on raw
    "policy: CONNECT is not served",               # tunnels are not WSGI
    "policy: Expect other than 100-continue",      # RFC 9110 10.1.1: 417
    "policy: Transfer-Encoding in an HTTP/1.0 request",  # RFC 9112 6.1: faulty framing
    "policy: only HTTP/1.x is served",             # HTTP/0.9 and 2.0 request lines: 505
    "policy: request-target '*' is only for OPTIONS",  # RFC 9112 3.2.4 (M-SEARCH * is SSDP, not HTTP)
)

# Where Debian 12's llhttp (8.1) and the llhttp that wrote these fixtures (9.x) disagree, what ponte does instead;
# with llhttp 9 (Debian 13 and later) the first no longer differs.
LLHTTP_DIFFERENCES = {

    # With llhttp 8 a raw UTF-8 request-target is accepted (as gunicorn does) and reaches PATH_INFO as latin-1
    # bytes; llhttp 9 refuses it (400), as the fixture expects (RFC 9112 3.2: the target is ASCII).
    **({"uri-06": "served"} if LLHTTP_INFO < (9, 0) else {}),
    # Any token is a method (RFC 9110 9.1): ponte passes methods llhttp 8.1 does not know (QUERY, ANNOUNCE) to
    # the app, which may answer 405 or 501.
    "method-15": "served",
    "invalid-03": "served",
    # HTTP-name is "HTTP", case-sensitive (RFC 9112 2.3): llhttp takes ICE/1.0 and RTSP/1.0 as well; ponte does not.
    "method-11": "rejected",
    "method-12": "rejected",
    "method-13": "rejected",
}

# gunicorn's valid cases with raw UTF-8 in the request-target.
RAW_UTF8_TARGET = {"027"}


def load_py(path):
    """Evaluates a gunicorn corpus .py with stand-ins for its gunicorn imports."""

    class Config:
        def __init__(self):
            self.settings = {}

        def set(self, name, value):
            self.settings[name] = value

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name.startswith("gunicorn"):
            mod = types.SimpleNamespace(Config=Config)
            for attr in fromlist or ():
                if attr != "Config":
                    setattr(mod, attr, type(attr, (Exception,), {}))
            return mod
        return __import__(name, globals, locals, fromlist, level)

    def uri(s):
        u = urlsplit(s)
        return {"path": u.path, "query": u.query, "raw": s}

    ns = {"__builtins__": dict(__builtins__.__dict__ if hasattr(__builtins__, "__dict__") else __builtins__,
                               __import__=fake_import), "uri": uri}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), ns)
    return ns


def header_key(name):
    n = name.upper().replace("-", "_")
    return n if n in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + n


def exchange(server, raw, timeout=5):
    """Sends raw bytes, half-closes, reads everything; returns (bytes received, local port)."""
    server.log_since = len(server.stderr())     # ports are reused: only what is logged from here is this one's
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    port = s.getsockname()[1]
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    s.close()
    return data, port


def statuses(data):
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) [A-Z]", data)]


def bodies(data):
    return [json.loads(m) for m in re.findall(rb"(\{\"method\".*?\})(?=HTTP/1|$)", data, re.S)]


class CorpusBase(unittest.TestCase):
    threads = 4
    app = "corpus_echo:application"

    @classmethod
    def setUpClass(cls):
        if not os.path.isfile(os.path.join(CORPUS, "llhttp-raw", "request", "index.json")):
            raise AssertionError("the request corpus is missing from %s: the suite needs it" % CORPUS)
        cls.events = tempfile.NamedTemporaryFile(prefix="ponte-events-", delete=False).name
        cls.server = Server(cls.app, "--header-timeout", "2", "--max-header-size", "65536",
                            threads=cls.threads, env={"PONTE_TEST_EVENTS": cls.events})
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        # The validator warns about request methods it does not know (PROPFIND, SEARCH...): that is the request's
        # doing, not ponte's, and the only warning the corpus run accepts.
        with open(cls.server.warnings_file) as f:
            others = [w for w in f.read().splitlines() if w and "Unknown REQUEST_METHOD" not in w]
        open(cls.server.warnings_file, "w").close()
        cls.server.__exit__(None, None, None)
        os.unlink(cls.events)
        assert others == [], others

    def app_saw(self):
        with open(self.events) as f:
            return f.read().count("\n")

    def policy_reason(self, port):
        """The policy the server logged for the connection from `port` in the last exchange, if any."""
        for line in self.server.stderr()[getattr(self.server, "log_since", 0):].splitlines():
            if ("127.0.0.1:%d " % port) in line:
                for p in POLICY:
                    if p in line:
                        return p
        return None

    def check_rejected(self, raw, name):
        before = self.app_saw()
        data, port = exchange(self.server, raw)
        got = statuses(data)
        self.assertEqual(self.app_saw(), before, "%s reached the app: %r" % (name, data[:300]))
        if got:
            self.assertIn(got[-1], ERROR_STATUSES, "%s: %r" % (name, data[:300]))


class Gunicorn(CorpusBase):
    def test_valid(self):
        n = 0
        for py in sorted(glob.glob(os.path.join(CORPUS, "gunicorn", "valid", "*.py"))):
            name = os.path.basename(py)[:-3]
            ns = load_py(py)
            raw_path = os.path.join(CORPUS, "gunicorn-raw", "valid", name + ".raw")
            with self.subTest(case=name):
                if "cfg" in ns and ns["cfg"].settings:
                    # These need non-default gunicorn settings (proxy protocol, relaxed header rules).
                    self.skipTest("needs gunicorn settings %s" % sorted(ns["cfg"].settings))
                with open(raw_path, "rb") as f:
                    raw = f.read()
                expected = ns["request"] if isinstance(ns["request"], list) else [ns["request"]]
                names = [k.lower() for e in expected for k, _ in e["headers"]]
                if "content-length" in names and "transfer-encoding" in names:
                    # Both framing headers: ponte answers 400 and closes (request smuggling defence, by design).
                    self.assertEqual(statuses(exchange(self.server, raw)[0]), [400])
                    continue
                if not all(re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", e["method"]) and e["method"].isupper()
                           and e["method"] in KNOWN_METHODS for e in expected):
                    # llhttp parses the registered methods only; anything else is answered 400.
                    self.assertEqual(statuses(exchange(self.server, raw)[0])[:1], [400])
                    continue
                cl = [int(v) for k, v in expected[-1]["headers"] if k.lower() == "content-length"]
                if len(expected) == 1 and cl and len(raw.split(b"\r\n\r\n", 1)[1]) < cl[0]:
                    self.skipTest("the raw bytes hold a shorter body than Content-Length announces")
                if name in RAW_UTF8_TARGET and LLHTTP_INFO >= (9, 0):
                    # llhttp 9 refuses raw UTF-8 in the request-target (docs/http-conformance.md)
                    self.assertEqual(statuses(exchange(self.server, raw)[0]), [400])
                    continue
                data, port = exchange(self.server, raw)
                policy = self.policy_reason(port)
                if policy:
                    self.assertIn(statuses(data)[-1], ERROR_STATUSES)
                    n += 1
                    continue
                got = bodies(data)
                self.assertEqual(len(got), len(expected), "%r" % data[:500])
                for exp, doc in zip(expected, got):
                    self.assertEqual(doc["method"], exp["method"])
                    path = unquote_to_bytes(exp["uri"]["path"].encode("latin-1")).decode("latin-1")
                    self.assertEqual(doc["path"], path if path != "*" else "")
                    self.assertEqual(doc["query"], exp["uri"]["query"])
                    self.assertEqual(doc["protocol"], "HTTP/%d.%d" % exp["version"])
                    want = {}
                    for k, v in exp["headers"]:
                        if "_" in k:
                            continue        # ponte drops header names with "_" (README: HTTP conformance)
                        key = header_key(k)
                        want[key] = want[key] + ", " + v if key in want else v
                    self.assertEqual(doc["headers"], want)
                    body = exp["body"].encode("latin-1") if isinstance(exp["body"], str) else exp["body"]
                    self.assertEqual(doc["body"].encode("latin-1"), body)
                n += 1
        self.assertGreater(n, 25)

    limits_server = None

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.limits_server is not None:
                cls.limits_server.__exit__(None, None, None)
        finally:
            super().tearDownClass()  # the main server stops even if the other one failed its checks

    def with_gunicorn_limits(self):
        """ponte configured like gunicorn's defaults (4094-byte request line, 8190-byte fields, 100 headers):
        ponte limits the whole head instead, so --max-header-size 4096 covers the same cases."""
        if type(self).limits_server is None:
            type(self).limits_server = Server(self.app, "--max-header-size", "4096",
                                            "--max-headers", "100", threads=self.threads,
                                            env={"PONTE_TEST_EVENTS": self.events}).start()
        return type(self).limits_server

    def test_invalid(self):
        n = 0
        for py in sorted(glob.glob(os.path.join(CORPUS, "gunicorn", "invalid", "*.py"))):
            name = os.path.basename(py)[:-3]
            ns = load_py(py)
            error = ns["request"].__name__
            with self.subTest(case=name, error=error):
                if "cfg" in ns and ns["cfg"].settings:
                    self.skipTest("needs gunicorn settings %s" % sorted(ns["cfg"].settings))
                with open(os.path.join(CORPUS, "gunicorn-raw", "invalid", name + ".raw"), "rb") as f:
                    raw = f.read()
                server = self.with_gunicorn_limits() if error.startswith("Limit") else self.server
                before = self.app_saw()
                data, port = exchange(server, raw)
                got = statuses(data)
                if "trailer" in name and bodies(data):
                    # ponte discards trailer fields (RFC 9110 6.5.1 allows it): a forbidden one never reaches the
                    # app, so the request itself is served.
                    self.assertEqual(bodies(data)[0]["body"], "hello")
                    self.assertNotIn("trailer", json.dumps(bodies(data)[0]["headers"]).lower())
                    continue
                self.assertEqual(self.app_saw(), before, "%s reached the app: %r" % (name, data[:300]))
                if error == "NoMoreData":
                    self.assertEqual(data, b"")     # an incomplete head: nothing to answer, the connection closes
                    continue
                self.assertTrue(got, "%s: no response: %r" % (name, data[:300]))
                self.assertIn(got[-1], ERROR_STATUSES, "%s: %r" % (name, data[:300]))
                if error.startswith("Limit"):
                    self.assertEqual(got[-1], 431)
                n += 1
        self.assertGreater(n, 40)


class LLHTTP(CorpusBase):
    def cases(self, expect):
        with open(os.path.join(CORPUS, "llhttp-raw", "request", "index.json")) as f:
            for case in json.load(f):
                if case["meta"].get("type") == "request" and case["expect"] == expect:
                    with open(os.path.join(CORPUS, "llhttp-raw", "request", case["name"] + ".raw"), "rb") as f2:
                        yield case, f2.read()

    def check_difference(self, case, data, reached):
        kind = LLHTTP_DIFFERENCES[case["name"]]
        got = statuses(data)
        if kind == "rejected":
            self.assertEqual(got[:1], [400])
            self.assertEqual(reached, 0)
        else:
            self.assertTrue(got and all(s == 200 for s in got), data[:300])
            self.assertEqual(reached, len(got))

    def test_ok(self):
        n = 0
        for case, raw in self.cases("ok"):
            with self.subTest(case=case["name"], title=case["title"]):
                before = self.app_saw()
                data, port = exchange(self.server, raw)
                got = statuses(data)
                policy = self.policy_reason(port)
                reached = self.app_saw() - before
                if case["name"] in LLHTTP_DIFFERENCES:
                    self.check_difference(case, data, reached)
                elif policy:
                    self.assertIn(got[-1], ERROR_STATUSES)
                    self.assertLessEqual(reached, case["messages"])
                elif case["messages"] == 0:
                    # The fixture ends mid-message (a body still to come); the client then half-closes, so the
                    # request is incomplete: it must not be answered as a success.
                    self.assertEqual(reached, 0)
                    self.assertNotIn(200, got)
                else:
                    self.assertEqual(reached, case["messages"], "%r" % data[:400])
                    self.assertEqual(got, [200] * case["messages"], "%r" % data[:400])
                n += 1
        self.assertGreater(n, 60)

    def test_error(self):
        n = 0
        for case, raw in self.cases("error"):
            with self.subTest(case=case["name"], title=case["title"], reason=case["reason"]):
                before = self.app_saw()
                data, port = exchange(self.server, raw)
                got = statuses(data)
                reached = self.app_saw() - before
                if case["name"] in LLHTTP_DIFFERENCES:
                    self.check_difference(case, data, reached)
                    continue
                # Messages before the broken one are served; the broken one never reaches the app.
                self.assertLessEqual(reached, case["messages"])
                self.assertTrue(got, "no response at all: %r" % data)
                self.assertIn(got[-1], ERROR_STATUSES, "%r" % data[:400])
                n += 1
        self.assertGreater(n, 45)

    def test_upgrade_and_closed(self):
        # WSGI has no protocol upgrade: an Upgrade request is served as plain HTTP; CONNECT is refused (501).
        for expect in ("upgrade", "closed"):
            for case, raw in self.cases(expect):
                with self.subTest(case=case["name"], title=case["title"]):
                    data, port = exchange(self.server, raw)
                    got = statuses(data)
                    self.assertTrue(got)
                    if raw.startswith(b"PRI * HTTP/"):
                        self.assertIn(got[0], (400, 505))   # HTTP/2 prior knowledge is not served
                        continue
                    self.assertTrue(all(s == 200 or (s == 501 and self.policy_reason(port)) or
                                        (s == 400 and self.policy_reason(port)) for s in got), "%r" % data[:400])


class LLHTTPLoopThread(LLHTTP):
    threads = 0


class GunicornASGI(Gunicorn):
    app = "corpus_echo_asgi:app"
    limits_server = None


class LLHTTPASGI(LLHTTP):
    app = "corpus_echo_asgi:app"


if __name__ == "__main__":
    run_tests()
