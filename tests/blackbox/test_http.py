"""HTTP/1.1 behaviour over real sockets: keep-alive, pipelining order, chunked in and out, 100-continue, HEAD,
Date/Server, 1.0 framing. Runs against both the worker pool and the loop-thread mode."""

import hashlib
import json
import time
import unittest

from harness import ServerCase, assert_rss_below, build_request, rss_of, run_tests


class HTTPBase(ServerCase):
    def test_simple_get(self):
        r = self.conn().request("GET", "/echo?a=1")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.version, "HTTP/1.1")
        self.assertEqual(json.loads(r.body)["environ"]["QUERY_STRING"], "a=1")

    def test_date_and_server_headers(self):
        r = self.conn().request("GET", "/echo")
        self.assertEqual(r.header("server"), "ponte")
        self.assertRegex(r.header("date"), r"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$")

    def test_keep_alive_default_http11(self):
        c = self.conn()
        for i in range(5):
            r = c.request("GET", "/echo?i=%d" % i)
            self.assertEqual(json.loads(r.body)["environ"]["QUERY_STRING"], "i=%d" % i)
            self.assertIsNone(r.header("connection"))

    def test_connection_close(self):
        c = self.conn()
        r = c.request("GET", "/echo", [("Connection", "close")])
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("connection"), "close")
        self.assertTrue(c.closed_by_peer())

    def test_http10_closes_by_default(self):
        c = self.conn()
        r = c.request("GET", "/echo", version="HTTP/1.0")
        self.assertEqual(r.version, "HTTP/1.0")
        self.assertTrue(c.closed_by_peer())

    def test_http10_keep_alive(self):
        c = self.conn()
        for _ in range(3):
            r = c.request("GET", "/echo", [("Connection", "keep-alive")], version="HTTP/1.0")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("connection"), "keep-alive")

    def test_pipelining_in_order(self):
        c = self.conn()
        # A slow request first: its response must still come first.
        reqs = [build_request("GET", "/slow?delay=0.3")]
        reqs += [build_request("GET", "/echo?n=%d" % i) for i in range(20)]
        c.send(b"".join(reqs))
        r = c.read_response()
        self.assertEqual(r.body, b"slept 0.3")
        for i in range(20):
            r = c.read_response()
            self.assertEqual(json.loads(r.body)["environ"]["QUERY_STRING"], "n=%d" % i)

    def test_pipelined_bodies(self):
        c = self.conn()
        c.send(b"".join(build_request("POST", "/echo", body=b"body-%d" % i) for i in range(10)))
        for i in range(10):
            self.assertEqual(json.loads(c.read_response().body)["body"], "body-%d" % i)

    def test_chunked_request_body(self):
        c = self.conn()
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
        doc = json.loads(c.read_response().body)
        self.assertEqual(doc["body"], "hello world")
        self.assertNotIn("CONTENT_LENGTH", doc["environ"])
        self.assertEqual(doc["environ"]["HTTP_TRANSFER_ENCODING"], "chunked")
        # The connection is still usable after a chunked body.
        self.assertEqual(c.request("GET", "/echo").status, 200)

    def test_trailers_are_not_headers(self):
        # Many trailer lines after a chunked body: they are counted against the limits and dropped, never added to
        # the request's headers (whose tables they would grow, and move, under the app's feet).
        trailers = b"".join(b"X-Trailer-%d: %s\r\n" % (i, b"v" * 40) for i in range(40))
        c = self.conn()
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Head: kept\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n")
        doc = json.loads(c.read_response().body)
        self.assertEqual(doc["body"], "hello")
        self.assertEqual(doc["environ"]["HTTP_X_HEAD"], "kept")
        self.assertFalse([k for k in doc["environ"] if k.startswith("HTTP_X_TRAILER")])
        self.assertEqual(c.request("GET", "/echo").status, 200)

    def test_chunked_response(self):
        r = self.conn().request("GET", "/stream?n=4&size=3")
        self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertIsNone(r.header("content-length"))
        self.assertEqual(r.body, b"000111222333")

    def test_chunked_response_is_streamed(self):
        c = self.conn()
        c.send(build_request("GET", "/stream?n=2&size=4&delay=1.5"))
        head = c.read_until(b"\r\n\r\n")
        self.assertIn(b"chunked", head)
        started = time.time()
        first = c.read_until(b"0000\r\n")
        # The first chunk arrives well before the app sleeps for the second.
        self.assertLess(time.time() - started, 1.2, first)

    def test_http10_response_is_close_delimited(self):
        c = self.conn()
        r = c.request("GET", "/stream?n=3&size=2", version="HTTP/1.0")
        self.assertIsNone(r.header("transfer-encoding"))
        self.assertEqual(r.body, b"001122")

    def test_head_has_headers_no_body(self):
        c = self.conn()
        r = c.request("HEAD", "/big?size=1000")
        self.assertEqual(r.header("content-length"), "1000")
        self.assertEqual(r.body, b"")
        # Nothing stray follows: the next response parses cleanly.
        r = c.request("GET", "/echo")
        self.assertEqual(r.status, 200)

    def test_head_of_streamed_response(self):
        c = self.conn()
        r = c.request("HEAD", "/stream?n=3")
        self.assertEqual(r.status, 200)
        self.assertEqual(c.request("GET", "/echo").status, 200)

    def test_list_response_gets_content_length(self):
        r = self.conn().request("GET", "/write")
        self.assertEqual(r.body, b"written then returned")

    def test_204_and_304_have_no_body(self):
        c = self.conn()
        for code in (204, 304):
            r = c.request("GET", "/status?code=%d" % code)
            self.assertEqual(r.status, code)
            self.assertIsNone(r.header("content-length"))
            self.assertIsNone(r.header("transfer-encoding"))
        self.assertEqual(c.request("GET", "/echo").status, 200)

    def test_expect_100_continue(self):
        c = self.conn()
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = c.read_response()
        self.assertEqual(interim.status, 100)
        c.send(b"hello")
        self.assertEqual(json.loads(c.read_response().body)["body"], "hello")

    def test_large_response(self):
        r = self.conn().request("GET", "/big?size=3000000")
        self.assertEqual(len(r.body), 3000000)

    def test_large_upload_streams(self):
        """A 40 MiB upload is never held whole in memory: streamed to a worker, or spooled to disk for the loop."""
        c = self.conn()
        size = 40 * 1024 * 1024
        body = bytes(range(256)) * (size // 256)
        rss_before = self.server_rss()
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        c.sock.sendall(body)
        doc = json.loads(c.read_response().body)
        self.assertEqual(doc["size"], size)
        assert_rss_below(self, self.server_rss() - rss_before, 16 * 1024 * 1024, "RSS grew with the upload")
        self.assertEqual(doc["sha256"], hashlib.sha256(body).hexdigest())

    def test_ipv6_and_percent_decoding(self):
        r = self.conn().request("GET", "/caf%C3%A9%2Fx?q=%20")
        env = json.loads(r.body)["environ"]
        self.assertEqual(env["PATH_INFO"], "/caf\u00c3\u00a9/x")   # UTF-8 bytes as latin-1, per PEP 3333
        self.assertEqual(env["QUERY_STRING"], "q=%20")

    def test_absolute_form_target(self):
        r = self.conn().request("GET", "http://example.com/echo?x=1")
        env = json.loads(r.body)["environ"]
        self.assertEqual(env["PATH_INFO"], "/echo")
        self.assertEqual(env["QUERY_STRING"], "x=1")

    def test_access_log_line(self):
        self.conn().request("GET", "/echo?logged=1", [("User-Agent", "t")])
        deadline = time.time() + 3
        while time.time() < deadline:
            if "GET /echo?logged=1 HTTP/1.1\" 200" in self.server.stdout():
                break
            time.sleep(0.1)
        self.assertRegex(self.server.stdout(),
                         r'127\.0\.0\.1 - - \[[^\]]+\] "GET /echo\?logged=1 HTTP/1\.1" 200 \d+ \d+\.\d{6}')


HTTPBase.server_rss = lambda self: rss_of(self.server.proc.pid)


class HTTPWorkers(HTTPBase, unittest.TestCase):
    threads = 4


HTTPWorkers.test_no_100_continue_unless_app_reads = lambda self: _no_100(self)


def _no_100(self):
    """Worker mode sends "100 Continue" only when the app first reads the body: an app that answers without
    reading spares the client the upload."""
    c = self.conn()
    c.send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
    r = c.read_response()
    self.assertEqual(r.status, 200)
    self.assertEqual(r.body, b"did not read the body")
    # The body never came, so the connection cannot be reused: the server closes it.
    self.assertTrue(c.closed_by_peer())


class HTTPLoopThread(HTTPBase, unittest.TestCase):
    threads = 0

    def test_expect_100_continue(self):
        # The loop thread reads the whole body before the app runs, so it asks for it at once.
        HTTPBase.test_expect_100_continue(self)


if __name__ == "__main__":
    run_tests()
