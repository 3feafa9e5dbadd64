"""HTTP/2 (--http, server/h2.c and h2_stream.c): h2c by prior knowledge and h2 over TLS's ALPN, with Debian's
python3-h2 (h2client.py), curl and nghttp as clients: what apps see and how
responses come out (WSGI on worker threads and on the loop, ASGI): the protocol, :authority as Host, cookies joined,
bodies both ways under flow control, streams at once on one connection, HEAD, 100-continue, a body short of its
Content-Length; the README's demo; --http 1 and 2; a preface in pieces; GOAWAY on SIGTERM. Its servers run ponte's
threads on shared state (a stream's request between the loop and a worker), so it is in the 'threads' suite
(ThreadSanitizer on 3.14t). RFC 9113's errors, the bounds and the attacks are test_h2_limits.py's; httpx against Django and FastAPI
test_h2_frameworks.py's."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from h2client import (DATA, GOAWAY, H2, HEADERS, INTERNAL_ERROR, NO_ERROR, PREFACE, Raw, goaway_code,
                      settings_frame)
from harness import APPS, REPO_APPS, Server, run_tests, wait_for

sys.path.insert(0, APPS)
from h2_app import big  # noqa: E402 - the app's own bytes, to compare with

DIR = tempfile.mkdtemp(prefix="ponte-h2-")
CERT, KEY = os.path.join(DIR, "cert.pem"), os.path.join(DIR, "key.pem")


def make_certificate():
    """A self-signed certificate for localhost and 127.0.0.1, at CERT and KEY."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", KEY, "-out", CERT, "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)


def setUpModule():
    make_certificate()


class H2Case:
    """A ponte serving h2_app for the class; h2() and raw() connect to it."""

    app = "h2_app:application"
    args = ()
    threads = 4

    bind = "127.0.0.1:0"

    @classmethod
    def setUpClass(cls):
        cls.server = Server(cls.app, "--no-access-log", *cls.args, threads=cls.threads, app_dir=APPS,
                            bind=cls.bind).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)

    def h2(self, **kw):
        c = H2(self.server.connect(), **kw)
        self.addCleanup(c.close)
        return c

    def raw(self, preface=True):
        r = Raw(self.server.connect(), preface=preface)
        self.addCleanup(r.sock.close)
        return r

    def assert_serving(self):
        """The server still answers, on a new connection."""
        self.assertEqual(self.h2().get("/").status, 200)


class AppsSee:
    def test_protocol_authority_and_cookies(self):
        # RFC 9113 8.3.1: :authority stands for Host; 8.2.3: cookie fields are joined with "; ".
        r = self.h2().get("/p?q=1", headers=[("cookie", "a=1"), ("x-one", "1"), ("cookie", "b=2")])
        self.assertEqual(r.status, 200)
        doc = json.loads(r.body)
        self.assertEqual(doc["protocol"], "HTTP/2")
        self.assertEqual((doc["scheme"], doc["host"], doc["path"], doc["query"]), ("http", "localhost", "/p", "q=1"))
        self.assertEqual(doc["cookie"], "a=1; b=2")
        self.assertIn(["x-one", "1"], doc["headers"])
        self.assertEqual(r.headers["server"], "ponte")
        self.assertNotIn("connection", r.headers)  # 8.2.2: no connection-specific field

    def test_bodies_both_ways_under_flow_control(self):
        c = self.h2()
        body = os.urandom(1 << 20)  # sixteen of the server's 64 KiB windows
        r = c.response(c.request("/upload", method="POST", body=body))
        self.assertEqual(r.body.decode(), "%d %s" % (len(body), hashlib.sha256(body).hexdigest()))
        r = c.get("/big?4000000")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, big(4000000))

    def test_streams_at_once_on_one_connection(self):
        c = self.h2()
        sids = [c.request("/slow?0.5") for _ in range(6)]
        most = max(int(c.response(s, timeout=20).body) for s in sids)
        self.assertGreater(most, 1, "the streams were served one after another")
        # and a quick stream is not held behind slow ones
        slow = c.request("/slow?2")
        quick = c.request("/")
        c.wait(lambda: c.streams[quick].ended)
        self.assertFalse(c.streams[slow].ended)
        c.response(slow)

    def test_head_and_a_short_body(self):
        c = self.h2()
        r = c.get("/", method="HEAD")
        self.assertEqual((r.status, r.body), (200, b""))
        self.assertGreater(int(r.headers["content-length"]), 0)
        # 8.1.1: a response whose body ends short of its content-length is malformed: the stream is reset
        r = c.get("/short")
        self.assertEqual(r.reset, INTERNAL_ERROR)
        self.assertEqual(c.get("/").status, 200)

    def test_expect_100_continue(self):
        c = self.h2()
        sid = c.request("/continue", method="POST", headers=[("expect", "100-continue")], end=False)
        c.wait(lambda: c.streams[sid].informational)
        self.assertEqual(c.streams[sid].informational, [100])
        c.send_body(sid, b"x" * 1000)
        self.assertTrue(c.response(sid).body.startswith(b"1000 "))


class WSGIWorkers(H2Case, AppsSee, unittest.TestCase):
    pass


class WSGIOnTheLoop(H2Case, AppsSee, unittest.TestCase):
    threads = 0

    def test_streams_at_once_on_one_connection(self):
        pass  # one thread runs the app: nothing runs at once


class ASGI(H2Case, AppsSee, unittest.TestCase):
    app = "h2_app:app"
    threads = None


