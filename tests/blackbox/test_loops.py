"""--loops N: an ASGI app served from N event loops, each on its own thread, all accepting on the same sockets.

Which loop takes a connection is the kernel's choice. The tests make it certain instead: a request to /block stops
its loop (a synchronous wait in the app), so every connection opened meanwhile is taken by another loop, and
/release (answered by one of those) lets it go. Checked: a blocked loop leaves the others serving; lifespan runs
once, before any loop listens and after every loop has ended, its state seen on every loop; the limits count the
requests of every loop; SIGTERM finishes what each loop has in flight; WebSockets on any loop; --loops under
--processes; and what --loops refuses. The app is tests/blackbox/apps/loops_app.py; test_concurrency.py runs its mix on
three loops too, and test_free_threaded.py checks that two loops run Python at once without a GIL."""

import json
import os
import signal
import tempfile
import threading
import unittest

from harness import Conn, Master, Server, run_tests, wait_for
from wsclient import WS, TEXT


def whoami(server):
    return json.loads(Conn(server.connect()).request("GET", "/whoami").body)


class Blocked:
    """A request to /block on a connection of its own, in a thread: its loop is stopped until release()."""

    def __init__(self, server, mark_path, seconds=10):
        self.server, self.mark_path = server, mark_path
        self.response = None
        self.conn = Conn(server.connect(timeout=seconds + 10))
        self.thread = threading.Thread(target=self._run, args=(seconds,))
        self.thread.start()
        assert wait_for(lambda: self.marked() is not None, 10), server.stderr()
        self.loop_thread = self.marked()

    def marks(self):
        with open(self.mark_path) as f:
            return [int(x) for x in f.read().split()]

    def marked(self):
        marks = self.marks()
        return marks[-1] if marks else None

    def _run(self, seconds):
        self.response = self.conn.request("GET", "/block?%g" % seconds)

    def release(self):
        r = Conn(self.server.connect()).request("GET", "/release")
        self.thread.join(30)
        return r


