"""PEP 3333 as the app sees it: environ keys and types, wsgi.input methods, write(), file_wrapper with sendfile,
close() always called. Every app here runs under wsgiref.validate.validator."""

import json
import os
import socket
import sys
import tempfile
import time
import unittest

from harness import APPS, Conn, Server, ServerCase, assert_rss_below, rss_of, run_tests, wait_for

sys.path.insert(0, APPS)
from testapp import numbered_chunk  # noqa: E402  (the app's own chunks, to compare with)


class WSGIBase(ServerCase):
    def test_environ_required_keys_and_types(self):
        r = self.conn().request("POST", "/echo/x?k=v", [("Content-Type", "text/plain"), ("X-Multi", "a"),
                                                         ("X-Multi", "b"), ("User-Agent", "ua")], b"data")
        doc = json.loads(r.body)
        env, types = doc["environ"], doc["types"]
        self.assertEqual(env["REQUEST_METHOD"], "POST")
        self.assertEqual(env["SCRIPT_NAME"], "")
        self.assertEqual(env["PATH_INFO"], "/echo/x")
        self.assertEqual(env["QUERY_STRING"], "k=v")
        self.assertEqual(env["CONTENT_TYPE"], "text/plain")
        self.assertEqual(env["CONTENT_LENGTH"], "4")
        self.assertNotIn("HTTP_CONTENT_TYPE", env)
        self.assertNotIn("HTTP_CONTENT_LENGTH", env)
        self.assertEqual(env["SERVER_NAME"], "127.0.0.1")
        self.assertEqual(env["SERVER_PORT"], str(self.server.port))
        self.assertEqual(env["SERVER_PROTOCOL"], "HTTP/1.1")
        self.assertEqual(env["REMOTE_ADDR"], "127.0.0.1")
        self.assertTrue(env["REMOTE_PORT"].isdigit())
        self.assertEqual(env["HTTP_HOST"], "test")
        self.assertEqual(env["HTTP_X_MULTI"], "a, b")
        self.assertEqual(env["HTTP_USER_AGENT"], "ua")
        self.assertEqual(env["wsgi.url_scheme"], "http")
        self.assertEqual(doc["wsgi.version"], [1, 0])
        self.assertEqual(doc["wsgi.multithread"], self.threads > 0)
        self.assertIs(doc["wsgi.multiprocess"], False)
        self.assertIs(doc["wsgi.run_once"], False)
        self.assertIs(doc["wsgi.input_terminated"], True)
        self.assertTrue(doc["has_file_wrapper"])
        for k, t in types.items():
            if not k.startswith("wsgi."):
                self.assertEqual(t, "str", k)
        self.assertEqual(doc["body"], "data")

    def test_underscore_headers_dropped(self):
        doc = json.loads(self.conn().request("GET", "/echo", [("X_Forwarded_For", "1.2.3.4")]).body)
        self.assertNotIn("HTTP_X_FORWARDED_FOR", doc["environ"])

    def test_latin1_header_value(self):
        c = self.conn()
        c.send(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Name: caf\xe9\r\n\r\n")
        self.assertEqual(json.loads(c.read_response().body)["environ"]["HTTP_X_NAME"], "caf\u00e9")

    def test_readline_with_limit(self):
        body = b"first line\nsecond\nno newline at end"
        got = json.loads(self.conn().request("POST", "/lines?mode=readline&n=7", body=body).body)
        self.assertEqual("".join(got), body.decode())
        self.assertEqual(got[:3], ["first l", "ine\n", "second\n"])

    def test_readlines_and_iteration(self):
        body = b"a\nbb\nccc\n"
        for mode in ("readlines", "iter"):
            got = json.loads(self.conn().request("POST", "/lines?mode=" + mode, body=body).body)
            self.assertEqual(got, ["a\n", "bb\n", "ccc\n"], mode)

    def test_chunked_body_readline(self):
        c = self.conn()
        c.send(b"POST /lines?mode=iter HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\na\nb\r\n4\r\nb\ncc\r\n0\r\n\r\n")
        self.assertEqual(json.loads(c.read_response().body), ["a\n", "bb\n", "cc"])

    def test_empty_body_reads_eof(self):
        doc = json.loads(self.conn().request("POST", "/echo", [("Content-Length", "0")]).body)
        self.assertEqual(doc["body"], "")

    def test_read_without_size(self):
        body = os.urandom(200000)
        with Server("testapp:raw_application", threads=self.threads) as raw:
            c = Conn(raw)
            doc = json.loads(c.request("POST", "/readall", body=body).body)
            self.assertEqual(doc, {"size": len(body), "sha256": __import__("hashlib").sha256(body).hexdigest(),
                                   "tail": 0})
            c.send(b"POST /readall HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            self.assertEqual(json.loads(c.read_response().body)["size"], 5)
            c.close()

    def test_write_callable(self):
        r = self.conn().request("GET", "/write")
        self.assertEqual(r.body, b"written then returned")

    def test_file_wrapper(self):
        data = os.urandom(300000)
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(data)
        self.addCleanup(os.unlink, f.name)
        c = self.conn()
        r = c.request("GET", "/file?path=" + f.name)
        self.assertEqual(r.body, data)
        self.assertEqual(c.request("GET", "/echo").status, 200)

    def test_file_wrapper_uses_sendfile(self):
        data = os.urandom(1000000)
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(data)
        self.addCleanup(os.unlink, f.name)
        with Server("testapp:raw_application", threads=self.threads) as raw:
            c = Conn(raw)
            r = c.request("GET", "/file?path=" + f.name)
            self.assertEqual(r.body, data)
            if self.threads:
                # The size came from fstat(): the file went out with sendfile(), not through the iterator.
                self.assertEqual(r.header("content-length"), str(len(data)))
            r = c.request("HEAD", "/file?path=" + f.name)
            self.assertEqual(r.body, b"")
            self.assertEqual(c.request("GET", "/echo").status, 200)
            c.close()

    def test_close_called_after_success(self):
        self.conn().request("GET", "/tracked?name=ok-%d&chunks=3" % self.threads)
        self.assertTrue(wait_for(lambda: "close ok-%d" % self.threads in self.read_events()))

    def test_close_called_when_client_goes_away(self):
        name = "gone-%d" % self.threads
        c = self.conn()
        c.send(b"GET /tracked?name=%s&delay=0.05 HTTP/1.1\r\nHost: t\r\n\r\n" % name.encode())
        c.read_until(b"xxxx")
        c.sock.close()
        self.assertTrue(wait_for(lambda: "close " + name in self.read_events()), self.read_events())
        # And the server still serves everyone else.
        self.assertEqual(self.conn().request("GET", "/echo").status, 200)

    def test_slow_reader_back_pressure(self):
        """A client that does not read makes the app wait; it neither buffers without bound nor hangs others."""
        name = "slow-%d" % self.threads
        c = self.conn()
        c.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 16384)
        c.send(b"GET /tracked?name=%s&chunks=100000 HTTP/1.1\r\nHost: t\r\n\r\n" % name.encode())
        time.sleep(1.0)
        # Others are served meanwhile.
        self.assertEqual(self.conn().request("GET", "/echo").status, 200)
        rss1 = self.server_rss()
        time.sleep(1.0)
        rss2 = self.server_rss()
        # The app produced 6.5 GB if nothing held it back; memory stays flat instead.
        assert_rss_below(self, rss2 - rss1, 8 * 1024 * 1024, "RSS grew while the client did not read")
        assert_rss_below(self, rss2, 400 * 1024 * 1024, "RSS")
        c.sock.close()
        self.assertTrue(wait_for(lambda: "close " + name in self.read_events()))

    def server_rss(self):
        return rss_of(self.server.proc.pid)


def read_chunked_response(sock):
    """The body of one chunked response, read and decoded in linear time (the harness's reader is per chunk)."""
    data = bytearray()
    while not data.endswith(b"\r\n0\r\n\r\n"):
        piece = sock.recv(1 << 20)
        if not piece:
            raise EOFError("connection closed after %d bytes" % len(data))
        data += piece
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    body, pos = [], 0
    while True:
        eol = rest.index(b"\r\n", pos)
        size = int(rest[pos:eol], 16)
        if size == 0:
            return head, b"".join(body)
        body.append(rest[eol + 2:eol + 2 + size])
        pos = eol + 2 + size + 2


class WSGIGatheredOutput(unittest.TestCase):
    def test_chunks_arrive_whole_and_in_order(self):
        """A worker yielding 6 MB in chunks of up to 16 KB, to a reader that first lets the socket fill up: every
        byte arrives, in order. With the server on one CPU the loop finds many chunks waiting at once and writes
        them with one writev; what the socket does not take, often from the middle of a chunk, is queued."""
        with Server("testapp:application", threads=2, env={"PONTE_TEST_EVENTS": os.devnull}) as s:
            for task in os.listdir("/proc/%d/task" % s.proc.pid):
                os.sched_setaffinity(int(task), {min(os.sched_getaffinity(0))})
            expected = b"".join(numbered_chunk(i, 16000) for i in range(800))
            for _ in range(3):
                sock = socket.create_connection((s.host, s.port))
                sock.sendall(b"GET /numbered?chunks=800&size=16000 HTTP/1.1\r\nHost: t\r\n\r\n")
                time.sleep(0.3)     # not reading: the socket buffers fill, and writes come up short
                head, body = read_chunked_response(sock)
                self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
                self.assertEqual(len(body), len(expected))
                self.assertTrue(body == expected, "the body differs from byte %d" % next(
                    (i for i, (a, b) in enumerate(zip(body, expected)) if a != b), -1))
                sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")   # the connection is still in step
                self.assertTrue(sock.recv(100).startswith(b"HTTP/1.1 200 "))
                sock.close()


class WSGIRootPath(unittest.TestCase):
    def test_root_path_is_script_name(self):
        with Server("testapp:application", "--root-path", "/app", env={"PONTE_TEST_EVENTS": os.devnull}) as s:
            c = Conn(s)
            env = json.loads(c.request("GET", "/app/echo/x").body)["environ"]
            self.assertEqual((env["SCRIPT_NAME"], env["PATH_INFO"]), ("/app", "/echo/x"))
            env = json.loads(c.request("GET", "/application").body)["environ"]
            self.assertEqual((env["SCRIPT_NAME"], env["PATH_INFO"]), ("/app", "/application"))
            c.close()


class WSGIWorkers(WSGIBase, unittest.TestCase):
    threads = 4

    def test_body_arriving_in_pieces_reaches_a_waiting_app(self):
        """The app waits on wsgi.input before the body is there, and answers each line before the client sends the
        next: every piece must wake it (a worker waits on a condition variable, signalled once the loop has read
        what arrived), or this deadlocks. (A loop-thread app gets its body whole, so this is for workers.)"""
        with Server("testapp:application", "--request-buffering", "off", threads=self.threads,
                    env={"PONTE_TEST_EVENTS": os.devnull}) as s:
            c = Conn(s)
            c.send(b"POST /answer-lines HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\n")
            for line in (b"one\n", b"two\n", b"three\n"):
                time.sleep(0.1)
                c.send(line)
                self.assertIn(b"got " + line, c.read_until(b"got " + line))
            c.read_until(b"0\r\n\r\n")
            c.close()

    def test_request_buffering_gives_the_body_whole(self):
        """By default a worker gets a request once its body is in (or 64 KiB of it): the same app then answers
        only once the last line is there, and no thread waited on the client meanwhile."""
        c = self.conn()
        c.send(b"POST /answer-lines HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\n")
        for line in (b"one\n", b"two\n"):
            time.sleep(0.1)
            c.send(line)
        c.sock.settimeout(0.3)
        self.assertRaises(socket.timeout, c.sock.recv, 1)
        c.sock.settimeout(5)
        c.send(b"three\n")
        self.assertIn(b"got three", c.read_until(b"got three\n"))


class WSGILoopThread(WSGIBase, unittest.TestCase):
    threads = 0


if __name__ == "__main__":
    run_tests()
