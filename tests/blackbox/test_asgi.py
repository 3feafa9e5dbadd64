"""ASGI 3.0 over real sockets: the scope, receive() streaming the body, send() streaming the response with
back-pressure, http.disconnect, app errors, the asyncio features apps use, and the HTTP/1.1 behaviour shared with
WSGI (keep-alive, pipelining, chunked, limits)."""

import json
import os
import selectors
import socket
import time
import unittest

from harness import Conn, Server, ServerCase, assert_rss_below, build_request, rss_of, run_tests, wait_for


class ASGI(ServerCase, unittest.TestCase):
    app = "asgi_testapp:app"
    args = ("--max-body-size", "10000000", "--header-timeout", "2")

    def log_has(self, text):
        return wait_for(lambda: text in self.server.stderr(), 5)

    def test_scope(self):
        r = self.conn().request("POST", "/echo/caf%C3%A9?x=1&y=%20", [("X-Custom", "A"), ("x-custom", "B"),
                                                                     ("Content-Type", "text/plain")], b"data")
        doc = json.loads(r.body)
        self.assertEqual(doc["type"], "http")
        self.assertEqual(doc["asgi"], {"version": "3.0", "spec_version": "2.4"})
        self.assertEqual(doc["http_version"], "1.1")
        self.assertEqual(doc["method"], "POST")
        self.assertEqual(doc["scheme"], "http")
        self.assertEqual(doc["path"], "/echo/caf\u00e9")
        self.assertEqual(doc["raw_path"], "/echo/caf%C3%A9")
        self.assertEqual(doc["query_string"], "x=1&y=%20")
        self.assertEqual(doc["root_path"], "")
        self.assertEqual(doc["headers"][:4], [["host", "test"], ["content-length", "4"], ["x-custom", "A"],
                                              ["x-custom", "B"]])
        self.assertEqual(doc["client"], ["127.0.0.1", doc["client"][1]])
        self.assertEqual(doc["server"], ["127.0.0.1", self.server.port])
        self.assertEqual(doc["body"], "data")
        for key, t in (("raw_path", "bytes"), ("query_string", "bytes"), ("headers", "list"), ("path", "str")):
            self.assertEqual(doc["types"][key], t, key)
        # Each scope is a copy of one template (gateway/asgi_scope.c): every key set, in the same order, and
        # nothing an app adds to one scope shows in the next.
        self.assertEqual(list(doc["types"]), ["type", "asgi", "http_version", "method", "scheme", "path", "raw_path",
                                              "query_string", "root_path", "headers", "client", "server"])
        self.assertNotIn("NoneType", doc["types"].values())
        c = self.conn()
        self.assertEqual(json.loads(c.request("GET", "/scope_add").body), {"added": True})
        doc = json.loads(c.request("GET", "/echo").body)
        self.assertNotIn("added_by_app", doc["types"])
        self.assertNotIn("x-added", [k for k, v in doc["headers"]])

    def test_scope_client_is_each_connections_own(self):
        # scope["client"] tuples are kept by port (gateway/asgi_scope.c, 256 slots by the port's low byte): 300
        # connections open at once, so some ports share a slot, each see their own port, twice over.
        conns = [Conn(self.server) for _ in range(300)]
        try:
            wrong = []
            for _ in range(2):
                for c in conns:
                    client = json.loads(c.request("GET", "/echo").body)["client"]
                    if client != ["127.0.0.1", c.sock.getsockname()[1]]:
                        wrong.append((client, c.sock.getsockname()))
            self.assertEqual(wrong, [])
            self.assertGreater(300 - len({c.sock.getsockname()[1] & 0xFF for c in conns}), 0)
        finally:
            for c in conns:
                c.close()

    def test_http10(self):
        c = self.conn()
        r = c.request("GET", "/echo", version="HTTP/1.0")
        self.assertEqual(json.loads(r.body)["http_version"], "1.0")
        self.assertTrue(c.closed_by_peer())

    def test_body_streams_in_events(self):
        c = self.conn()
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.2)
        c.send(b"6\r\n world\r\n0\r\n\r\n")
        doc = json.loads(c.read_response().body)
        self.assertEqual(doc["body"], "hello world")
        self.assertGreaterEqual(doc["body_events"], 2)

    def test_large_body(self):
        body = os.urandom(3_000_000)
        doc = json.loads(self.conn().request("POST", "/echo", body=body).body)
        self.assertEqual(doc["body"].encode("latin-1"), body)

    def test_streamed_response(self):
        r = self.conn().request("GET", "/stream?n=4&size=3")
        self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertEqual(r.body, b"000111222333")

    def test_response_streams_as_sent(self):
        c = self.conn()
        c.send(build_request("GET", "/stream?n=2&size=4&delay=1"))
        c.read_until(b"\r\n\r\n")
        started = time.time()
        c.read_until(b"0000")
        self.assertLess(time.time() - started, 1.8)

    def test_keep_alive_and_pipelining(self):
        c = self.conn()
        c.send(build_request("GET", "/slow?delay=0.2") + b"".join(build_request("GET", "/echo?i=%d" % i)
                                                                   for i in range(10)))
        self.assertEqual(c.read_response().body, b"slept")
        for i in range(10):
            self.assertEqual(json.loads(c.read_response().body)["query_string"], "i=%d" % i)

    def test_concurrent_requests_overlap(self):
        """asyncio runs the waits at once: 20 requests that sleep 0.5 s take about 0.5 s, not 10."""
        conns = [self.conn() for _ in range(20)]
        started = time.time()
        for c in conns:
            c.send(build_request("GET", "/slow?delay=0.5"))
        for c in conns:
            self.assertEqual(c.read_response().body, b"slept")
        self.assertLess(time.time() - started, 3)

    def test_short_timers_do_not_wait_for_other_timers(self):
        """64 connections, each sending its next request as soon as the last is answered (as wrk does), to an app
        that sleeps 10 ms: no request waits anywhere near a second. (A select() timeout that fell due at the top of
        a libuv iteration once let the loop sleep until the next unrelated timer, the one-second log flush.)"""
        req = build_request("GET", "/slow?delay=0.01")
        sel = selectors.DefaultSelector()
        conns = []
        for _ in range(64):
            c = self.server.connect()
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, [b"", time.time()])
            c.sendall(req)
            conns.append(c)
        self.addCleanup(lambda: [c.close() for c in conns])
        worst, answered, end = 0.0, 0, time.time() + 2
        while time.time() < end:
            for key, _ in sel.select(1.0):
                state = key.data
                state[0] += key.fileobj.recv(65536)
                if state[0].endswith(b"slept"):
                    worst = max(worst, time.time() - state[1])
                    answered += 1
                    state[0], state[1] = b"", time.time()
                    key.fileobj.sendall(req)
        self.assertGreater(answered, 640)
        self.assertLess(worst, 0.4, "a 10 ms request took %.3f s" % worst)

    def test_asyncio_features(self):
        doc = json.loads(self.conn().request("GET", "/asyncio?id=abc").body)
        self.assertEqual(doc["gather"], [0, 1, 4, 9, 16])
        self.assertTrue(doc["wait_for_timeout"])
        self.assertEqual(doc["contextvar"], "abc")
        self.assertTrue(doc["executor_other_thread"])
        self.assertTrue(doc["executor_waited"])
        self.assertEqual(doc["threadsafe"], "from-thread")
        self.assertEqual(doc["tcp"], "PING\n")
        self.assertEqual(doc["running_loop_type"], "_UnixSelectorEventLoop")

    def test_disconnect_reaches_receive(self):
        c = Conn(self.server)
        c.send(build_request("GET", "/disconnect?name=d1"))
        c.read_until(b"waiting")
        c.sock.close()
        self.assertTrue(wait_for(lambda: "d1 got http.disconnect" in self.read_events()), self.read_events())
        # told that the client went, the app ends without finishing its response: no error of the app's
        time.sleep(0.2)
        self.assertNotIn('returned without completing its response for "GET /disconnect?name=d1', self.server.stderr())

    def test_receive_after_response_is_disconnect(self):
        self.assertEqual(self.conn().request("GET", "/after-response").body, b"done")
        self.assertTrue(wait_for(lambda: "after-response got http.disconnect" in self.read_events()))

    def test_back_pressure_and_send_after_disconnect(self):
        c = Conn(self.server)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        c.send(build_request("GET", "/flood?name=f1"))
        time.sleep(1.0)
        self.assertEqual(self.conn().request("GET", "/echo").status, 200)   # the loop is not stuck
        rss1 = rss_of(self.server.proc.pid)
        time.sleep(1.0)
        assert_rss_below(self, rss_of(self.server.proc.pid) - rss1, 8 * 1024 * 1024, "RSS grew under a slow reader")
        c.sock.close()
        self.assertTrue(wait_for(lambda: "f1 stopped: ClientDisconnected True" in self.read_events()),
                        self.read_events())

    def test_exception_before_response_is_500(self):
        c = self.conn()
        r = c.request("GET", "/raise-before")
        self.assertEqual(r.status, 500)
        self.assertTrue(self.log_has("RuntimeError: boom before the response"))
        self.assertEqual(c.request("GET", "/echo").status, 200)

    def test_exception_mid_response_cuts_connection(self):
        c = self.conn()
        c.send(build_request("GET", "/raise-after"))
        data = c.read_to_close()
        self.assertIn(b"partial", data)
        self.assertFalse(data.endswith(b"0\r\n\r\n"))
        self.assertTrue(self.log_has("boom mid-response"))

    def test_no_response_is_500(self):
        r = self.conn().request("GET", "/no-response")
        self.assertEqual(r.status, 500)
        self.assertTrue(self.log_has("ASGI app returned without sending a response"))

    def test_return_mid_response_cuts_connection(self):
        c = self.conn()
        c.send(build_request("GET", "/incomplete"))
        data = c.read_to_close()
        self.assertIn(b"half", data)
        self.assertFalse(data.endswith(b"0\r\n\r\n"))
        self.assertTrue(self.log_has("ASGI app returned without completing its response"))

    def test_access_log(self):
        self.conn().request("GET", "/echo?logged=asgi")
        self.assertTrue(wait_for(lambda: '"GET /echo?logged=asgi HTTP/1.1" 200' in self.server.stdout(), 3))

    def test_invalid_events(self):
        self.assertEqual(self.conn().request("GET", "/bad-event").status, 500)
        self.assertTrue(self.log_has("http.response.body before http.response.start"))
        r = self.conn().request("GET", "/bad-header")
        self.assertEqual(r.status, 500)
        self.assertNotIn(b"Injected", r.raw_head)

    def test_header_shapes(self):
        for shape in ("tuples", "lists", "generator", "tuple", "subclass"):
            r = self.conn().request("GET", "/header-shapes?shape=" + shape)
            self.assertEqual((r.status, r.header("x-one"), r.header("x-two"), r.body), (200, "1", "2", b"ok"), shape)

    def test_cancelled_receive(self):
        c = self.conn()
        c.send(b"POST /cancel-receive HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.4)
        c.send(b"hello")
        self.assertEqual(json.loads(c.read_response().body), {"timed_out": True, "body": "hello"})

    def test_waiting_request_survives_garbage_collection(self):
        # The request's task waits on a future only ponte knows of (receive() before the body arrives): a
        # garbage collection meanwhile must not free it ("Task was destroyed but it is pending", no answer ever).
        c = self.conn()
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.2)
        self.assertEqual(self.conn().request("GET", "/collect").body, b"collected")
        c.send(b"hello")
        self.assertEqual(json.loads(c.read_response().body)["body"], "hello")
        self.assertNotIn("Task was destroyed", self.server.stderr())

    def test_app_runs_in_a_task(self):
        doc = json.loads(self.conn().request("GET", "/in-task").body)
        self.assertEqual(doc["task"], "Task")
        self.assertTrue(doc["timed_out"])

    def test_app_task_factory_is_used(self):
        c = self.conn()
        before = json.loads(c.request("GET", "/task-factory?set=1").body)["calls"]
        after = json.loads(c.request("GET", "/task-factory?set=0").body)["calls"]
        self.assertEqual(after, before + 1)     # the second request's task came from the factory
        self.assertEqual(json.loads(c.request("GET", "/task-factory").body)["calls"], after)

    def test_app_task_cancelled_is_500(self):
        c = self.conn()
        self.assertEqual(c.request("GET", "/cancel-self").status, 500)
        self.assertTrue(self.log_has("ended before its response was complete (CancelledError)"), self.server.stderr())
        self.assertEqual(c.request("GET", "/echo").status, 200)

    def test_limits_apply(self):
        c = self.conn()
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 20000000\r\n\r\n")
        self.assertEqual(c.read_response().status, 413)
        c = self.conn()
        c.send(b"GET /echo HTTP/1.1\r\nHost: t\r\n")
        self.assertEqual(c.read_response().status, 408)

    def test_expect_100_continue(self):
        c = self.conn()
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(c.read_response().status, 100)
        c.send(b"hello")
        self.assertEqual(json.loads(c.read_response().body)["body"], "hello")


