"""The Autobahn testsuite's case families 1-7, 9 (at sizes up to 1 MiB), 10 and 12-13, ported in our own words:
for each case, the bytes a client sends and what the server must answer, the way NGINX Unit keeps its
test_asgi_websockets.py. The app echoes every message (ws_app.py, /echo). Case numbers are Autobahn's where a case
maps onto one; "fail N" means the server must close with code N and end the TCP connection."""

import time
import unittest
import zlib

from harness import ServerCase, run_tests
from wsclient import BINARY, CLOSE, CONT, PING, PONG, TEXT, WS, close_payload, deflate, frame

OK = None  # the case ends with a normal closing handshake


class Case:
    """A connection that sends frames (optionally in small pieces, or with pauses between them) and checks what
    comes back: the frames expected, then a close with `close` (OK: we close with 1000 and expect it echoed)."""

    def __init__(self, test, extensions=None):
        self.test = test
        self.w = WS(test.server, "/echo", extensions=extensions)
        test.addCleanup(self.w.close)
        test.assertEqual(self.w.status, 101)
        self.inflater = zlib.decompressobj(-15)

    def send(self, *frames, chop=None, pause=0):
        for f in frames:
            step = chop or len(f) or 1
            for i in range(0, max(len(f), 1), step):
                self.w.send(f[i:i + step])
                if pause:
                    time.sleep(pause)

    def message(self, f):
        if f.rsv == 4:
            return self.inflater.decompress(f.payload + b"\x00\x00\xff\xff")
        self.test.assertEqual(f.rsv, 0, "reserved bits set on a server frame")
        return f.payload

    def expect(self, *frames, close=OK):
        """The frames expected, then the close. When the server must fail the connection, the messages before the
        bad frame may or may not have been echoed first (the app answers on its own time, and a failing server
        sends nothing more): those are allowed, in order, not required (Autobahn's "non-strict")."""
        if close is OK:
            for opcode, payload in frames:
                f = self.w.recv_frame()
                self.test.assertEqual((f.opcode, self.message(f)), (opcode, payload))
                self.test.assertEqual(f.fin, 1)
            self.w.send_frame(CLOSE, close_payload(1000))
            f = self.w.recv_frame()
        else:
            allowed = list(frames)
            f = self.w.recv_frame()
            while f.opcode != CLOSE:
                self.test.assertTrue(allowed, "%r before the close" % f)
                self.test.assertEqual((f.opcode, self.message(f)), allowed.pop(0))
                f = self.w.recv_frame()
        self.test.assertEqual(f.opcode, CLOSE, f)
        self.test.assertEqual(f.code, 1000 if close is OK else close, f.reason)
        self.test.assertTrue(self.w.closed_by_peer(5), "the TCP connection stayed open after the close")


class Autobahn(ServerCase):
    app = "ws_app:app"
    args = ("--ws-max-size", str(2 << 20), "--ws-ping-interval", "0")

    def case(self, extensions=None):
        return Case(self, extensions)


class Framing1(Autobahn, unittest.TestCase):
    """1.1 text and 1.2 binary messages of the lengths where the frame header changes shape."""

    def test_lengths(self):
        for op in (TEXT, BINARY):
            for n in (0, 125, 126, 127, 128, 65535, 65536):
                with self.subTest(op=op, n=n):
                    payload = b"*" * n if op == TEXT else bytes([0xFE]) * n
                    c = self.case()
                    c.send(frame(op, payload))
                    c.expect((op, payload))

    def test_chopped_writes(self):  # 1.1.8 / 1.2.8: a 64 KiB message written 997 bytes at a time
        for op in (TEXT, BINARY):
            with self.subTest(op=op):
                c = self.case()
                c.send(frame(op, b"*" * 65536), chop=997)
                c.expect((op, b"*" * 65536))


