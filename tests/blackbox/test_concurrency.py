"""Everything at once, on shared state: client threads start and finish requests that count into one dict and one
list, stream responses (from a generator, and through write() called from a thread of the app's), upload bodies,
talk WebSocket, and vanish half way through a response or an upload; a reload (SIGHUP) lands in the middle. On a
free-threaded CPython (3.14t) the worker threads run Python at once, and tests/run runs this suite there under
ThreadSanitizer and under ASan: a race in ponte's C code, or a crash, fails the server's exit check (harness).

Each answer is checked: bodies byte for byte, uploads by length and SHA-256, the counts to the request, and the
server serves a last request and exits 0 afterwards. The apps are tests/blackbox/apps/concurrency.py."""

import hashlib
import json
import os
import random
import signal
import socket
import struct
import tempfile
import threading
import unittest

from harness import Conn, Master, Server, free_port, get, ready_count, run_tests, wait_for
from wsclient import WS, CLOSE, TEXT, close_payload

CLIENTS = 6
OPS = 40  # per client: 240 requests or sessions per case, bounded in count


def chunks(n):
    return b"".join(bytes([i % 251]) * 1024 for i in range(n))


def digest(body):
    return ("%d %s" % (len(body), hashlib.sha256(body).hexdigest())).encode()


class Mix:
    """CLIENTS threads, OPS operations each, drawn from `kinds` by a seeded random generator. Collects what went
    wrong (a wrong answer, a reset or timeout where an answer was due) and how many /count answers came."""

    def __init__(self, server, kinds, seed):
        self.server, self.kinds, self.seed = server, kinds, seed
        self.errors, self.counted, self.done = [], 0, 0
        self.lock = threading.Lock()
        self.until = None  # an Event: go on past OPS until it is set (at most 100 times as many)

    def run(self):
        threads = [threading.Thread(target=self.client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return self

    def client(self, i):
        rng = random.Random(self.seed * 100 + i)
        conn = None
        for n in range(OPS * 100):
            if n >= OPS and (self.until is None or self.until.is_set()):
                break
            kind = rng.choice(self.kinds)
            try:
                if conn is None:
                    conn = Conn(self.server)
                keep = getattr(self, kind)(conn, rng)
            except Exception as e:  # a reset, EOF or timeout where an answer was due
                keep = False
                with self.lock:
                    self.errors.append("%s (client %d, op %d): %r" % (kind, i, n, e))
            if not keep and conn is not None:
                conn.close()
                conn = None
            with self.lock:
                self.done += 1
        if conn is not None:
            conn.close()

    @staticmethod
    def reusable(r):
        """Whether the connection may carry the next request: not after "Connection: close" (a stopping worker)."""
        return (r.header("connection") or "").lower() != "close"

    def expect(self, what, got, want):
        if got != want:
            with self.lock:
                self.errors.append("%s: %r, not %r" % (what, got[:200], want[:200]))

    def count(self, conn, rng):
        r = conn.request("GET", "/count")
        self.expect("/count", (r.status, r.body), (200, b"counted"))
        with self.lock:
            self.counted += r.status == 200
        return self.reusable(r)

    def stream(self, conn, rng, path="/stream"):
        n = rng.randint(1, 64)
        r = conn.request("GET", "%s?n=%d" % (path, n))
        self.expect(path, (r.status, r.body), (200, chunks(n)))
        return self.reusable(r)

    def write(self, conn, rng):
        return self.stream(conn, rng, "/write")

    def upload(self, conn, rng):
        body = rng.randbytes(rng.choice([0, 1, 1000, 65536, 200000]))
        r = conn.request("POST", "/upload", [("Content-Type", "application/octet-stream")], body)
        self.expect("/upload", (r.status, r.body), (200, digest(body)))
        return self.reusable(r)

    def vanish_reading(self, conn, rng):
        """Asks for 2 MiB, reads a little of it, and goes: with a reset, or a plain close."""
        conn.send(b"GET /stream?n=2048 HTTP/1.1\r\nHost: t\r\n\r\n")
        conn.read_until(b"\r\n\r\n")
        if rng.random() < 0.5:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    def vanish_uploading(self, conn, rng):
        """Promises 200 000 bytes, sends 10 000, and goes."""
        conn.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n" + rng.randbytes(10000))
        return False

    def websocket(self, conn, rng):
        """A WebSocket session on a connection of its own: messages echoed from the app's threads, then a close, or
        a client that vanishes without one."""
        ws = WS(self.server, "/echo")
        try:
            self.expect("websocket handshake", ws.status, 101)
            for k in range(rng.randint(1, 8)):
                text = "message %d of a client at %.6f" % (k, rng.random())
                ws.text(text)
                f = ws.recv_message()
                self.expect("websocket echo", (f.opcode, f.payload), (TEXT, text.upper().encode()))
            if rng.random() < 0.5:
                ws.send_frame(CLOSE, close_payload(1000))
                self.expect("websocket close", ws.expect_close(reply=False).code, 1000)
        finally:
            ws.close()
        return True


class Watcher:
    """Everything that reads what the worker threads write while they write it: the GIL page's /snapshot and
    /metrics polled every 20 ms, the sampler at 1 kHz, --gil-report every 0.2 s and --gil-trace. Use `args` on the
    server; `with` polls while the clients run."""

    def __init__(self):
        self.port = free_port()
        self.trace = tempfile.mktemp(prefix="ponte-concurrency-trace-")
        self.args = ["--gil-monitor", "127.0.0.1:%d" % self.port, "--gil-sample-hz", "1000", "--gil-report", "0.2",
                     "--gil-trace", self.trace]
        self.stop, self.polls, self.errors = threading.Event(), 0, []
        self.thread = threading.Thread(target=self.poll)

    def poll(self):
        while not self.stop.wait(0.02):
            try:
                snap = json.loads(get(self.port, "/snapshot").body or b"{}")
                metrics = get(self.port, "/metrics")
                if metrics.status != 200 or not isinstance(snap, dict):
                    self.errors.append((metrics.status, snap))
                self.polls += 1
            except Exception as e:
                self.errors.append(repr(e))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)

    def check(self, test):
        """After the server stopped: the page answered throughout, and the trace is whole."""
        test.assertEqual(self.errors, [])
        test.assertGreater(self.polls, 0)
        with open(self.trace) as f:
            events = json.load(f)
        os.unlink(self.trace)
        test.assertTrue(any(e.get("ph") == "X" for e in events), str(events)[:500])  # a request span, at least


WSGI_KINDS = ["count", "count", "stream", "write", "upload", "vanish_reading", "vanish_uploading"]
ASGI_KINDS = ["count", "count", "stream", "upload", "vanish_reading", "vanish_uploading", "websocket"]


class AllAtOnce(unittest.TestCase):
    def check(self, s, mix):
        log = s.stderr()
        self.assertNotIn("Sanitizer", log, log)  # the whole report, before the clients' view of its effects
        self.assertEqual(mix.errors, [], log[-3000:])
        self.assertEqual(mix.done, CLIENTS * OPS)
        self.assertNotIn("] error: ", s.stderr())  # a client that goes is the client's doing: an info line
        self.assertGreater(mix.counted, 0)
        r = Conn(s).request("GET", "/totals")
        self.assertEqual(json.loads(r.body), {"locked": mix.counted, "appended": mix.counted})

    def test_wsgi_worker_threads(self):
        """Four worker threads, which on 3.14t run the app at once, while the GIL view reads what they do."""
        w = Watcher()
        with Server("concurrency:application", "--no-access-log", *w.args, threads=4) as s:
            with w:
                mix = Mix(s, WSGI_KINDS, seed=1).run()
            self.check(s, mix)
        w.check(self)

    def test_wsgi_with_the_gil_probed(self):
        """The same with the GIL, and the probe timing its every move: on 3.14t, asked for with PYTHON_GIL=1."""
        w = Watcher()
        with Server("concurrency:application", "--no-access-log", *w.args, threads=4, env={"PYTHON_GIL": "1"}) as s:
            with w:
                mix = Mix(s, WSGI_KINDS, seed=5).run()
            self.assertIn("GIL probe: exact", s.stderr())
            self.check(s, mix)
        w.check(self)

    def test_wsgi_request_buffering_off(self):
        """Workers that get a request at its head, and read its body while it arrives."""
        with Server("concurrency:application", "--no-access-log", "--request-buffering", "off", threads=4) as s:
            self.check(s, Mix(s, WSGI_KINDS, seed=2).run())

    def test_asgi_with_threads_waking_the_loop(self):
        """ASGI: the loop, and the threads of asyncio.to_thread waking it with their answers; WebSocket sessions."""
        w = Watcher()
        with Server("concurrency:asgi", "--no-access-log", *w.args) as s:
            with w:
                mix = Mix(s, ASGI_KINDS, seed=3).run()
            self.check(s, mix)
        w.check(self)

    def test_asgi_on_three_loops(self):
        """ASGI on --loops 3: three loop threads, each with its asyncio loop, serving the mix on one app's shared
        state (which on 3.14t they run at once), while the GIL view reads what they do."""
        w = Watcher()
        with Server("concurrency:asgi", "--no-access-log", "--loops", "3", *w.args) as s:
            with w:
                mix = Mix(s, ASGI_KINDS, seed=6).run()
            self.check(s, mix)
        w.check(self)

    def test_a_reload_in_the_middle(self):
        """--processes 2 with four threads each: SIGHUP while the clients run. A reload replaces the workers, and
        their counts with them, so the mix leaves /count out; no request in it may fail."""
        kinds = [k for k in WSGI_KINDS if k != "count"]
        with Master("concurrency:application", "--no-access-log", processes=2, threads=4) as s:
            mix = Mix(s, kinds, seed=4)
            mix.until = threading.Event()
            runner = threading.Thread(target=mix.run)
            runner.start()
            self.assertTrue(wait_for(lambda: mix.done >= 20, 60))
            s.signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: ready_count(s) >= 4, 60), s.stderr())
            before = mix.done
            self.assertTrue(wait_for(lambda: mix.done >= before + 20, 60))  # and some more on the new workers
            mix.until.set()
            runner.join(180)
            self.assertFalse(runner.is_alive())
            log = s.stderr()
            self.assertNotIn("Sanitizer", log, log)
            self.assertEqual(mix.errors, [], log[-3000:])
            self.assertEqual(Conn(s).request("GET", "/stream?n=3").body, chunks(3))


if __name__ == "__main__":
    run_tests()