class ASGILoop(unittest.TestCase):
    def test_idle_server_sleeps_in_one_thread(self):
        """libuv is the only thing that blocks: an idle ASGI server uses no CPU and runs no second loop thread."""
        with Server("asgi_testapp:app", env={"PONTE_TEST_EVENTS": os.devnull}) as s:
            self.assertEqual(Conn(s).request("GET", "/echo").status, 200)
            pid = s.proc.pid
            self.assertEqual(len(os.listdir("/proc/%d/task" % pid)), 1)
            with open("/proc/%d/stat" % pid) as f:
                before = sum(int(x) for x in f.read().split()[13:15])
            time.sleep(2)
            with open("/proc/%d/stat" % pid) as f:
                after = sum(int(x) for x in f.read().split()[13:15])
            self.assertLessEqual(after - before, 5, "CPU ticks used while idle")   # 5 ticks = 50 ms in 2 s

    def test_stalled_body_times_out(self):
        with Server("asgi_testapp:app", "--client-timeout", "1", env={"PONTE_TEST_EVENTS": os.devnull}) as s:
            c = Conn(s)
            c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
            started = time.time()
            data = c.read_to_close()
            self.assertLess(time.time() - started, 5)
            self.assertNotIn(b"200 OK", data)
            self.assertIn("client made no progress", s.stderr())
            c.close()

    def test_graceful_shutdown_with_request_in_flight(self):
        s = Server("asgi_testapp:app", "--graceful-timeout", "10", env={"PONTE_TEST_EVENTS": os.devnull}).start()
        busy = Conn(s)
        busy.send(build_request("GET", "/slow?delay=1"))
        time.sleep(0.3)
        s.signal(__import__("signal").SIGTERM)
        self.assertEqual(busy.read_response().body, b"slept")
        self.assertTrue(busy.closed_by_peer())
        self.assertEqual(s.wait(15), 0)
        s.__exit__(None, None, None)


class ASGIOptions(unittest.TestCase):
    def test_root_path(self):
        with Server("asgi_testapp:app", "--root-path", "/api") as s:
            doc = json.loads(Conn(s).request("GET", "/api/echo").body)
        self.assertEqual(doc["root_path"], "/api")
        self.assertEqual(doc["path"], "/api/echo")

    def test_asgi2_double_callable(self):
        with Server("asgi_testapp:LegacyApp", "--interface", "asgi2") as s:
            self.assertIn("(asgi2, asyncio on the loop thread)", s.stderr())
            doc = json.loads(Conn(s).request("GET", "/legacy").body)
        self.assertEqual(doc["path"], "/legacy")


if __name__ == "__main__":
    run_tests()