class Pings2(Autobahn, unittest.TestCase):
    def test_pings(self):
        cases = [("2.1 empty", b""), ("2.2 text", b"Hello, world!"), ("2.3 binary", bytes([0, 0xFF, 0xFE, 0xFD])),
                 ("2.4 125 bytes", b"\xfe" * 125)]
        for name, payload in cases:
            with self.subTest(name):
                c = self.case()
                c.send(frame(PING, payload))
                c.expect((PONG, payload))

    def test_ping_over_125_fails(self):  # 2.5
        c = self.case()
        c.send(frame(PING, b"\xfe" * 126))
        c.expect(close=1002)

    def test_ping_written_byte_by_byte(self):  # 2.6
        c = self.case()
        c.send(frame(PING, b"\xfe" * 125), chop=1)
        c.expect((PONG, b"\xfe" * 125))

    def test_unsolicited_pongs(self):  # 2.7, 2.8, 2.9
        c = self.case()
        c.send(frame(PONG, b""), frame(PONG, b"unsolicited"), frame(PING, b"ping"))
        c.expect((PONG, b"ping"))

    def test_ten_pings(self):  # 2.10, 2.11
        for pause in (0, 0.01):
            with self.subTest(pause=pause):
                c = self.case()
                c.send(*[frame(PING, b"p%d" % i) for i in range(10)], pause=pause)
                c.expect(*[(PONG, b"p%d" % i) for i in range(10)])


class ReservedBits3(Autobahn, unittest.TestCase):
    def test_reserved_bits(self):
        cases = [
            ("3.1 text RSV=1", [frame(TEXT, b"x", rsv=1)], []),
            ("3.2 text, then text RSV=2, ping", [frame(TEXT, b"a"), frame(TEXT, b"b", rsv=2), frame(PING)],
             [(TEXT, b"a")]),
            ("3.3 the same, RSV=3", [frame(TEXT, b"a"), frame(TEXT, b"b", rsv=3), frame(PING)], [(TEXT, b"a")]),
            ("3.5 binary RSV=4 (no extension)", [frame(BINARY, b"\x00\xff", rsv=4)], []),
            ("3.6 ping RSV=5", [frame(PING, b"p", rsv=5)], []),
            ("3.7 close RSV=6", [frame(CLOSE, close_payload(1000), rsv=6)], []),
            ("RSV=7 text", [frame(TEXT, b"x", rsv=7)], []),
        ]
        for name, frames, echoed in cases:
            with self.subTest(name):
                c = self.case()
                c.send(*frames)
                c.expect(*echoed, close=1002)

    def test_reserved_bits_frame_by_frame(self):  # 3.4
        c = self.case()
        c.send(frame(TEXT, b"a"), frame(TEXT, b"b", rsv=4), frame(PING), pause=0.05)
        c.expect((TEXT, b"a"), close=1002)


class Opcodes4(Autobahn, unittest.TestCase):
    def test_reserved_opcodes(self):
        for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
            for name, frames in (("alone", [frame(op)]), ("with payload", [frame(op, b"reserved")]),
                                 ("after a text, before a ping", [frame(TEXT, b"a"), frame(op, b"r"), frame(PING)])):
                with self.subTest(op=op, case=name):
                    c = self.case()
                    c.send(*frames)
                    c.expect(*([(TEXT, b"a")] if len(frames) > 1 else []), close=1002)


