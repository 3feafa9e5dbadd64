"""Hostile input: thousands of mutated requests (seeded, bounded), abrupt resets, half-open and idle floods. The
server must answer or close every connection, never crash or hang, and still serve a normal request afterwards.
Traffic goes to 127.0.0.1 only and every loop is bounded in count and time."""

import glob
import os
import random
import socket
import struct
import time
import unittest

from harness import Conn, ServerCase, assert_rss_below, rss_of, run_tests

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")
SEED = int(os.environ.get("PONTE_FUZZ_SEED", "20261124"))
ROUNDS = int(os.environ.get("PONTE_FUZZ_ROUNDS", "1500"))


def seeds():
    out = [b"GET /echo?a=1 HTTP/1.1\r\nHost: t\r\n\r\n",
           b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
           b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]
    paths = glob.glob(os.path.join(CORPUS, "gunicorn-raw", "*", "*.raw"))
    if not paths:
        raise AssertionError("the request corpus is missing from " + CORPUS)
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < 20000:
            out.append(data)
    return out


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        if not data:
            break
        i = rng.randrange(len(data))
        if op == 0:
            data[i] = rng.randrange(256)
        elif op == 1:
            del data[i:i + rng.randint(1, 8)]
        elif op == 2:
            data[i:i] = rng.choice([b"\r", b"\n", b"\r\n", b":", b" ", b"\x00", b"%", b"0", b"ffffffffffffffff",
                                    b"Transfer-Encoding: chunked\r\n", b"Content-Length: 99999999999\r\n"])
        elif op == 3:
            data = data[:i]
        elif op == 4:
            data += data[:rng.randint(1, 200)]          # pipelined junk
        else:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    return bytes(data)


class PipelineFlood:
    """Clients that pipeline requests without reading, and clients that half-close: the same in every mode."""

    args = ("--header-timeout", "1", "--client-timeout", "2", "--max-body-size", "1000000")
    probe = "/echo"     # a route that answers 200

    def assert_alive(self):
        self.assertIsNone(self.server.proc.poll(), self.server.stderr()[-3000:])
        c = Conn(self.server)
        self.assertEqual(c.request("GET", self.probe).status, 200)
        c.close()

    def send_one(self, data):
        """Sends, half-closes, reads until the server closes. Returns what came back."""
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=3)
        got = b""
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            deadline = time.time() + 4
            while time.time() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        finally:
            s.close()
        return got

    def test_pipelined_flood_is_bounded(self):
        # Four clients pipeline requests for 100 kB responses and never read a byte. A connection parses its next
        # request only while less than PT_OUT_HIGH (256 KiB) of responses wait for the client, and keeps at most
        # 64 KiB of requests unparsed: memory stays flat however long they go on (before the bound: 1.6 GB).
        warm = Conn(self.server)
        self.assertEqual(warm.request("GET", "/big?size=100000").status, 200)     # the allocator has seen it
        warm.close()
        before = rss_of(self.server.proc.pid)
        req = b"GET /big?size=100000 HTTP/1.1\r\nHost: t\r\n\r\n" * 200
        limit = 64 * 1024 * 1024      # far more than the kernel's socket buffers can hold
        socks, total = [], 0
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", self.server.port), timeout=3)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(1.0)
            socks.append(s)
        for s in socks:
            sent = 0
            try:
                while sent < limit:
                    sent += s.send(req)
            except (socket.timeout, OSError):
                pass
            self.assertLess(sent, limit, "the server kept reading pipelined requests it could not answer")
            total += sent
        grown = rss_of(self.server.proc.pid) - before
        assert_rss_below(self, grown, 16 * 1024 * 1024, "RSS growth under a pipelining flood of %d bytes" % total)
        for s in socks:
            s.close()
        self.assert_alive()

    def test_flooded_connection_resumes_when_read(self):
        # The held-back requests are answered, in order, once the client reads.
        c = Conn(self.server)
        self.addCleanup(c.close)
        c.send(b"".join(b"GET /big?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (100000 + i) for i in range(20)))
        time.sleep(0.2)     # the client reads only later: the server holds the rest back meanwhile
        for i in range(20):
            r = c.read_response()
            self.assertEqual((r.status, len(r.body)), (200, 100000 + i))

    def test_half_close_with_a_partial_request(self):
        # Two complete requests, the start of a third, then the client shuts down its side: both are answered and
        # the connection closes at once (not after --header-timeout, with a 408 for a request that cannot come).
        got = self.send_one(b"GET /big?size=10 HTTP/1.1\r\nHost: t\r\n\r\n" * 2 + b"GET /x HT")
        self.assertEqual(got.count(b"HTTP/1.1 200 OK\r\n"), 2, got[:300])
        self.assertNotIn(b"408", got)
        self.assertTrue(got.endswith(b"b" * 10), got[-100:])


class Hostile(PipelineFlood, ServerCase, unittest.TestCase):
    args = PipelineFlood.args
    # A mutated method is still a token, and any token is a method (RFC 9110 9.1): the app sees it.
    allowed_warnings = ("Unknown REQUEST_METHOD",)

    def test_mutated_requests(self):
        rng = random.Random(SEED + self.threads)
        pool = seeds()
        started = time.time()
        seen = {}
        for i in range(ROUNDS):
            got = self.send_one(mutate(rng, rng.choice(pool)))
            status = got[9:12].decode("latin-1") if got.startswith(b"HTTP/1.") else "closed"
            seen[status] = seen.get(status, 0) + 1
            if i % 250 == 0:
                self.assert_alive()
            if time.time() - started > 120:
                break
        self.assert_alive()
        # The mutations must have exercised both paths: requests that still parse, and refusals.
        self.assertGreater(seen.get("200", 0), ROUNDS // 100, seen)
        self.assertGreater(seen.get("400", 0), ROUNDS // 100, seen)

    def test_resets_mid_request_and_mid_response(self):
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", self.server.port), timeout=3)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # close sends RST
            if i % 3 == 0:
                s.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            elif i % 3 == 1:
                s.sendall(b"GET /big?size=2000000 HTTP/1.1\r\nHost: t\r\n\r\n")
                s.recv(100)
            else:
                s.sendall(b"GET /stream?n=10&size=1000&delay=0.005 HTTP/1.1\r\nHost: t\r\n\r\n")
            s.close()
        self.assert_alive()

    def test_idle_and_half_open_flood(self):
        socks = []
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", self.server.port), timeout=3)
            if i % 2:
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n")     # a head that never ends
            socks.append(s)
        self.assert_alive()
        time.sleep(1.5)     # past --header-timeout: the partial ones get 408 and are closed
        closed = 0
        for s in socks:
            s.settimeout(3)
            try:
                if s.recv(65536) is not None:
                    closed += 1
            except OSError:
                closed += 1
            s.close()
        self.assertEqual(closed, len(socks))
        self.assert_alive()

class HostileLoopThread(Hostile):
    threads = 0


class FloodASGI(PipelineFlood, ServerCase, unittest.TestCase):
    app = "asgi_testapp:app"
    threads = None
    probe = "/big?size=3"


if __name__ == "__main__":
    run_tests()
