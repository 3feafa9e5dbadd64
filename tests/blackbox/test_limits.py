"""Limits and timeouts: malformed requests get 400 and a close, oversized heads 431, oversized bodies 413, a head
that never completes 408, idle keep-alive connections close; none of them reaches the app."""

import os
import socket
import time
import unittest

from harness import Conn, ServerCase, build_request, run_tests


class LimitsBase(ServerCase):
    args = ("--max-header-size", "4096", "--max-headers", "20", "--max-body-size", "100000", "--header-timeout", "1",
            "--keep-alive-timeout", "1", "--client-timeout", "2")

    def rejected(self, raw, status):
        c = self.conn()
        c.send(raw)
        r = c.read_response()
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.header("connection"), "close")
        self.assertTrue(c.closed_by_peer())
        return r

    def test_malformed_request_line(self):
        self.rejected(b"GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400)

    def test_bad_method(self):
        self.rejected(b"G@T / HTTP/1.1\r\nHost: t\r\n\r\n", 400)

    def test_bare_lf(self):
        self.rejected(b"GET / HTTP/1.1\nHost: t\n\n", 400)

    def test_space_before_colon(self):
        self.rejected(b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400)

    def test_obs_fold_refused(self):
        # RFC 9112 5.2: reject obs-fold or replace it with spaces. ponte rejects it (docs/http-conformance.md).
        self.rejected(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n", 400)

    def test_missing_host_http11(self):
        self.rejected(b"GET / HTTP/1.1\r\n\r\n", 400)

    def test_two_hosts(self):
        self.rejected(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)

    def test_content_length_and_transfer_encoding(self):
        self.rejected(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"0\r\n\r\n", 400)

    def test_bad_content_length(self):
        self.rejected(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n", 400)
        self.rejected(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400)

    def test_bad_chunk_size(self):
        c = self.conn()
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        data = c.read_to_close()
        # Either 400 (the loop-thread app never started) or the app's error response; never a 200.
        self.assertNotIn(b"200 OK", data)

    def test_http2_preface(self):
        # --http auto (the default): the preface opens HTTP/2 (test_h2.py), and the server's SETTINGS come back
        c = self.conn()
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.assertEqual(c.sock.recv(9)[3], 4)

    def test_header_too_large(self):
        self.rejected(build_request("GET", "/echo", [("X-Big", "a" * 5000)]), 431)

    def test_too_many_headers(self):
        self.rejected(build_request("GET", "/echo", [("X-H%d" % i, "v") for i in range(30)]), 431)

    def test_long_url(self):
        self.rejected(build_request("GET", "/" + "u" * 5000), 431)

    def test_body_too_large_by_content_length(self):
        c = self.conn()
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100001\r\n\r\n")
        r = c.read_response()
        self.assertEqual(r.status, 413)
        self.assertTrue(c.closed_by_peer())

    def test_body_too_large_chunked(self):
        c = self.conn()
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (20000, b"z" * 20000)
        try:
            for _ in range(10):
                c.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        self.assertEqual(r.status, 413)

    def test_refused_client_that_keeps_sending_is_drained(self):
        # Lingering close: after a 413 the server reads and drops what the client still sends for a while, so the
        # client can finish writing and then read the answer; closing with unread input would reset it instead.
        c = self.conn()
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n")
        time.sleep(0.2)   # the 413, the FIN behind it, and the server lingering on its read side
        for _ in range(10):
            c.send(b"z" * 20000)   # a reset here is the bug: a server that closed instead of lingering
            time.sleep(0.02)
        r = c.read_response()
        self.assertEqual(r.status, 413)

    def test_body_at_the_limit_is_fine(self):
        r = self.conn().request("POST", "/upload", body=b"q" * 100000)
        self.assertEqual(r.status, 200)

    def test_header_timeout_408(self):
        c = self.conn()
        c.send(b"GET /echo HTTP/1.1\r\nHost: t\r\n")     # never finished
        started = time.time()
        r = c.read_response()
        self.assertEqual(r.status, 408)
        self.assertTrue(c.closed_by_peer())
        self.assertLess(time.time() - started, 5)

    def test_slowloris_bytes_do_not_extend_header_timeout(self):
        c = self.conn()
        c.send(b"GET /echo HTTP/1.1\r\n")
        started = time.time()
        try:
            for i in range(30):
                c.send(b"X-%d: y\r\n" % i)
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = c.read_to_close()
        self.assertIn(b"408", data)
        self.assertLess(time.time() - started, 4)

    def test_idle_keep_alive_closes(self):
        c = self.conn()
        self.assertEqual(c.request("GET", "/echo").status, 200)
        started = time.time()
        self.assertTrue(c.closed_by_peer(timeout=5))
        self.assertGreater(time.time() - started, 0.5)

    def test_silent_fresh_connection_closes(self):
        c = self.conn()
        self.assertTrue(c.closed_by_peer(timeout=5))

    def test_stalled_body_times_out(self):
        c = self.conn()
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\npartial")
        started = time.time()
        data = c.read_to_close()
        self.assertLess(time.time() - started, 8)
        self.assertNotIn(b"200 OK", data)

    def test_invalid_request_never_reaches_app(self):
        before = open(self.events).read()
        self.rejected(b"GET /slow?delay=0 HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400)
        self.rejected(b"GET /slow?delay=0 HTTP/1.1\r\nHost: t\r\nBad\x01Header: x\r\n\r\n", 400)
        time.sleep(0.2)
        self.assertEqual(open(self.events).read(), before)

    def test_server_survives_garbage(self):
        for junk in (b"\x00" * 100, b"\r\n" * 10000, os.urandom(5000), b"GET " + b"/" * 100000):
            c = Conn(self.server)
            try:
                c.send(junk)
                c.read_to_close()
            except (ConnectionResetError, BrokenPipeError, socket.timeout):
                pass
            c.close()
        self.assertEqual(self.conn().request("GET", "/echo").status, 200)


class LimitsWorkers(LimitsBase, unittest.TestCase):
    threads = 4


class LimitsLoopThread(LimitsBase, unittest.TestCase):
    threads = 0


if __name__ == "__main__":
    run_tests()