class Fragmentation5(Autobahn, unittest.TestCase):
    def test_fragmented_control_frames_fail(self):  # 5.1, 5.2
        for op in (PING, PONG):
            with self.subTest(op=op):
                c = self.case()
                c.send(frame(op, b"frag", fin=False), frame(CONT, b"ment"))
                c.expect(close=1002)

    def test_fragmented_messages(self):  # 5.3-5.5 text, 5.3-5.5 binary (chop, pauses)
        for op in (TEXT, BINARY):
            for chop, pause in ((None, 0), (None, 0.05), (1, 0)):
                with self.subTest(op=op, chop=chop, pause=pause):
                    c = self.case()
                    c.send(frame(op, b"frag", fin=False), frame(CONT, b"ment"), chop=chop, pause=pause)
                    c.expect((op, b"fragment"))

    def test_ping_between_fragments(self):  # 5.6-5.8
        for chop, pause in ((None, 0), (None, 0.05), (1, 0)):
            with self.subTest(chop=chop, pause=pause):
                c = self.case()
                c.send(frame(TEXT, b"frag", fin=False), frame(PING, b"p"), frame(CONT, b"ment"), chop=chop,
                       pause=pause)
                c.expect((PONG, b"p"), (TEXT, b"fragment"))

    def test_continuation_with_nothing_to_continue(self):  # 5.9-5.14
        for fin in (True, False):
            for chop, pause in ((None, 0), (None, 0.05), (1, 0)):
                with self.subTest(fin=fin, chop=chop, pause=pause):
                    c = self.case()
                    c.send(frame(CONT, b"orphan", fin=fin), frame(TEXT, b"never"), chop=chop, pause=pause)
                    c.expect(close=1002)

    def test_interleaved_messages_fail(self):  # 5.15-5.18
        cases = [
            ("5.15 a message, then fragments out of order",
             [frame(TEXT, b"a", fin=False), frame(CONT, b"b"), frame(CONT, b"c", fin=False), frame(TEXT, b"d")],
             [(TEXT, b"ab")]),
            ("5.16 continuation first, twice", [frame(CONT, b"a", fin=False), frame(TEXT, b"b"),
                                                frame(CONT, b"c")], []),
            ("5.17 final continuation first", [frame(CONT, b"a"), frame(TEXT, b"b", fin=False),
                                               frame(CONT, b"c")], []),
            ("5.18 text inside a fragmented text", [frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], []),
        ]
        for name, frames, echoed in cases:
            with self.subTest(name):
                c = self.case()
                c.send(*frames)
                c.expect(*echoed, close=1002)

    def test_pings_among_many_fragments(self):  # 5.19, 5.20
        for pause in (0, 0.02):
            with self.subTest(pause=pause):
                c = self.case()
                parts = [frame(TEXT, b"f1", fin=False), frame(CONT, b"f2", fin=False), frame(PING, b"p1"),
                         frame(CONT, b"f3", fin=False), frame(CONT, b"f4", fin=False), frame(PING, b"p2"),
                         frame(CONT, b"f5")]
                c.send(*parts, pause=pause)
                c.expect((PONG, b"p1"), (PONG, b"p2"), (TEXT, b"f1f2f3f4f5"))


