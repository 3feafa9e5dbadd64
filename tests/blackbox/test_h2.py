"""HTTP/2 (--http, server/h2.c and h2_stream.c): h2c by prior knowledge and h2 over TLS's ALPN, with Debian's
python3-h2 (h2client.py), curl, nghttp and httpx (against Django and FastAPI) as clients.

First what apps see and how responses come out (WSGI on worker threads, ASGI): the protocol, :authority as Host,
cookies joined, bodies both ways under flow control, streams at once on one connection, HEAD, 100-continue, a body
short of its Content-Length. Then RFC 9113's errors, each case citing its section: frames in, the GOAWAY or
RST_STREAM code out. Then the bounds and the attacks: header lists and HPACK bombs, body sizes,
--limit-concurrency, SETTINGS_MAX_CONCURRENT_STREAMS, rapid reset (CVE-2023-44487), CONTINUATION floods
(CVE-2024-27316's class), PING and SETTINGS floods from a client that does not read, a window never opened, idle
and half-sent connections; and GOAWAY on SIGTERM."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import httpx
from h2client import (CANCEL, CONTINUATION, DATA, END_HEADERS, END_STREAM, FLOW_CONTROL_ERROR,
                      FRAME_SIZE_ERROR, GOAWAY, H2, HEADERS, INTERNAL_ERROR, NO_ERROR, PING, PREFACE, PROTOCOL_ERROR,
                      REFUSED_STREAM, RST_STREAM, SETTINGS, WINDOW_UPDATE, Raw, closed_or_goaway, frame, goaway_code,
                      rst_code, settings_frame)
from harness import APPS, REPO_APPS, Server, assert_rss_below, rss_of, run_tests, wait_for

sys.path.insert(0, APPS)
from h2_app import big  # noqa: E402 - the app's own bytes, to compare with

DIR = tempfile.mkdtemp(prefix="ponte-h2-")
CERT, KEY = os.path.join(DIR, "cert.pem"), os.path.join(DIR, "key.pem")


def setUpModule():
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", KEY, "-out", CERT, "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)


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


class Frameworks(unittest.TestCase):
    """httpx (Debian's python3-httpx, with h2) over TLS: ALPN picks h2, and Django (WSGI and ASGI) and FastAPI
    serve it as they serve HTTP/1.1: pages, a form POST with its CSRF cookie, JSON, a streamed response."""

    def serve(self, app, app_dir, **kw):
        s = Server(app, "--ssl-certfile", CERT, "--ssl-keyfile", KEY, app_dir=app_dir, env=kw.pop("env", None),
                   **kw).start()
        self.addCleanup(s.__exit__, None, None, None)
        client = httpx.Client(http2=True, verify=CERT, base_url="https://127.0.0.1:%d" % s.port, timeout=10)
        self.addCleanup(client.close)
        return client

    def django(self, app, **kw):
        db = tempfile.NamedTemporaryFile(prefix="ponte-django-", suffix=".sqlite3", delete=False).name
        self.addCleanup(os.unlink, db)
        c = self.serve(app, REPO_APPS, env={"PONTE_DJANGO_DB": db}, **kw)
        r = c.get("/")
        self.assertEqual((r.status_code, r.http_version), (200, "HTTP/2"))
        self.assertIn(b"<h1>Notes</h1>", r.content)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', r.content).group(1).decode()
        # over https Django's CSRF check wants a Referer from the same origin
        r = c.post("/", data={"csrfmiddlewaretoken": token, "text": "over h2"}, follow_redirects=True,
                   headers={"Referer": str(c.base_url)})
        self.assertEqual((r.status_code, r.http_version), (200, "HTTP/2"))
        self.assertIn(b"over h2", r.content)
        self.assertIn("over h2", [n["text"] for n in c.get("/api/notes/").json()["notes"]])
        self.assertEqual(c.get("/stream/?n=3").content, b"line 0\nline 1\nline 2\n")

    def test_django_wsgi(self):
        self.django("django_site.wsgi:application", threads=4)

    def test_django_asgi(self):
        self.django("django_site.asgi:application")

    def test_fastapi(self):
        c = self.serve("fastapi_app:app", REPO_APPS + "/asgi")
        r = c.get("/items/7?q=hi")
        self.assertEqual((r.http_version, r.json()), ("HTTP/2", {"item_id": 7, "q": "hi"}))
        self.assertEqual(c.post("/notes", json={"text": "hi", "stars": 3}).json(), {"text": "HI", "stars": 3})
        self.assertEqual(c.get("/stream?n=3").content, b"line 0\nline 1\nline 2\n")


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


class Errors(H2Case, unittest.TestCase):
    """RFC 9113's connection and stream errors: frames in, the code out. nghttp2 finds them; the server must keep
    serving everyone else."""

    app = "h2_app:app"
    threads = None

    def goaway(self, data, code, section):
        r = self.raw()
        r.send(data)
        self.assertEqual(closed_or_goaway(r), code, section)
        self.assert_serving()

    def reset(self, fields, code, section, body=None):
        r = self.raw()
        r.headers(1, fields, END_HEADERS | (0 if body is not None else END_STREAM))
        if body is not None:
            r.send(body)
        f = r.until(RST_STREAM)
        self.assertIsNotNone(f, section)
        self.assertEqual((f[2], rst_code(f)), (1, code), section)
        # the connection goes on
        r.headers(3, r.request_fields())
        f = r.until(HEADERS)
        self.assertEqual(r.decode(f[3])[":status"], "200", section)

    def test_bad_preface(self):
        # 3.4: a preface that is not the client's is a connection error; the connection just closes
        r = self.raw(preface=False)
        r.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings_frame())
        self.assertIsNone(closed_or_goaway(r))
        self.assert_serving()

    def test_data_on_stream_0(self):
        self.goaway(frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR, "6.1")

    def test_even_stream_id(self):
        r = Raw(self.server.connect())
        self.addCleanup(r.sock.close)
        r.headers(2, r.request_fields())
        self.assertEqual(closed_or_goaway(r), PROTOCOL_ERROR, "5.1.1")

    def test_stream_id_going_back(self):
        # 5.1.1 makes a stream id lower than one used before a connection error; nghttp2 cannot tell such a stream
        # from one it closed and forgot, and ignores its HEADERS (RFC 9113 5.1 lets it for streams it reset): the
        # request is not served, and the connection goes on.
        r = self.raw()
        r.headers(5, r.request_fields())
        r.headers(3, r.request_fields())
        r.headers(7, r.request_fields())
        served = set()
        while 7 not in served:
            f = r.until(HEADERS)
            served.add(f[2])
        self.assertEqual(served, {5, 7})

    def test_frame_over_max_frame_size(self):
        r = self.raw()
        r.headers(1, r.request_fields("/upload", "POST"), END_HEADERS)
        r.send(frame(DATA, 0, 1, b"x" * 16385))
        self.assertEqual(closed_or_goaway(r), FRAME_SIZE_ERROR, "4.2")

    def test_ping_of_the_wrong_length(self):
        self.goaway(frame(PING, 0, 0, b"1234567"), FRAME_SIZE_ERROR, "6.7")

    def test_window_update_of_zero(self):
        self.goaway(frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), PROTOCOL_ERROR, "6.9")

    def test_initial_window_too_large(self):
        self.goaway(settings_frame([(4, 1 << 31)]), FLOW_CONTROL_ERROR, "6.5.2")

    def test_continuation_without_headers(self):
        r = self.raw()
        r.send(frame(CONTINUATION, END_HEADERS, 1, r.enc.encode(r.request_fields())))
        self.assertEqual(closed_or_goaway(r), PROTOCOL_ERROR, "6.10")

    def test_unknown_frames_and_settings_are_ignored(self):
        r = self.raw()
        r.send(frame(0x77, 0xff, 0, b"anything") + settings_frame([(0x99, 7)]) + frame(PING, 0, 0, b"12345678"))
        f = r.until(PING)
        self.assertEqual((f[1], f[3]), (1, b"12345678"), "5.5, 6.5.2: ignored, and the PING answered")

    def test_uppercase_header_name(self):
        self.reset(self.raw().request_fields() + [("X-Upper", "1")], PROTOCOL_ERROR, "8.2.1")

    def test_connection_specific_header(self):
        self.reset(self.raw().request_fields() + [("connection", "keep-alive")], PROTOCOL_ERROR, "8.2.2")

    def test_missing_path(self):
        self.reset([(":method", "GET"), (":scheme", "http"), (":authority", "localhost")], PROTOCOL_ERROR, "8.3.1")

    def test_body_short_of_its_content_length(self):
        self.reset(self.raw().request_fields("/upload", "POST") + [("content-length", "5")], PROTOCOL_ERROR,
                   "8.1.1", body=frame(DATA, END_STREAM, 1, b"abc"))


class Bounds(H2Case, unittest.TestCase):
    app = "h2_app:app"
    threads = None
    args = ("--max-header-size", "8192", "--max-headers", "20", "--max-body-size", "100000", "--client-timeout", "2",
            "--header-timeout", "2", "--keep-alive-timeout", "2")

    def test_settings_say_the_bounds(self):
        c = self.h2()
        c.wait(lambda: c.remote_settings)
        self.assertEqual(c.remote_settings.get(3), 100)   # SETTINGS_MAX_CONCURRENT_STREAMS
        self.assertEqual(c.remote_settings.get(6), 8192)  # SETTINGS_MAX_HEADER_LIST_SIZE

    def test_header_list_too_large_and_too_many(self):
        c = self.h2()
        self.assertEqual(c.get("/", headers=[("x-big", "v" * 9000)]).status, 431)
        self.assertEqual(c.get("/", headers=[("x-%d" % i, "1") for i in range(25)]).status, 431)
        self.assertEqual(c.get("/").status, 200)

    def test_hpack_bomb(self):
        # One 4 KiB field in the dynamic table, then referenced 40 times: 160 KiB decoded from a few hundred bytes.
        r = self.raw()
        first = r.enc.encode(r.request_fields() + [("x-bomb", "b" * 4000)])
        r.headers(1, first, encode=False)
        self.assertEqual(r.decode(r.until(HEADERS)[3])[":status"], "200")
        bomb = r.enc.encode(r.request_fields() + [("x-bomb", "b" * 4000)] * 40)
        self.assertLess(len(bomb), 200)
        r.headers(3, bomb, encode=False)
        f = r.until(HEADERS)
        self.assertEqual((f[2], r.decode(f[3])[":status"]), (3, "431"))
        self.assert_serving()

    def test_body_over_max_body_size(self):
        c = self.h2()
        r = c.get("/upload", method="POST", headers=[("content-length", "200000")], end=False)
        self.assertEqual(r.status, 413)
        sid = c.request("/upload", method="POST", end=False)
        c.send_body(sid, b"x" * 50000, end=False)
        try:
            c.send_body(sid, b"x" * 60000)
        except Exception:  # the server may reset the stream while we send
            pass
        r = c.response(sid)
        self.assertTrue(r.status == 413 or r.reset == CANCEL, (r.status, r.reset))
        self.assertEqual(c.get("/").status, 200)

    def test_window_never_opened(self):
        # The client's window is 0 and stays so: the response cannot move, and --client-timeout ends it.
        c = self.h2(settings={4: 0})
        c.request("/big?100000")
        t = time.time()
        with self.assertRaises(ConnectionError):
            c.wait(lambda: False, timeout=15)
        self.assertLess(time.time() - t, 12)
        self.assertIn("no progress for --client-timeout", self.server.stderr())
        self.assert_serving()

    def test_idle_and_half_sent(self):
        c = self.h2()
        self.assertEqual(c.get("/").status, 200)
        with self.assertRaises(ConnectionError):  # --keep-alive-timeout: GOAWAY, then the end
            c.wait(lambda: False, timeout=15)
        self.assertEqual(c.goaway[0], NO_ERROR)
        r = Raw(self.server.connect(), ack=False)  # an acknowledgement would break the header block
        self.addCleanup(r.sock.close)
        r.headers(1, r.request_fields(), END_STREAM)  # no END_HEADERS, and nothing more
        closed_or_goaway(r, timeout=15)
        self.assertIn("no complete header block within --header-timeout", self.server.stderr())


class LimitConcurrency(H2Case, unittest.TestCase):
    app = "h2_app:app"
    threads = None
    args = ("--limit-concurrency", "1",)

    def test_each_stream_counts(self):
        c = self.h2()
        slow = c.request("/slow?1")
        time.sleep(0.3)
        self.assertEqual(c.get("/").status, 503)
        self.assertEqual(c.response(slow).status, 200)


class Attacks(H2Case, unittest.TestCase):
    """Each with the server's memory bounded, and another client served meanwhile."""

    app = "h2_app:app"
    threads = None

    def test_max_concurrent_streams(self):
        # 5.1.2: a stream over the limit the server advertised. Before the client acknowledged the SETTINGS that
        # said it, the stream is refused (REFUSED_STREAM) and the others served; after, nghttp2 makes it a
        # connection error (PROTOCOL_ERROR), as a client that broke a limit it agreed to.
        r = Raw(self.server.connect(), ack=False)
        self.addCleanup(r.sock.close)
        for sid in range(1, 203, 2):
            r.headers(sid, r.request_fields("/slow?0.5"))
        f = r.until(RST_STREAM)
        self.assertEqual((f[2], rst_code(f)), (201, REFUSED_STREAM))
        served = 0
        while served < 100:
            f = r.until(DATA)
            served += bool(f[1] & END_STREAM)
        r = self.raw()
        r.until(SETTINGS)
        for sid in range(1, 203, 2):
            r.headers(sid, r.request_fields("/slow?0.5"))
        self.assertEqual(closed_or_goaway(r), PROTOCOL_ERROR)
        self.assert_serving()

    def test_rapid_reset(self):
        # CVE-2023-44487: open a stream and reset it at once, thousands of times. nghttp2 counts the resets; past
        # a burst and a rate the connection ends.
        r = self.raw()
        hdrs = r.enc.encode(r.request_fields("/slow?5"))
        code = None
        before = rss_of(self.server.proc.pid)
        try:
            for i in range(1, 20001, 2):
                r.send(frame(HEADERS, END_HEADERS | END_STREAM, i, hdrs) + frame(RST_STREAM, 0, i, b"\0\0\0\x08"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        code = closed_or_goaway(r, timeout=20)
        self.assertIsNotNone(code)
        self.assertNotEqual(code, NO_ERROR)
        assert_rss_below(self, rss_of(self.server.proc.pid) - before, 64 << 20, "memory after the resets")
        self.assert_serving()

    def test_continuation_flood(self):
        # CVE-2024-27316's class: a header block that never ends, CONTINUATION after CONTINUATION.
        r = self.raw()
        r.headers(1, r.request_fields(), 0)
        try:
            for _ in range(20000):
                r.send(frame(CONTINUATION, 0, 1, r.enc.encode([("x-a", "b" * 100)])))
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertNotEqual(closed_or_goaway(r), NO_ERROR)
        self.assert_serving()

    def flood(self, one):
        # A client that sends and never reads: the acknowledgements pile up, and the server ends the connection
        # instead of keeping them.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", self.server.port))
        self.addCleanup(s.close)
        s.sendall(PREFACE + settings_frame())
        s.settimeout(5)
        before = rss_of(self.server.proc.pid)
        batch = one * 1000
        ended = False
        for _ in range(2000):
            try:
                s.sendall(batch)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                ended = True
                break
        self.assertTrue(ended, "the server took 2 million frames without ending the connection")
        assert_rss_below(self, rss_of(self.server.proc.pid) - before, 32 << 20, "memory after the flood")
        self.assert_serving()

    def test_ping_flood(self):
        self.flood(frame(PING, 0, 0, b"12345678"))

    def test_settings_flood(self):
        self.flood(settings_frame([(4, 65535)]))


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
