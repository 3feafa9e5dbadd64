"""Apps that break: an exception before or after the head, wrong return types, invalid headers. ponte answers 500
(or cuts the connection once the head is out), logs why with a traceback, calls close(), and serves everyone else."""

import time
import unittest

from harness import ServerCase, run_tests


class ErrorsBase(ServerCase):
    app = "badapps:application"
    args = ("--graceful-timeout", "3")

    def log_has(self, text, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.server.stderr():
                return True
            time.sleep(0.05)
        return False

    def expect_500(self, route, log_text):
        c = self.conn()
        r = c.request("GET", "/" + route)
        self.assertEqual(r.status, 500, r)
        self.assertEqual(r.body, b"Internal Server Error")
        self.assertTrue(self.log_has(log_text), self.server.stderr())
        # The connection is still good (the error was cleanly framed), and so is the server.
        self.assertEqual(c.request("GET", "/exc_info_replace").status, 503)

    def test_raise_before_start_response(self):
        self.expect_500("raise_before", "RuntimeError: boom before start_response")
        self.assertTrue(self.log_has('error in WSGI app for "GET /raise_before HTTP/1.1"'))

    def test_raise_in_iterable_before_body(self):
        self.expect_500("raise_after_start", "boom in the iterable before any body")
        self.assertIn("close after-start", self.read_events())

    def test_raise_mid_body_cuts_connection(self):
        c = self.conn()
        c.send(b"GET /raise_mid_body HTTP/1.1\r\nHost: t\r\n\r\n")
        head = c.read_until(b"\r\n\r\n")
        self.assertIn(b"200 OK", head)
        rest = c.read_to_close()      # never hangs: the connection is closed
        self.assertIn(b"first chunk", rest)
        self.assertFalse(rest.endswith(b"0\r\n\r\n"), "a cut chunked body must not look complete")
        self.assertTrue(self.log_has("boom after the first chunk"))
        self.assertIn("close mid-body", self.read_events())

    def test_returns_str_items(self):
        self.expect_500("returns_str", "must yield bytes, not str")

    def test_returns_none(self):
        self.expect_500("returns_none", "must return an iterable of bytes, not NoneType")

    def test_no_start_response(self):
        self.expect_500("no_start_response", "before calling start_response()")

    def test_header_injection_rejected(self):
        c = self.conn()
        r = c.request("GET", "/bad_header_crlf")
        self.assertEqual(r.status, 500)
        self.assertNotIn(b"Injected", r.raw_head)
        self.assertTrue(self.log_has("invalid character (CR, LF or control)"))

    def test_bad_header_name(self):
        self.expect_500("bad_header_name", "invalid character in header name")

    def test_bad_status(self):
        self.expect_500("bad_status", "status must look like '200 OK'")

    def test_cr_lf_nul_never_written(self):
        # CR, LF or NUL anywhere in what the app gives for the head: refused with 500 and logged, never written.
        for route in ("status_injection", "header_nul", "header_bare_lf", "header_name_crlf"):
            with self.subTest(route=route):
                c = self.conn()
                r = c.request("GET", "/" + route)
                self.assertEqual((r.status, r.body), (500, b"Internal Server Error"))
                self.assertNotIn(b"Injected", r.raw_head + r.body)
                self.assertNotIn(b"\x00", r.raw_head)

    def test_error_page_never_carries_a_traceback(self):
        c = self.conn()
        r = c.request("GET", "/raise_before")
        self.assertEqual(r.body, b"Internal Server Error")
        self.assertNotIn(b"Traceback", r.raw_head + r.body)
        self.assertNotIn(b"boom", r.raw_head + r.body)

    def test_leaked_threads_cost_nothing(self):
        for _ in range(5):
            self.assertEqual(self.conn().request("GET", "/leak_thread").body, b"leaked")
        self.assertEqual(self.conn().request("GET", "/exc_info_replace").status, 503)
        # tearDownClass stops the server and requires it to exit 0: the leaked threads do not hold it.

    def test_start_response_twice(self):
        self.expect_500("twice", "called a second time without exc_info")

    def test_exc_info_replaces_status(self):
        r = self.conn().request("GET", "/exc_info_replace")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.body, b"replaced")

    def test_exc_info_after_head_reraises(self):
        c = self.conn()
        c.send(b"GET /exc_info_too_late HTTP/1.1\r\nHost: t\r\n\r\n")
        data = c.read_to_close()
        self.assertIn(b"200 OK", data)
        self.assertNotIn(b"unreachable", data)
        self.assertTrue(self.log_has("ValueError: too late"))

    def test_body_longer_than_content_length(self):
        c = self.conn()
        r = c.request("GET", "/too_long")
        self.assertEqual(r.body, b"12345")
        self.assertTrue(c.closed_by_peer())
        self.assertTrue(self.log_has("more than its Content-Length"))

    def test_body_shorter_than_content_length(self):
        c = self.conn()
        c.send(b"GET /too_short HTTP/1.1\r\nHost: t\r\n\r\n")
        data = c.read_to_close()
        self.assertTrue(data.endswith(b"12345"))

    def test_system_exit_is_an_app_error(self):
        self.expect_500("sys_exit", "SystemExit")

    def test_start_response_and_write_kept_past_their_request(self):
        self.assertEqual(self.conn().request("GET", "/keep_callables").body, b"kept")
        for _ in range(3):  # whichever thread, and however many requests later, the kept ones are finished
            r = self.conn().request("GET", "/call_kept")
            self.assertEqual(r.body.decode().split("\n"), [
                "start_response: start_response() called after its request finished",
                "write: write() called after its request finished"])

    def test_one_list_returned_to_every_request(self):
        conns = [self.conn() for _ in range(4)]
        for _ in range(25):
            for c in conns:
                c.send(b"GET /shared_list HTTP/1.1\r\nHost: t\r\n\r\n")
            for c in conns:
                r = c.read_response()
                self.assertEqual((r.status, r.body), (200, b"one list for every request"))


class ErrorsWorkers(ErrorsBase, unittest.TestCase):
    threads = 4

    def test_a_client_gone_mid_body_is_an_info_line(self):
        """The client goes half way through its body while the app reads it (a worker has the request once 64 KiB
        arrived): the read raises OSError, which the app lets pass. That is the client's doing: one info line, not
        an error with a traceback."""
        c = self.conn()
        c.send(b"POST /read_whole_body HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100000)
        time.sleep(0.3)
        c.close()
        self.assertTrue(self.log_has('the client went while the app ran "POST /read_whole_body" (OSError: client disconnected '
                                     'before sending the whole request body)'), self.server.stderr()[-2000:])
        self.assertNotIn('error in WSGI app for "POST /read_whole_body', self.server.stderr())

    def test_hanging_app_does_not_block_others(self):
        c = self.conn()
        c.send(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(5):
            self.assertEqual(self.conn().request("GET", "/exc_info_replace").status, 503)


class ErrorsLoopThread(ErrorsBase, unittest.TestCase):
    threads = 0


if __name__ == "__main__":
    run_tests()