# Markus Kuhn's UTF-8 decoder stress test, the cases Autobahn's family 6 takes from it: (name, bytes, valid).
UTF8 = [
    ("6.2 multi-frame valid", "Hello-µ@ßöäüàá-UTF-8!!".encode(), True),
    ("6.3 κόσμε", "κόσμε".encode(), True),
    ("6.3 κόσμε with a surrogate", "κόσμε".encode() + b"\xed\xa0\x80" + b"edited", False),
    ("6.5 one of each length", "\u0080\u0800\U00010000".encode(), True),
    ("6.7 first of each length", b"\x00" + "\u0080\u0800\U00010000".encode(), True),
    ("6.8 5- and 6-byte forms", b"\xf8\x88\x80\x80\x80", False),
    ("6.8 6 bytes", b"\xfc\x84\x80\x80\x80\x80", False),
    ("6.9 last of each length", "\u007f\u07ff\uffff".encode(), True),
    ("6.9 past U+10FFFF", b"\xf7\xbf\xbf\xbf", False),
    ("6.10 boundaries", "\ud7ff".encode("utf-8", "surrogatepass") + "\ue000\ufffd\U0010ffff".encode(), True),
    ("6.10 U+110000", b"\xf4\x90\x80\x80", False),
    ("6.11 lone continuation bytes", b"\x80", False),
    ("6.11 continuation pair", b"\x80\xbf", False),
    ("6.12 all continuation bytes", bytes(range(0x80, 0xC0)), False),
    ("6.13 lonely 2-byte starts", b"\xc0 \xc1 \xdf ", False),
    ("6.13 lonely 3-byte start", b"\xe0 ", False),
    ("6.13 lonely 4-byte start", b"\xf0 ", False),
    ("6.14 last byte missing, 2", b"\xdf", False),
    ("6.14 last byte missing, 3", b"\xe0\x80", False),
    ("6.14 last byte missing, 4", b"\xf0\x80\x80", False),
    ("6.15 concatenated incomplete", b"\xc0\xe0\x80\xf0\x80\x80\xdf\xef\xbf\xf7\xbf\xbf", False),
    ("6.16 fe", b"\xfe", False),
    ("6.16 ff", b"\xff", False),
    ("6.16 fe fe ff ff", b"\xfe\xfe\xff\xff", False),
    ("6.17 overlong slash, 2", b"\xc0\xaf", False),
    ("6.17 overlong slash, 3", b"\xe0\x80\xaf", False),
    ("6.17 overlong slash, 4", b"\xf0\x80\x80\xaf", False),
    ("6.18 largest overlong, 3", b"\xe0\x9f\xbf", False),
    ("6.18 largest overlong, 4", b"\xf0\x8f\xbf\xbf", False),
    ("6.19 overlong NUL", b"\xc0\x80", False),
    ("6.20 high surrogate", b"\xed\xa0\x80", False),
    ("6.20 low surrogate", b"\xed\xbf\xbf", False),
    ("6.21 surrogate pair", b"\xed\xa0\x80\xed\xb0\x80", False),
    ("6.22 noncharacters are valid", "\ufffe\uffff\U0001fffe\U0010ffff".encode(), True),
    ("6.23 U+FFFD", "\ufffd".encode(), True),
]


class Utf8_6(Autobahn, unittest.TestCase):
    def test_empty_fragments(self):  # 6.1
        c = self.case()
        c.send(frame(TEXT, b"", fin=False), frame(CONT, b"", fin=False), frame(CONT, b""))
        c.expect((TEXT, b""))

    def test_sequences(self):
        for name, data, valid in UTF8:
            for split in ("one frame", "a frame per byte"):
                with self.subTest(name, split=split):
                    c = self.case()
                    if split == "one frame":
                        c.send(frame(TEXT, data))
                    else:
                        c.send(*[frame(TEXT if i == 0 else CONT, data[i:i + 1], fin=i == len(data) - 1)
                                 for i in range(len(data))])
                    if valid:
                        c.expect((TEXT, data))
                    else:
                        c.expect(close=1007)

    def test_fail_fast(self):  # 6.4: the bad bytes are refused before the message could end
        data = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"-edited"
        c = self.case()
        c.send(frame(TEXT, data[:12], fin=False))
        c.expect(close=1007)


