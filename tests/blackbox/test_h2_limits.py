"""HTTP/2's errors, bounds and attacks (server/h2.c, h2_stream.c, and libnghttp2 under them): RFC 9113's errors,
each case citing its section (frames in, the GOAWAY or RST_STREAM code out); header lists and HPACK bombs, body
sizes, --limit-concurrency per stream, SETTINGS_MAX_CONCURRENT_STREAMS, rapid reset (CVE-2023-44487), CONTINUATION
floods (CVE-2024-27316's class), PING and SETTINGS floods from a client that does not read, a window never opened,
idle and half-sent connections; each with the server still serving others, and its memory bounded."""

import socket
import time
import unittest

from h2client import (CANCEL, CONTINUATION, DATA, END_HEADERS, END_STREAM, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR,
                      HEADERS, NO_ERROR, PING, PREFACE, PROTOCOL_ERROR, REFUSED_STREAM, RST_STREAM, SETTINGS,
                      WINDOW_UPDATE, Raw, closed_or_goaway, frame, rst_code, settings_frame)
from harness import assert_rss_below, rss_of, run_tests
from test_h2 import H2Case


class Errors(H2Case, unittest.TestCase):
    """RFC 9113's connection and stream errors: frames in, the code out. nghttp2 finds them; the server must keep
    serving everyone else."""

    app = "h2_app:app"
    threads = None

    def goaway(self, data, code, section):
        r = self.raw()
        r.send(data)
        self.assertEqual(closed_or_goaway(r), code, section)
        self.assert_serving()

    def reset(self, fields, code, section, body=None):
        r = self.raw()
        r.headers(1, fields, END_HEADERS | (0 if body is not None else END_STREAM))
        if body is not None:
            r.send(body)
        f = r.until(RST_STREAM)
        self.assertIsNotNone(f, section)
        self.assertEqual((f[2], rst_code(f)), (1, code), section)
        # the connection goes on
        r.headers(3, r.request_fields())
        f = r.until(HEADERS)
        self.assertEqual(r.decode(f[3])[":status"], "200", section)

    def test_bad_preface(self):
        # 3.4: a preface that is not the client's is a connection error; the connection just closes
        r = self.raw(preface=False)
        r.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings_frame())
        self.assertIsNone(closed_or_goaway(r))
        self.assert_serving()

    def test_data_on_stream_0(self):
        self.goaway(frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR, "6.1")

    def test_even_stream_id(self):
        r = Raw(self.server.connect())
        self.addCleanup(r.sock.close)
        r.headers(2, r.request_fields())
        self.assertEqual(closed_or_goaway(r), PROTOCOL_ERROR, "5.1.1")

    def test_stream_id_going_back(self):
        # 5.1.1 makes a stream id lower than one used before a connection error; nghttp2 cannot tell such a stream
        # from one it closed and forgot, and ignores its HEADERS (RFC 9113 5.1 lets it for streams it reset): the
        # request is not served, and the connection goes on.
        r = self.raw()
        r.headers(5, r.request_fields())
        r.headers(3, r.request_fields())
        r.headers(7, r.request_fields())
        served = set()
        while 7 not in served:
            f = r.until(HEADERS)
            served.add(f[2])
        self.assertEqual(served, {5, 7})

    def test_frame_over_max_frame_size(self):
        r = self.raw()
        r.headers(1, r.request_fields("/upload", "POST"), END_HEADERS)
        r.send(frame(DATA, 0, 1, b"x" * 16385))
        self.assertEqual(closed_or_goaway(r), FRAME_SIZE_ERROR, "4.2")

    def test_ping_of_the_wrong_length(self):
        self.goaway(frame(PING, 0, 0, b"1234567"), FRAME_SIZE_ERROR, "6.7")

    def test_window_update_of_zero(self):
        self.goaway(frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), PROTOCOL_ERROR, "6.9")

    def test_initial_window_too_large(self):
        self.goaway(settings_frame([(4, 1 << 31)]), FLOW_CONTROL_ERROR, "6.5.2")

    def test_continuation_without_headers(self):
        r = self.raw()
        r.send(frame(CONTINUATION, END_HEADERS, 1, r.enc.encode(r.request_fields())))
        self.assertEqual(closed_or_goaway(r), PROTOCOL_ERROR, "6.10")

    def test_unknown_frames_and_settings_are_ignored(self):
        r = self.raw()
        r.send(frame(0x77, 0xff, 0, b"anything") + settings_frame([(0x99, 7)]) + frame(PING, 0, 0, b"12345678"))
        f = r.until(PING)
        self.assertEqual((f[1], f[3]), (1, b"12345678"), "5.5, 6.5.2: ignored, and the PING answered")

    def test_uppercase_header_name(self):
        self.reset(self.raw().request_fields() + [("X-Upper", "1")], PROTOCOL_ERROR, "8.2.1")

    def test_connection_specific_header(self):
        self.reset(self.raw().request_fields() + [("connection", "keep-alive")], PROTOCOL_ERROR, "8.2.2")

    def test_missing_path(self):
        self.reset([(":method", "GET"), (":scheme", "http"), (":authority", "localhost")], PROTOCOL_ERROR, "8.3.1")

    def test_body_short_of_its_content_length(self):
        self.reset(self.raw().request_fields("/upload", "POST") + [("content-length", "5")], PROTOCOL_ERROR,
                   "8.1.1", body=frame(DATA, END_STREAM, 1, b"abc"))


