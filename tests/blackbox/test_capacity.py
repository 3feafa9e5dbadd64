"""Running out of room: --max-connections and running out of file descriptors pause accepting (the next clients
wait in the backlog, and the log says so once) and accepting resumes when connections close; --limit-concurrency
answers 503 beyond that many requests in the app."""

import os
import select
import socket
import tempfile
import threading
import time
import unittest

from harness import Conn, Server, run_tests, wait_for


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def served(sock, timeout):
    """Sends a request on an open socket; True if a response comes within timeout."""
    sock.settimeout(timeout)
    try:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        return sock.recv(65536).startswith(b"HTTP/1.1 200")
    except (socket.timeout, OSError):
        return False


def collect_answers(socks):
    """Which sockets got a 200, once no new answer has come for a second (10 s at most)."""
    answered = [False] * len(socks)
    deadline = time.time() + 10
    while time.time() < deadline:
        pending = [s for s, ok in zip(socks, answered) if not ok]
        ready = select.select(pending, [], [], 1.0)[0] if pending else []
        if not ready:
            break
        for s in ready:
            answered[socks.index(s)] = s.recv(65536).startswith(b"HTTP/1.1 200")
    return answered


class Capacity(unittest.TestCase):
    def test_max_connections_pauses_accepting(self):
        with Server("testapp:application", "--max-connections", "3", threads=2) as srv:
            held = [Conn(srv) for _ in range(3)]
            for c in held:
                self.assertEqual(c.request("GET", "/echo").status, 200)
            waiting = socket.create_connection(("127.0.0.1", srv.port), timeout=3)     # the backlog takes it
            self.assertFalse(served(waiting, 0.5), "a fourth connection was served past --max-connections 3")
            held[0].close()
            self.assertTrue(served(waiting, 5), "accepting did not resume when a connection closed")
            waiting.close()
            for c in held[1:]:
                c.close()
            log = srv.stderr()
        self.assertEqual(log.count("not accepting for now: --max-connections reached"), 1, log)
        self.assertIn("accepting again", log)

    def test_near_the_descriptor_limit(self):
        # ponte counts what ulimit -n leaves it once it has started, and stops accepting before accept() would fail
        # (libuv then accepts and resets every new client): the rest wait in the backlog, the log says so once,
        # and each one is served as soon as a connection closes.
        with Server("testapp:application", threads=2) as probe:
            base = open_fds(probe.proc.pid)
        srv = Server("testapp:application", threads=2)
        srv.args = ["prlimit", "--nofile=%d" % (base + 16), "--"] + srv.args
        with srv:
            socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=3) for _ in range(30)]
            for s in socks:
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
            answered = collect_answers(socks)
            self.assertGreaterEqual(sum(answered), 4, answered)
            self.assertLess(sum(answered), 30, "every connection was served: the limit did not bite")
            self.assertLessEqual(open_fds(srv.proc.pid), base + 16)
            for s, ok in zip(socks, answered):
                if ok:
                    s.close()
            for s, ok in zip(socks, answered):
                if not ok:
                    s.settimeout(5)
                    self.assertTrue(s.recv(65536).startswith(b"HTTP/1.1 200"),
                                    "a client waiting in the backlog was not served")
                    s.close()
            self.assertTrue(wait_for(lambda: "accepting again" in srv.stderr(), 5))
            log = srv.stderr()
        self.assertEqual(log.count("not accepting for now: near the limit of file descriptors"), 1, log)
        self.assertNotIn("Too many open files", log)

    def test_limit_concurrency_answers_503(self):
        events = tempfile.NamedTemporaryFile(prefix="ponte-events-", delete=False).name
        self.addCleanup(os.unlink, events)
        with Server("testapp:application", "--limit-concurrency", "2", threads=4,
                    env={"PONTE_TEST_EVENTS": events}) as srv:
            results = []

            def slow():
                c = Conn(srv)
                results.append(c.request("GET", "/slow?delay=1").status)
                c.close()

            threads = [threading.Thread(target=slow) for _ in range(2)]
            for t in threads:
                t.start()
            self.assertTrue(wait_for(lambda: open(events).read().count("slow start") == 2, 10))
            c = Conn(srv)
            r = c.request("GET", "/echo")       # both slow ones are with the app: a third is refused
            c.close()
            for t in threads:
                t.join()
            self.assertEqual(r.status, 503)
            self.assertEqual(sorted(results), [200, 200])
            c = Conn(srv)
            self.assertEqual(c.request("GET", "/echo").status, 200)     # below the limit again
            c.close()


if __name__ == "__main__":
    run_tests()