class Close7(Autobahn, unittest.TestCase):
    def test_after_close_nothing_is_answered(self):  # 7.1.1-7.1.5
        cases = [
            ("7.1.1 a message, then close", [frame(TEXT, b"hi"), frame(CLOSE, close_payload(1000))], [(TEXT, b"hi")]),
            ("7.1.2 close twice", [frame(CLOSE, close_payload(1000)), frame(CLOSE, close_payload(1000))], []),
            ("7.1.3 ping after close", [frame(CLOSE, close_payload(1000)), frame(PING, b"p")], []),
            ("7.1.4 text after close", [frame(CLOSE, close_payload(1000)), frame(TEXT, b"t")], []),
            ("7.1.5 a fragment, close, the rest", [frame(TEXT, b"a", fin=False), frame(CLOSE, close_payload(1000)),
                                                 frame(CONT, b"b")], []),
        ]
        for name, frames, echoed in cases:
            with self.subTest(name):
                c = self.case()
                c.send(*frames)
                for opcode, payload in echoed:
                    f = c.w.recv_frame()
                    self.assertEqual((f.opcode, f.payload), (opcode, payload))
                f = c.w.recv_frame()
                self.assertEqual((f.opcode, f.code), (CLOSE, 1000))
                self.assertTrue(c.w.closed_by_peer(5))

    def test_big_message_then_close(self):  # 7.1.6 (informational in Autobahn)
        # The pong goes at once; the close is answered as it comes, so the app's echo, still to be sent, is not.
        c = self.case()
        c.send(frame(TEXT, b"BAsd7&jh23" * 26214), frame(PING, b"p"), frame(CLOSE, close_payload(1000)))
        f = c.w.recv_frame()
        while f.opcode != CLOSE:
            self.assertIn((f.opcode, len(f.payload)), ((PONG, 1), (TEXT, 262140)))
            f = c.w.recv_frame()
        self.assertEqual(f.code, 1000)
        self.assertTrue(c.w.closed_by_peer(5))

    def test_close_payloads(self):  # 7.3
        c = self.case()
        c.send(frame(CLOSE))
        self.assertEqual(c.w.recv_frame().payload, b"")
        for name, payload, code in (("7.3.3 1000", close_payload(1000), 1000),
                                    ("7.3.4 1000 with a reason", close_payload(1000, b"Hello World!"), 1000),
                                    ("7.3.5 a 123-byte reason", close_payload(1000, b"*" * 123), 1000)):
            with self.subTest(name):
                c = self.case()
                c.send(frame(CLOSE, payload))
                f = c.w.recv_frame()
                self.assertEqual((f.opcode, f.code), (CLOSE, code))
                self.assertTrue(c.w.closed_by_peer(5))
        for name, payload, code in (("7.3.2 one byte", b"\x03", 1002),
                                    ("7.3.6 a 124-byte reason", close_payload(1000, b"*" * 124), 1002),
                                    ("7.5.1 a reason that is not UTF-8", close_payload(1000, b"\xce\xba\xe1\xbd"),
                                     1007)):
            with self.subTest(name):
                c = self.case()
                c.send(frame(CLOSE, payload))
                c.expect(close=code)

    def test_close_codes(self):  # 7.7 valid, echoed; 7.9 and 7.13 invalid, 1002
        for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
            with self.subTest(valid=code):
                c = self.case()
                c.send(frame(CLOSE, close_payload(code)))
                f = c.w.recv_frame()
                self.assertEqual((f.opcode, f.code), (CLOSE, code))
                self.assertTrue(c.w.closed_by_peer(5))
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
            with self.subTest(invalid=code):
                c = self.case()
                c.send(frame(CLOSE, close_payload(code)))
                c.expect(close=1002)


class Sizes9(Autobahn, unittest.TestCase):
    """Family 9 at sizes up to 1 MiB: whole messages, fragmented ones, and frames written in small pieces."""

    def test_whole_messages(self):  # 9.1, 9.2
        for op in (TEXT, BINARY):
            for n in (64 << 10, 256 << 10, 1 << 20):
                with self.subTest(op=op, n=n):
                    data = (b"*" if op == TEXT else b"\xfe") * n
                    c = self.case()
                    c.send(frame(op, data))
                    c.expect((op, data))

    def test_fragmented(self):  # 9.3, 9.4: 1 MiB in fragments of 64 B to 64 KiB
        for op in (TEXT, BINARY):
            for size in (64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10):
                with self.subTest(op=op, fragment=size):
                    data = (b"*" if op == TEXT else b"\xfe") * (1 << 20)
                    parts = [data[i:i + size] for i in range(0, len(data), size)]
                    c = self.case()
                    c.send(b"".join(frame(op if i == 0 else CONT, p, fin=i == len(parts) - 1)
                                    for i, p in enumerate(parts)))
                    c.expect((op, data))

    def test_written_in_pieces(self):  # 9.5, 9.6: a 1 MiB frame written 64 B to 4 KiB at a time
        for op in (TEXT, BINARY):
            for chop in (64, 512, 4096):
                with self.subTest(op=op, chop=chop):
                    data = (b"*" if op == TEXT else b"\xfe") * (1 << 20)
                    c = self.case()
                    c.send(frame(op, data), chop=chop)
                    c.expect((op, data))

    def test_many_small_messages(self):  # 9.7, 9.8: 1000 messages, answered in order
        for op in (TEXT, BINARY):
            with self.subTest(op=op):
                c = self.case()
                c.send(b"".join(frame(op, b"m%03d" % i) for i in range(1000)))
                c.expect(*[(op, b"m%03d" % i) for i in range(1000)])