class Bounds(H2Case, unittest.TestCase):
    app = "h2_app:app"
    threads = None
    args = ("--max-header-size", "8192", "--max-headers", "20", "--max-body-size", "100000", "--client-timeout", "2",
            "--header-timeout", "2", "--keep-alive-timeout", "2")

    def test_settings_say_the_bounds(self):
        c = self.h2()
        c.wait(lambda: c.remote_settings)
        self.assertEqual(c.remote_settings.get(3), 100)   # SETTINGS_MAX_CONCURRENT_STREAMS
        self.assertEqual(c.remote_settings.get(6), 8192)  # SETTINGS_MAX_HEADER_LIST_SIZE

    def test_header_list_too_large_and_too_many(self):
        c = self.h2()
        self.assertEqual(c.get("/", headers=[("x-big", "v" * 9000)]).status, 431)
        self.assertEqual(c.get("/", headers=[("x-%d" % i, "1") for i in range(25)]).status, 431)
        self.assertEqual(c.get("/").status, 200)

    def test_hpack_bomb(self):
        # One 4 KiB field in the dynamic table, then referenced 40 times: 160 KiB decoded from a few hundred bytes.
        r = self.raw()
        first = r.enc.encode(r.request_fields() + [("x-bomb", "b" * 4000)])
        r.headers(1, first, encode=False)
        self.assertEqual(r.decode(r.until(HEADERS)[3])[":status"], "200")
        bomb = r.enc.encode(r.request_fields() + [("x-bomb", "b" * 4000)] * 40)
        self.assertLess(len(bomb), 200)
        r.headers(3, bomb, encode=False)
        f = r.until(HEADERS)
        self.assertEqual((f[2], r.decode(f[3])[":status"]), (3, "431"))
        self.assert_serving()

    def test_body_over_max_body_size(self):
        c = self.h2()
        r = c.get("/upload", method="POST", headers=[("content-length", "200000")], end=False)
        self.assertEqual(r.status, 413)
        sid = c.request("/upload", method="POST", end=False)
        c.send_body(sid, b"x" * 50000, end=False)
        try:
            c.send_body(sid, b"x" * 60000)
        except Exception:  # the server may reset the stream while we send
            pass
        r = c.response(sid)
        self.assertTrue(r.status == 413 or r.reset == CANCEL, (r.status, r.reset))
        self.assertEqual(c.get("/").status, 200)

    def test_window_never_opened(self):
        # The client's window is 0 and stays so: the response cannot move, and --client-timeout ends it.
        c = self.h2(settings={4: 0})
        c.request("/big?100000")
        t = time.time()
        with self.assertRaises(ConnectionError):
            c.wait(lambda: False, timeout=15)
        self.assertLess(time.time() - t, 12)
        self.assertIn("no progress for --client-timeout", self.server.stderr())
        self.assert_serving()

    def test_one_stalled_stream_among_live_ones(self):
        # --client-timeout per stream: the client opens no window for one stream, and keeps the others moving. That
        # stream is reset (CANCEL) once it has waited past the timeout; the connection and its other streams go on.
        c = self.h2(settings={4: 0})
        c.auto_window = False
        stalled = c.request("/big?100000")
        t = time.time()
        while c.streams[stalled].reset is None and time.time() - t < 10:
            sid = c.request("/")
            c.conn.increment_flow_control_window(1 << 20, stream_id=sid)
            c.conn.increment_flow_control_window(1 << 20)
            c.flush()
            self.assertEqual(c.response(sid).status, 200)
            time.sleep(0.2)
        self.assertEqual(c.streams[stalled].reset, CANCEL)
        self.assertGreater(time.time() - t, 1.5)
        self.assertIn("HTTP/2 stream %d: no progress for --client-timeout: reset" % stalled, self.server.stderr())
        sid = c.request("/")
        c.conn.increment_flow_control_window(1 << 20, stream_id=sid)
        c.flush()
        self.assertEqual(c.response(sid).status, 200)  # the connection goes on

    def test_idle_and_half_sent(self):
        c = self.h2()
        self.assertEqual(c.get("/").status, 200)
        with self.assertRaises(ConnectionError):  # --keep-alive-timeout: GOAWAY, then the end
            c.wait(lambda: False, timeout=15)
        self.assertEqual(c.goaway[0], NO_ERROR)
        r = Raw(self.server.connect(), ack=False)  # an acknowledgement would break the header block
        self.addCleanup(r.sock.close)
        r.headers(1, r.request_fields(), END_STREAM)  # no END_HEADERS, and nothing more
        closed_or_goaway(r, timeout=15)
        self.assertIn("no complete header block within --header-timeout", self.server.stderr())


