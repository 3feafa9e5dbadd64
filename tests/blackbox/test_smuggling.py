"""Request smuggling (RFC 9112 6.3, 11.2): each ambiguous framing shape carries a second request hidden where a
parser that reads the framing the other way would find it. Whatever ponte answers, the hidden request never
reaches the app, nothing follows an error response, and the connection is closed after it. Worker threads, the
loop thread and ASGI alike."""

import json
import socket
import time
import unittest

from harness import ServerCase, run_tests

HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


def head(*lines, start=b"POST /first HTTP/1.1"):
    return b"\r\n".join((start, b"Host: t") + lines) + b"\r\n\r\n"


# name: the bytes. HIDDEN is placed where the other reading of the framing would see a request start.
SHAPES = {
    "CL.TE": head(b"Content-Length: 6", b"Transfer-Encoding: chunked") + b"0\r\n\r\n" + HIDDEN,
    "TE.CL": head(b"Transfer-Encoding: chunked", b"Content-Length: 3") + b"8\r\nSMUGGLED\r\n0\r\n\r\n" + HIDDEN,
    "TE.CL, empty TE": head(b"Transfer-Encoding: ", b"Content-Length: %d" % len(HIDDEN)) + HIDDEN,
    "two Content-Lengths": head(b"Content-Length: 0", b"Content-Length: %d" % len(HIDDEN)) + HIDDEN,
    "two equal Content-Lengths": head(b"Content-Length: %d" % len(HIDDEN), b"Content-Length: %d" % len(HIDDEN))
    + HIDDEN,
    "a Content-Length list": head(b"Content-Length: %d, 0" % len(HIDDEN)) + HIDDEN,
    "a signed Content-Length": head(b"Content-Length: +%d" % len(HIDDEN)) + HIDDEN,
    "a hex Content-Length": head(b"Content-Length: 0x%x" % len(HIDDEN)) + HIDDEN,
    "a Content-Length with a space inside": head(b"Content-Length: 1 2") + HIDDEN,
    "a huge Content-Length": head(b"Content-Length: 99999999999999999999999") + HIDDEN,
    "chunked not last": head(b"Transfer-Encoding: chunked, identity") + b"0\r\n\r\n" + HIDDEN,
    "chunked twice": head(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked") + b"0\r\n\r\n" + HIDDEN,
    "xchunked": head(b"Transfer-Encoding: xchunked", b"Content-Length: 5") + b"0\r\n\r\n" + HIDDEN,
    "chunked with a vertical tab": head(b"Transfer-Encoding: chunked\x0b") + b"0\r\n\r\n" + HIDDEN,
    "space before the colon": head(b"Transfer-Encoding : chunked", b"Content-Length: 5") + b"0\r\n\r\n" + HIDDEN,
    "TE obs-folded": head(b"X-A: 1", b" Transfer-Encoding: chunked") + b"0\r\n\r\n" + HIDDEN,
    "TE folded onto chunked": head(b"Transfer-Encoding: identity", b" chunked") + b"0\r\n\r\n" + HIDDEN,
    "a bare CR before TE": head(b"X-A: 1\rTransfer-Encoding: chunked") + b"0\r\n\r\n" + HIDDEN,
    "a bare LF before TE": head(b"X-A: 1\nTransfer-Encoding: chunked") + b"0\r\n\r\n" + HIDDEN,
    "a NUL in a header value": head(b"X-A: 1\x00", b"Transfer-Encoding: chunked") + b"0\r\n\r\n" + HIDDEN,
    "a NUL in a header name": head(b"Transfer\x00-Encoding: chunked") + b"0\r\n\r\n" + HIDDEN,
    "TE in HTTP/1.0": head(b"Transfer-Encoding: chunked", start=b"POST /first HTTP/1.0") + b"0\r\n\r\n" + HIDDEN,
    "a chunk size overflowing 64 bits": head(b"Transfer-Encoding: chunked")
    + b"10000000000000000000000000000005\r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "a negative chunk size": head(b"Transfer-Encoding: chunked") + b"-1\r\n" + HIDDEN + b"0\r\n\r\n",
    "a chunk size with a space before it": head(b"Transfer-Encoding: chunked") + b" 5\r\nhello\r\n0\r\n\r\n"
    + HIDDEN,
    "a chunk size with 0x": head(b"Transfer-Encoding: chunked") + b"0x5\r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "chunk data longer than its size": head(b"Transfer-Encoding: chunked") + b"1\r\nX" + HIDDEN + b"\r\n0\r\n\r\n",
    "a chunk ended by LF": head(b"Transfer-Encoding: chunked") + b"5\nhello\r\n0\r\n\r\n" + HIDDEN,
    "a last chunk without its CRLF": head(b"Transfer-Encoding: chunked") + b"0\r\n" + HIDDEN,
    "a bare LF ending the head": b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\n" % len(HIDDEN)
    + HIDDEN,
    "a request line ended by LF": b"POST /first HTTP/1.1\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(HIDDEN)
    + HIDDEN,
}


class Smuggling(ServerCase):
    args = ("--header-timeout", "2", "--client-timeout", "2")

    def exchange(self, raw):
        """Sends raw, half-closes, reads until the server closes. Returns (responses, closed)."""
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        data = b""
        closed = False
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            deadline = time.time() + 5
            while time.time() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except ConnectionResetError:
            closed = True
        finally:
            s.close()
        return parse(data), closed

    def path_of(self, body):
        doc = json.loads(body)
        return doc["environ"]["PATH_INFO"] if "environ" in doc else doc["path"]

    def test_shapes(self):
        for name, raw in SHAPES.items():
            with self.subTest(shape=name):
                responses, closed = self.exchange(raw)
                self.assertTrue(responses, "no answer at all")
                self.assertTrue(closed, "the connection was left open")
                paths = [self.path_of(b) for status, b in responses if status == 200]
                self.assertNotIn("/smuggled", paths, "the hidden request reached the app")
                for i, (status, _) in enumerate(responses):
                    if status >= 400:
                        self.assertEqual(i, len(responses) - 1, "a response after an error: %r" % responses)
                self.assertLessEqual(len(responses), 1, "more than one answer: %r" % responses)


def parse(data):
    """[(status, body)] of complete Content-Length responses; a malformed rest is an assertion failure."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        assert end > 0 and data.startswith(b"HTTP/1."), data[:200]
        lines = data[:end].split(b"\r\n")
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        out.append((int(lines[0][9:12]), data[end + 4:end + 4 + length]))
        data = data[end + 4 + length:]
    return out


class SmugglingWorkers(Smuggling, unittest.TestCase):
    threads = 4


class SmugglingLoopThread(Smuggling, unittest.TestCase):
    threads = 0


class SmugglingASGI(Smuggling, unittest.TestCase):
    app = "asgi_testapp:app"
    threads = None


if __name__ == "__main__":
    run_tests()