class Loops(unittest.TestCase):
    def setUp(self):
        fd, self.mark = tempfile.mkstemp(prefix="ponte-loops-mark-")
        os.close(fd)
        self.addCleanup(os.unlink, self.mark)
        fd, self.lifespan_log = tempfile.mkstemp(prefix="ponte-loops-lifespan-")
        os.close(fd)
        self.addCleanup(os.unlink, self.lifespan_log)

    def server(self, *args, loops=3, cls=Server, **kw):
        env = {"PONTE_TEST_MARK": self.mark, "PONTE_TEST_LIFESPAN_LOG": self.lifespan_log}
        return cls("loops_app:app", "--loops", str(loops), "--no-access-log", *args, env=env, **kw)

    def test_a_blocked_loop_leaves_the_others_serving(self):
        with self.server(loops=3) as s:
            self.assertIn("serving loops_app:app (asgi, asyncio on 3 loop threads)", s.stderr())
            blocked = Blocked(s, self.mark)
            others = [whoami(s)["thread"] for _ in range(8)]  # each on a new connection, while the loop is stopped
            self.assertNotIn(blocked.loop_thread, others)
            r = blocked.release()
            self.assertEqual(r.status, 200)
            self.assertNotEqual(json.loads(r.body)["thread"], blocked.loop_thread)
            self.assertEqual(blocked.response.status, 200)
            self.assertEqual(json.loads(blocked.response.body), {"thread": blocked.loop_thread, "released": True})
            self.assertEqual(whoami(s)["token"], whoami(s)["token"])  # and the blocked loop serves again

    def test_lifespan_runs_once_and_its_state_is_seen_on_every_loop(self):
        with self.server(loops=3) as s:
            blocked = Blocked(s, self.mark)
            other = whoami(s)
            blocked.release()
            mine = json.loads(blocked.conn.request("GET", "/whoami").body)  # on the freed loop's connection
            self.assertEqual(mine["thread"], blocked.loop_thread)
            self.assertNotEqual(other["thread"], mine["thread"])
            self.assertTrue(other["token"])
            self.assertEqual(other["token"], mine["token"])
        with open(self.lifespan_log) as f:
            lines = [line.split()[0] for line in f.read().splitlines()]
        self.assertEqual(lines, ["startup", "shutdown"])  # once each, shutdown after every loop has ended

    def test_limit_concurrency_counts_every_loop(self):
        with self.server("--limit-concurrency", "1", loops=2) as s:
            blocked = Blocked(s, self.mark, seconds=2)
            r = Conn(s.connect()).request("GET", "/whoami")  # the other loop, its own app empty
            self.assertEqual(r.status, 503)
            blocked.thread.join(30)
            self.assertEqual(json.loads(blocked.response.body)["released"], False)  # the 2 s ran out
            self.assertEqual(Conn(s.connect()).request("GET", "/whoami").status, 200)

    def test_sigterm_finishes_each_loops_requests(self):
        with self.server(loops=2) as s:
            blocked = Blocked(s, self.mark, seconds=1.5)
            busy = Conn(s.connect())
            busy.send(b"GET /sleep?1 HTTP/1.1\r\nHost: t\r\n\r\n")  # on the other loop
            self.assertTrue(wait_for(lambda: len(blocked.marks()) == 2, 10))  # in the app
            s.signal(signal.SIGTERM)
            r = busy.read_response()
            self.assertEqual(r.status, 200)
            blocked.thread.join(30)
            self.assertEqual(blocked.response.status, 200)
            self.assertNotEqual(json.loads(r.body)["thread"], blocked.loop_thread)
            self.assertEqual(s.wait(30), 0)
            log = s.stderr()
            self.assertIn("all connections closed", log)
            self.assertIn("stopped", log)

    def test_websockets_on_every_loop(self):
        with self.server(loops=2) as s:
            blocked = Blocked(s, self.mark)
            ws = WS(s, "/ws")
            self.assertEqual(ws.status, 101)
            other = int(ws.recv_message().payload)
            self.assertNotEqual(other, blocked.loop_thread)
            blocked.release()
            ws2 = WS(s, "/ws")  # either loop now
            int(ws2.recv_message().payload)
            for w in (ws, ws2):
                w.text("hello")
                f = w.recv_message()
                self.assertEqual((f.opcode, f.payload), (TEXT, b"HELLO"))
                w.close()

    def test_under_processes(self):
        """Two workers of two loops each: a loop blocked in one worker leaves three loops serving; every worker
        ran its own lifespan, once."""
        with self.server(loops=2, processes=2, cls=Master) as s:
            blocked = Blocked(s, self.mark, seconds=1)  # /release could reach the other worker: it times out
            for _ in range(6):
                self.assertTrue(whoami(s)["token"])
            blocked.thread.join(30)
            self.assertEqual(blocked.response.status, 200)
        with open(self.lifespan_log) as f:
            lines = sorted(line.split()[0] for line in f.read().splitlines())
        self.assertEqual(lines, ["shutdown", "shutdown", "startup", "startup"])

    def test_what_loops_refuses(self):
        s = Server("testapp:application", "--loops", "2", threads=2)
        with self.assertRaises(RuntimeError) as e:
            s.start()
        self.assertIn("--loops runs ASGI apps on several event loops; this app (wsgi, 2 worker threads) runs its "
                      "Python on --threads", str(e.exception))
        s = Server("loops_app:app", "--loops", "2", "--processes", "1", "--timeout", "5")
        with self.assertRaises(RuntimeError) as e:
            s.start()
        self.assertIn("--timeout watches one loop per worker: it cannot be used with --loops", str(e.exception))
        s = Server("loops_app:app", "--loops", "0")
        with self.assertRaises(RuntimeError):
            s.start()


if __name__ == "__main__":
    run_tests()