class LimitConcurrency(H2Case, unittest.TestCase):
    app = "h2_app:app"
    threads = None
    args = ("--limit-concurrency", "1",)

    def test_each_stream_counts(self):
        c = self.h2()
        slow = c.request("/slow?1")
        time.sleep(0.3)
        self.assertEqual(c.get("/").status, 503)
        self.assertEqual(c.response(slow).status, 200)


class Attacks(H2Case, unittest.TestCase):
    """Each with the server's memory bounded, and another client served meanwhile."""

    app = "h2_app:app"
    threads = None

    def test_max_concurrent_streams(self):
        # 5.1.2: a stream over the limit the server advertised. Before the client acknowledged the SETTINGS that
        # said it, the stream is refused (REFUSED_STREAM) and the others served; after, nghttp2 makes it a
        # connection error (PROTOCOL_ERROR), as a client that broke a limit it agreed to.
        r = Raw(self.server.connect(), ack=False)
        self.addCleanup(r.sock.close)
        for sid in range(1, 203, 2):
            r.headers(sid, r.request_fields("/slow?0.5"))
        f = r.until(RST_STREAM)
        self.assertEqual((f[2], rst_code(f)), (201, REFUSED_STREAM))
        served = 0
        while served < 100:
            f = r.until(DATA)
            served += bool(f[1] & END_STREAM)
        r = self.raw()
        r.until(SETTINGS)
        for sid in range(1, 203, 2):
            r.headers(sid, r.request_fields("/slow?0.5"))
        self.assertEqual(closed_or_goaway(r), PROTOCOL_ERROR)
        self.assert_serving()

    def test_rapid_reset(self):
        # CVE-2023-44487: open a stream and reset it at once, thousands of times. nghttp2 counts the resets; past
        # a burst and a rate the connection ends.
        r = self.raw()
        hdrs = r.enc.encode(r.request_fields("/slow?5"))
        code = None
        before = rss_of(self.server.proc.pid)
        try:
            for i in range(1, 20001, 2):
                r.send(frame(HEADERS, END_HEADERS | END_STREAM, i, hdrs) + frame(RST_STREAM, 0, i, b"\0\0\0\x08"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        code = closed_or_goaway(r, timeout=20)
        self.assertIsNotNone(code)
        self.assertNotEqual(code, NO_ERROR)
        assert_rss_below(self, rss_of(self.server.proc.pid) - before, 64 << 20, "memory after the resets")
        self.assert_serving()

    def test_continuation_flood(self):
        # CVE-2024-27316's class: a header block that never ends, CONTINUATION after CONTINUATION.
        r = self.raw()
        r.headers(1, r.request_fields(), 0)
        try:
            for _ in range(20000):
                r.send(frame(CONTINUATION, 0, 1, r.enc.encode([("x-a", "b" * 100)])))
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertNotEqual(closed_or_goaway(r), NO_ERROR)
        self.assert_serving()

    def flood(self, one):
        # A client that sends and never reads: the acknowledgements pile up, and the server ends the connection
        # instead of keeping them.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", self.server.port))
        self.addCleanup(s.close)
        s.sendall(PREFACE + settings_frame())
        s.settimeout(5)
        before = rss_of(self.server.proc.pid)
        batch = one * 1000
        ended = False
        for _ in range(2000):
            try:
                s.sendall(batch)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                ended = True
                break
        self.assertTrue(ended, "the server took 2 million frames without ending the connection")
        assert_rss_below(self, rss_of(self.server.proc.pid) - before, 32 << 20, "memory after the flood")
        self.assert_serving()

    def test_ping_flood(self):
        self.flood(frame(PING, 0, 0, b"12345678"))

    def test_settings_flood(self):
        self.flood(settings_frame([(4, 65535)]))



if __name__ == "__main__":
    run_tests()