class Clients(H2Case, unittest.TestCase):
    """curl and nghttp, over h2c and over TLS (ALPN)."""

    app = "h2_app:app"
    threads = None
    args = ("--bind", "https://127.0.0.1:0", "--ssl-certfile", CERT, "--ssl-keyfile", KEY, "--access-log")
    bind = "http://127.0.0.1:0"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ports = re.findall(r"listening on (https?)://127\.0\.0\.1:(\d+)", cls.server.stderr())
        cls.urls = {scheme: "%s://127.0.0.1:%s" % (scheme, port) for scheme, port in ports}

    def test_curl_h2c_and_h2(self):
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-w", "%{http_version}", self.urls["http"] +
                              "/"], capture_output=True, text=True, timeout=30).stdout
        self.assertTrue(out.endswith("}2"), out)
        self.assertIn('"protocol": "HTTP/2"', out)
        out = subprocess.run(["curl", "-s", "-k", "--http2", "-w", "%{http_version}", self.urls["https"] + "/"],
                             capture_output=True, text=True, timeout=30).stdout
        self.assertIn('"scheme": "https"', out)
        self.assertTrue(out.endswith("}2"), out)
        # a client that asks for HTTP/1.1 over TLS still gets it
        out = subprocess.run(["curl", "-s", "-k", "--http1.1", "-w", "%{http_version}", self.urls["https"] + "/"],
                             capture_output=True, text=True, timeout=30).stdout
        self.assertTrue(out.endswith("1.1"), out)
        wait_for(lambda: '"GET / HTTP/2" 200' in self.server.stdout(), 5)

    def test_nghttp_many_streams(self):
        out = subprocess.run(["nghttp", "-ns", "-m", "50", self.urls["https"] + "/big?100000"], capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.count("/big?100000"), 50, out.stdout)
        out = subprocess.run(["nghttp", "-v", "-d", "/dev/null", self.urls["http"] + "/upload"], input=b"",
                             capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)


class Demo(unittest.TestCase):
    def test_curl_and_nghttp_against_the_demo(self):
        # The README's demo (apps/demo.py, as apps/run serves it), over https and h2c: its page, Django mounted
        # under /django, and the I/O-bound and CPU-bound routes, several streams at once.
        db = tempfile.NamedTemporaryFile(prefix="ponte-django-", suffix=".sqlite3", delete=False).name
        self.addCleanup(os.unlink, db)
        with Server("demo:application", "--bind", "https://127.0.0.1:0", "--ssl-certfile", CERT, "--ssl-keyfile",
                    KEY, bind="http://127.0.0.1:0", app_dir=REPO_APPS, env={"PONTE_DJANGO_DB": db}).start() as s:
            ports = dict(re.findall(r"listening on (https?)://127\.0\.0\.1:(\d+)", s.stderr()))
            https, http = "https://localhost:%s" % ports["https"], "http://127.0.0.1:%s" % ports["http"]
            out = subprocess.run(["curl", "-s", "--cacert", CERT, "--resolve", "localhost:%s:127.0.0.1" % ports["https"],
                                  "-w", "%{http_version} %{http_code}", https + "/", https + "/django/"],
                                 capture_output=True, text=True, timeout=30).stdout
            self.assertIn("<h1>Notes</h1>", out)
            self.assertEqual(re.findall(r"(\d) (\d{3})", out)[-2:], [("2", "200"), ("2", "200")])
            out = subprocess.run(["nghttp", "-ns", http + "/io?delay=0.05", http + "/cpu?n=1000", http + "/"],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(len(re.findall(r" 200 ", out.stdout)), 3, out.stdout)


class Shutdown(unittest.TestCase):
    def test_goaway_on_sigterm(self):
        # 6.8: GOAWAY with the last stream taken; that stream is answered; then the server exits.
        s = Server("h2_app:app", "--no-access-log", app_dir=APPS).start()
        self.addCleanup(s.__exit__, None, None, None)
        r = Raw(s.connect())
        self.addCleanup(r.sock.close)
        r.headers(1, r.request_fields("/slow?1"))
        time.sleep(0.3)
        s.signal(signal.SIGTERM)
        self.assertEqual(goaway_code(r.until(GOAWAY)), (NO_ERROR, 1))
        self.assertEqual(r.decode(r.until(HEADERS)[3])[":status"], "200")
        self.assertEqual(r.until(DATA)[3], b"1")
        self.assertIsNone(r.next_frame())
        self.assertEqual(s.wait(), 0)


class Modes(unittest.TestCase):
    def test_http_1_and_http_2(self):
        # --http 1: the preface is just a request HTTP/1.1 does not serve; --http 2: HTTP/1.1 is refused.
        with Server("h2_app:app", "--http", "1", app_dir=APPS).start() as s:
            sock = s.connect()
            sock.sendall(PREFACE)
            self.assertRegex(sock.recv(100), rb"^HTTP/1.1 (400|505) ")
        with Server("h2_app:app", "--http", "2", app_dir=APPS).start() as s:
            sock = s.connect()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(sock.recv(100).startswith(b"HTTP/1.1 505"))
            c = H2(s.connect())
            self.assertEqual(c.get("/").status, 200)
            c.close()

    def test_preface_in_pieces(self):
        with Server("h2_app:application", app_dir=APPS).start() as s:
            sock = s.connect()
            for i in range(0, len(PREFACE), 5):
                sock.sendall(PREFACE[i:i + 5])
                time.sleep(0.05)
            r = Raw(sock, preface=False)
            r.send(settings_frame())
            r.headers(1, r.request_fields())
            self.assertEqual(r.decode(r.until(HEADERS)[3])[":status"], "200")


if __name__ == "__main__":
    run_tests()