class AutoFragmentation10(Autobahn, unittest.TestCase):
    def test_fragmented_echo(self):  # 10.1.1: 64 KiB sent in fragments of 1300, echoed whole
        data = b"*" * 65536
        parts = [data[i:i + 1300] for i in range(0, len(data), 1300)]
        c = self.case()
        c.send(*[frame(TEXT if i == 0 else CONT, p, fin=i == len(parts) - 1) for i, p in enumerate(parts)])
        c.expect((TEXT, data))


class Compression12(Autobahn, unittest.TestCase):
    """12: permessage-deflate with the default offer; 13: the offers' parameters. Messages are compressed by the
    client (each from a fresh context, which RFC 7692 allows) and the server's answers inflated with one
    context per connection, as its context takeover requires."""

    def round_trips(self, c, sizes, count=10):
        for n in sizes:
            for i in range(count):
                data = (b"%d-%d " % (n, i) * (n // 4 + 1))[:n]
                c.send(frame(BINARY, deflate(data), rsv=4))
                f = c.w.recv_frame()
                self.assertEqual((f.opcode, c.message(f)), (BINARY, data))

    def test_default_offer(self):  # 12.1-12.5 at sizes up to 64 KiB
        c = self.case("permessage-deflate; client_max_window_bits")
        self.assertIn("permessage-deflate", c.w.headers["sec-websocket-extensions"])
        self.round_trips(c, (16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536))
        c.expect()

    def test_text_and_uncompressed_mixed(self):
        c = self.case("permessage-deflate")
        c.send(frame(TEXT, deflate("é".encode() * 300), rsv=4), frame(TEXT, b"plain"))
        c.expect((TEXT, "é".encode() * 300), (TEXT, b"plain"))

    def test_offer_parameters(self):  # 13.1-13.7
        offers = [
            ("permessage-deflate; client_no_context_takeover", "client_no_context_takeover"),
            ("permessage-deflate; server_no_context_takeover", "server_no_context_takeover"),
            ("permessage-deflate; server_max_window_bits=9", "server_max_window_bits=9"),
            ("permessage-deflate; server_max_window_bits=15", "server_max_window_bits=12"),
            ("permessage-deflate; client_max_window_bits=9", "client_max_window_bits=9"),
            ("permessage-deflate; client_max_window_bits=15", "client_max_window_bits=12"),
            ("permessage-deflate; client_no_context_takeover; server_no_context_takeover; server_max_window_bits=9;"
             " client_max_window_bits=9", "server_no_context_takeover"),
        ]
        for offer, answer in offers:
            with self.subTest(offer):
                c = self.case(offer)
                self.assertIn(answer, c.w.headers["sec-websocket-extensions"])
                self.round_trips(c, (64, 4096, 65536), count=3)
                c.expect()

    def test_client_window_is_honoured(self):
        """A client told client_max_window_bits=9 compresses with a 512-byte window: the server inflates it."""
        c = self.case("permessage-deflate; client_max_window_bits=9")
        z = zlib.compressobj(6, zlib.DEFLATED, -9)
        for i in range(5):
            data = bytes(range(256)) * 40 + b"%d" % i
            c.send(frame(BINARY, (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=4))
            f = c.w.recv_frame()
            self.assertEqual(c.message(f), data)
        c.expect()


if __name__ == "__main__":
    run_tests()
