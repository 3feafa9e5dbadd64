"""WebSocket (RFC 6455, RFC 7692) and the ASGI websocket protocol (spec 2.4) over real sockets: the handshake and
its refusals, every framing rule a server enforces (sent raw, as no client library would send them), UTF-8 checked
across fragments, size limits and a deflate bomb, ping/pong and a dead peer, the closing handshake from either side,
the app's errors, back-pressure on a peer that never reads; then Debian's python3-websockets client against the same
app, compression on and off, and 500 connections at once."""

import asyncio
import json
import signal
import socket
import time
import unittest
import zlib

from harness import SANITIZED, Server, ServerCase, assert_rss_below, rss_of, run_tests, wait_for
from wsclient import BINARY, CLOSE, CONT, PING, PONG, TEXT, WS, close_payload, deflate, frame

import websockets  # Debian's python3-websockets: a real client, for what raw frames do not show


class Base(ServerCase):
    app = "ws_app:app"
    args = ("--ws-max-size", "65536")

    def ws(self, path="/echo", **kw):
        w = WS(self.server, path, **kw)
        self.addCleanup(w.close)
        return w

    def noted(self, tag, cid, n=1, timeout=5):
        """The app's notes with this tag and id, once there are n of them."""
        found = []

        def have():
            found[:] = [e for e in (json.loads(l) for l in self.read_events() if l.strip())
                        if e["tag"] == tag and e.get("id") == cid]
            return len(found) >= n
        self.assertTrue(wait_for(have, timeout), "the app noted no %s for %s: %s" % (tag, cid, found))
        return found

    def assert_fails(self, w, code):
        f = w.expect_close(reply=False)
        self.assertEqual(f.code, code, f.reason)
        self.assertTrue(w.closed_by_peer(), "the server kept the connection after failing it")


class Handshake(Base, unittest.TestCase):
    def test_accept_key_and_headers(self):
        w = self.ws(key="dGhlIHNhbXBsZSBub25jZQ==")
        self.assertEqual(w.status, 101)
        self.assertEqual(w.headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")  # RFC 6455 1.3
        self.assertEqual(w.headers["upgrade"].lower(), "websocket")
        self.assertEqual(w.headers["connection"].lower(), "upgrade")
        self.assertNotIn("sec-websocket-protocol", w.headers)

    def test_version_other_than_13_is_426(self):
        w = self.ws(version="8")
        self.assertEqual(w.status, 426)
        self.assertEqual(w.headers["sec-websocket-version"], "13")

    def test_bad_or_missing_key_is_400(self):
        for key in ("", "short==", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25j!Q=="):
            with self.subTest(key=key):
                self.assertEqual(self.ws(key=key).status, 400)
        self.assertEqual(self.ws(version="").status, 400)  # a key without a version
        # Neither key nor version (an older draft's handshake, hixie-76): not RFC 6455's, served as plain HTTP.
        self.assertEqual(self.ws(key="", version="").status, 200)

    def test_not_an_upgrade_is_plain_http(self):
        c = self.conn()
        r = c.request("GET", "/echo", [("Upgrade", "websocket")])  # no "Connection: upgrade"
        self.assertEqual((r.status, r.body), (200, b"plain http, upgrade=websocket"))
        r = self.conn().request("POST", "/echo", [("Upgrade", "websocket"), ("Connection", "upgrade")], b"x")
        self.assertEqual(r.status, 200)

    def test_subprotocol_negotiated(self):
        w = self.ws("/echo?sub=b", headers=[("Sec-WebSocket-Protocol", "a, b")])
        self.assertEqual(w.headers["sec-websocket-protocol"], "b")

    def test_subprotocol_not_offered_is_refused(self):
        w = self.ws("/bad-sub?id=sub1", headers=[("Sec-WebSocket-Protocol", "a")])
        self.assertEqual(w.status, 403)  # the app closed before accepting
        self.assertIn("was not offered", self.noted("bad_sub", "sub1")[0]["error"])

    def test_extra_accept_headers(self):
        w = self.ws("/headers")
        self.assertEqual((w.status, w.headers["x-extra"], w.headers["set-cookie"]), (101, "yes", "a=1"))

    def test_frames_sent_right_behind_the_handshake(self):
        s = self.server.connect()
        self.addCleanup(s.close)
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  + frame(TEXT, b"early"))
        data = b""
        while b"early" not in data:
            data += s.recv(4096)
        self.assertTrue(data.startswith(b"HTTP/1.1 101 "))

    def test_scope(self):
        w = self.ws("/scope?x=1", headers=[("Sec-WebSocket-Protocol", "chat, superchat")])
        doc = json.loads(w.recv_message().payload)
        self.assertEqual(doc["type"], "websocket")
        self.assertEqual(doc["asgi"], {"version": "3.0", "spec_version": "2.4"})
        self.assertEqual((doc["http_version"], doc["scheme"], doc["path"], doc["raw_path"]), ("1.1", "ws", "/scope",
                                                                                                "/scope"))
        self.assertEqual(doc["query_string"], "x=1")
        self.assertEqual(doc["subprotocols"], ["chat", "superchat"])
        self.assertEqual(doc["extensions"], {"websocket.http.response": {}})
        self.assertNotIn("method", doc)
        self.assertEqual(doc["client"][0], "127.0.0.1")
        self.assertEqual(doc["server"], ["127.0.0.1", self.server.port])
        self.assertIn(["sec-websocket-protocol", "chat, superchat"], doc["headers"])
        self.assertEqual((doc["types"]["raw_path"], doc["types"]["query_string"]), ("bytes", "bytes"))
        self.assertEqual(doc["state"], {"greeting": "from lifespan"})  # lifespan's state, as in HTTP scopes


class Denial(Base, unittest.TestCase):
    def test_close_before_accept_is_403(self):
        w = self.ws("/deny")
        self.assertEqual(w.status, 403)
        self.assertTrue(w.closed_by_peer())

    def test_custom_denial_response(self):
        w = self.ws("/deny-custom")
        self.assertEqual((w.status, w.headers["x-why"]), (401, "no"))
        body = w.body   # read as framed (chunked: more_body)
        self.assertIn(b"go ", body)
        self.assertIn(b"away", body)

    def test_raise_before_accept_is_500(self):
        self.assertEqual(self.ws("/raise-before").status, 500)
        self.assertTrue(wait_for(lambda: "boom before accepting" in self.server.stderr(), 5))

    def test_return_without_accepting_is_500(self):
        self.assertEqual(self.ws("/noaccept").status, 500)


class Framing(Base, unittest.TestCase):
    def test_echo_text_and_binary(self):
        w = self.ws()
        w.text("héllo")
        f = w.recv_message()
        self.assertEqual((f.opcode, f.fin, f.payload), (TEXT, 1, "héllo".encode()))
        w.send_frame(BINARY, b"\x00\xff" * 1000)
        f = w.recv_message()
        self.assertEqual((f.opcode, f.payload), (BINARY, b"\x00\xff" * 1000))
        w.send_frame(TEXT, b"")
        self.assertEqual(w.recv_message().payload, b"")

    def test_fragments_joined_with_a_ping_between(self):
        w = self.ws()
        w.send_frame(TEXT, b"one ", fin=False)
        w.send_frame(PING, b"p1")
        w.send_frame(CONT, b"two ", fin=False)
        w.send_frame(CONT, b"three")
        f = w.recv_frame()
        self.assertEqual((f.opcode, f.payload), (PONG, b"p1"))
        f = w.recv_frame()
        self.assertEqual((f.opcode, f.fin, f.payload), (TEXT, 1, b"one two three"))

    def test_unsolicited_pong_is_fine(self):
        w = self.ws()
        w.send_frame(PONG, b"hb")
        w.text("still here")
        self.assertEqual(w.recv_message().payload, b"still here")

    def test_protocol_errors_close_with_1002(self):
        cases = [
            ("unmasked frame", frame(TEXT, b"x", mask=False)),
            ("reserved opcode 3", frame(3, b"x")),
            ("reserved opcode 11", frame(11, b"x")),
            ("RSV1 without an extension", frame(TEXT, b"x", rsv=4)),
            ("RSV2", frame(TEXT, b"x", rsv=2)),
            ("RSV3 on a ping", frame(PING, b"x", rsv=1)),
            ("control frame of 126 bytes", frame(PING, b"x" * 126)),
            ("fragmented ping", frame(PING, b"x", fin=False)),
            ("fragmented close", frame(CLOSE, close_payload(1000), fin=False)),
            ("continuation with nothing to continue", frame(CONT, b"x")),
            ("new message inside a fragmented one", frame(TEXT, b"a", fin=False) + frame(TEXT, b"b")),
            ("close with a one-byte payload", frame(CLOSE, b"\x03")),
            ("close code 1005", frame(CLOSE, close_payload(1005))),
            ("close code 999", frame(CLOSE, close_payload(999))),
            ("close code 1004", frame(CLOSE, close_payload(1004))),
            ("close code 2999", frame(CLOSE, close_payload(2999))),
            ("close code 5000", frame(CLOSE, close_payload(5000))),
            ("16-bit length used for 5 bytes", bytes([0x81, 0x80 | 126, 0, 5]) + b"\0\0\0\0" + b"hello"),
        ]
        for what, data in cases:
            with self.subTest(what):
                w = self.ws()
                w.send(data)
                self.assert_fails(w, 1002)

    def test_invalid_utf8_closes_with_1007(self):
        cases = [
            ("a lone continuation byte", [frame(TEXT, b"ok \x80")]),
            ("an overlong form", [frame(TEXT, b"\xc0\xaf")]),
            ("a surrogate", [frame(TEXT, b"\xed\xa0\x80")]),
            ("past U+10FFFF", [frame(TEXT, b"\xf4\x90\x80\x80")]),
            ("split across fragments, bad in the second",
             [frame(TEXT, b"caf\xc3", fin=False), frame(CONT, b"\x28")]),
            ("a message that ends inside a character", [frame(TEXT, b"caf\xc3", fin=False), frame(CONT, b"")]),
            ("a close reason", [frame(CLOSE, close_payload(1000, b"\xff"))]),
        ]
        for what, frames in cases:
            with self.subTest(what):
                w = self.ws()
                w.send(b"".join(frames))
                self.assert_fails(w, 1007)

    def test_utf8_checked_as_it_arrives(self):
        # The bad byte is in the first fragment: the close comes before the message could ever end.
        w = self.ws()
        w.send_frame(TEXT, b"fine so far \xff", fin=False)
        self.assert_fails(w, 1007)

    def test_valid_utf8_split_anywhere(self):
        w = self.ws()
        data = "a€𝄞é".encode()
        w.send(b"".join(frame(TEXT if i == 0 else CONT, data[i:i + 1], fin=i == len(data) - 1)
                        for i in range(len(data))))
        self.assertEqual(w.recv_message().payload, data)

    def test_message_over_max_size_is_1009(self):
        w = self.ws()
        w.send(frame(BINARY, b"x", length=70000))  # the header says too much: refused at its first byte
        self.assert_fails(w, 1009)
        w = self.ws()
        w.send(frame(BINARY, b"x", length=2 ** 62))  # a huge declared length allocates nothing
        self.assert_fails(w, 1009)
        w = self.ws()
        w.send(b"".join(frame(BINARY if i == 0 else CONT, b"x" * 30000, fin=False) for i in range(3)))
        self.assert_fails(w, 1009)

    def test_message_at_max_size_passes(self):
        w = self.ws()
        w.send_frame(BINARY, b"m" * 65536)
        self.assertEqual(len(w.recv_message().payload), 65536)

    def test_ping_answered_with_its_payload(self):
        w = self.ws()
        w.send_frame(PING, b"x" * 125)
        f = w.recv_frame()
        self.assertEqual((f.opcode, f.payload), (PONG, b"x" * 125))


class Closing(Base, unittest.TestCase):
    def test_client_close_is_echoed_and_the_app_told(self):
        w = self.ws("/echo?id=c1")
        w.send_frame(CLOSE, close_payload(4321, b"bye"))
        f = w.recv_frame()
        self.assertEqual((f.opcode, f.code), (CLOSE, 4321))
        self.assertTrue(w.closed_by_peer())
        ev = self.noted("disconnect", "c1")
        self.assertEqual((ev[0]["code"], ev[0]["reason"]), (4321, "bye"))

    def test_close_without_code_reports_1005(self):
        w = self.ws("/echo?id=c2")
        w.send_frame(CLOSE, b"")
        self.assertEqual(w.recv_frame().payload, b"")
        self.assertEqual(self.noted("disconnect", "c2")[0]["code"], 1005)

    def test_server_close_then_send_raises_oserror(self):
        w = self.ws("/close?id=c3&code=4001&reason=done")
        f = w.expect_close()
        self.assertEqual((f.code, f.reason), (4001, b"done"))
        self.assertTrue(w.closed_by_peer())
        self.assertEqual(self.noted("disconnect", "c3")[0]["code"], 4001)
        ev = self.noted("send_after_close", "c3")[0]
        self.assertTrue(ev["oserror"], ev)
        self.assertEqual(self.noted("receive_after_close", "c3")[0]["type"], "websocket.disconnect")

    def test_dropped_connection_reports_1006(self):
        w = self.ws("/echo?id=c4")
        w.text("x")
        w.recv_message()
        w.close()
        self.assertEqual(self.noted("disconnect", "c4")[0]["code"], 1006)

    def test_app_that_returns_closes_with_1000(self):
        self.assertEqual(self.ws("/return").expect_close().code, 1000)

    def test_app_that_raises_after_accepting_closes_with_1011(self):
        self.assertEqual(self.ws("/raise-after").expect_close().code, 1011)
        self.assertTrue(wait_for(lambda: "boom after accepting" in self.server.stderr(), 5))

    def test_access_log_line(self):
        w = self.ws("/echo?id=log1")
        w.send_frame(CLOSE, close_payload(1000))
        w.recv_frame()
        self.assertTrue(w.closed_by_peer())
        self.assertTrue(wait_for(lambda: '"GET /echo?id=log1 HTTP/1.1" 101' in self.server.stdout(), 5))
        line = [l for l in self.server.stdout().splitlines() if "id=log1" in l][0]
        self.assertIn("ws_close=1000", line)


class CloseTimeout(Base, unittest.TestCase):
    args = Base.args + ("--ws-close-timeout", "1")

    def test_client_that_never_answers_our_close(self):
        # The closing handshake waits --ws-close-timeout for the client's close frame, then ends the connection
        # (1006 for the app).
        w = self.ws("/close?id=c5&code=1000")
        f = w.recv_frame()
        self.assertEqual((f.opcode, f.code), (CLOSE, 1000))
        started = time.time()
        self.assertTrue(w.closed_by_peer(8), "the server waited for ever for our close frame")
        self.assertGreater(time.time() - started, 0.9, "the server did not wait for the client's close frame")
        self.assertEqual(self.noted("disconnect", "c5")[0]["code"], 1006)
        self.assertTrue(wait_for(lambda: "no close frame from the client within --ws-close-timeout (1 s)"
                                 in self.server.stderr(), 5))


class Deflate(Base, unittest.TestCase):
    def test_negotiation(self):
        w = self.ws(extensions="permessage-deflate; client_max_window_bits")
        self.assertEqual(w.headers["sec-websocket-extensions"], "permessage-deflate; client_max_window_bits=12")
        w = self.ws(extensions="permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
        self.assertEqual(w.headers["sec-websocket-extensions"],
                         "permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
        # An offer this server cannot take is declined, and the next one considered.
        w = self.ws(extensions="permessage-deflate; server_max_window_bits=8, permessage-deflate")
        self.assertEqual(w.headers["sec-websocket-extensions"], "permessage-deflate")
        w = self.ws(extensions="permessage-deflate; foo=1")
        self.assertNotIn("sec-websocket-extensions", w.headers)

    def test_compressed_round_trip(self):
        w = self.ws(extensions="permessage-deflate")
        msg = ("compress me " * 200).encode()
        w.send_frame(TEXT, deflate(msg), rsv=4)
        f = w.recv_message()
        self.assertEqual(f.rsv, 4)
        self.assertEqual(zlib.decompressobj(-15).decompress(f.payload + b"\x00\x00\xff\xff"), msg)
        self.assertLess(len(f.payload), len(msg) // 10)
        w.text("tiny")  # short messages go back uncompressed
        f = w.recv_message()
        self.assertEqual((f.rsv, f.payload), (0, b"tiny"))

    def test_compressed_text_must_be_utf8(self):
        w = self.ws(extensions="permessage-deflate")
        w.send_frame(TEXT, deflate(b"bad \xff byte"), rsv=4)
        self.assert_fails(w, 1007)

    def test_deflate_bomb_is_1009(self):
        w = self.ws(extensions="permessage-deflate")
        bomb = deflate(b"\0" * 50_000_000)  # about 50 kB that inflate to 50 MB, against a 64 KiB limit
        before = rss_of(self.server.proc.pid)
        w.send_frame(BINARY, bomb, rsv=4)
        self.assert_fails(w, 1009)
        assert_rss_below(self, rss_of(self.server.proc.pid) - before, 8 << 20, "inflating a bomb")

    def test_garbage_that_does_not_inflate(self):
        w = self.ws(extensions="permessage-deflate")
        w.send_frame(BINARY, b"\xff\xff\xff\xff not deflate", rsv=4)
        self.assert_fails(w, 1007)

    def test_rsv1_on_a_continuation_is_1002(self):
        w = self.ws(extensions="permessage-deflate")
        w.send(frame(TEXT, deflate(b"ab"), fin=False, rsv=4) + frame(CONT, b"", rsv=4))
        self.assert_fails(w, 1002)


class BackPressure(Base, unittest.TestCase):
    def test_peer_that_never_reads(self):
        w = self.ws("/flood?id=f1&size=65536&n=2000")   # 128 MiB, if nothing held the app back
        s = w.sock
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        time.sleep(1.5)
        sent = max(e["sent"] for e in self.noted("flood", "f1"))
        self.assertLess(sent, 200, "the app's send() never waited for the slow reader")
        assert_rss_below(self, rss_of(self.server.proc.pid), 120 << 20, "a reader that never reads")
        w.close()
        self.assertEqual(self.noted("flood", "f1", n=2)[-1].get("stopped", "disconnected"), "disconnected")


class Keepalive(unittest.TestCase):
    def test_dead_peer_closed_with_1011(self):
        with Server("ws_app:app", "--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.4") as srv:
            w = WS(srv, "/echo")
            self.addCleanup(w.close)
            pings, f = 0, None
            deadline = time.time() + 5
            while time.time() < deadline:
                f = w.recv_frame()  # never answered
                if f.opcode == PING:
                    pings += 1
                if f.opcode == CLOSE:
                    break
            self.assertGreaterEqual(pings, 1)
            self.assertEqual((f.opcode, f.code), (CLOSE, 1011))
            self.assertTrue(w.closed_by_peer())

    def test_live_peer_kept(self):
        with Server("ws_app:app", "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3") as srv:
            w = WS(srv, "/echo")
            self.addCleanup(w.close)
            deadline = time.time() + 1.5
            while time.time() < deadline:
                f = w.recv_frame()
                self.assertEqual(f.opcode, PING)
                w.send_frame(PONG, f.payload)
            w.text("alive")
            self.assertEqual(w.recv_message().payload, b"alive")
            w.close()  # before the server stops: else its closing handshake waits 10 s for our close frame


class Shutdown(unittest.TestCase):
    def test_sigterm_closes_websockets_with_1001(self):
        srv = Server("ws_app:app").start()
        try:
            w = WS(srv, "/echo")
            self.addCleanup(w.close)
            w.text("before")
            self.assertEqual(w.recv_message().payload, b"before")
            started = time.time()
            srv.signal(signal.SIGTERM)
            f = w.expect_close()
            self.assertEqual(f.code, 1001)
            self.assertTrue(w.closed_by_peer())
            self.assertEqual(srv.wait(10), 0)
            self.assertLess(time.time() - started, 5, "shutdown waited for the WebSocket's own timeout")
        finally:
            srv.kill()


class BehindProxy(unittest.TestCase):
    def test_wss_behind_a_trusted_proxy(self):
        with Server("ws_app:app", "--forwarded-allow-ips", "127.0.0.1") as srv:
            w = WS(srv, "/scope", headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "203.0.113.7")])
            self.addCleanup(w.close)
            doc = json.loads(w.recv_message().payload)
            self.assertEqual((doc["scheme"], doc["client"][0]), ("wss", "203.0.113.7"))
            w.close()  # before the server stops (as above)


class Off(unittest.TestCase):
    def test_ws_off_serves_plain_http(self):
        with Server("ws_app:app", "--ws", "off") as srv:
            w = WS(srv, "/echo")
            self.addCleanup(w.close)
            self.assertEqual(w.status, 200)
            self.assertTrue(w.body.startswith(b"plain http"))

    def test_wsgi_app_serves_plain_http(self):
        with Server("testapp:application", threads=2) as srv:
            w = WS(srv, "/")
            self.addCleanup(w.close)
            self.assertEqual(w.status, 200)


class Library(Base, unittest.TestCase):
    """Debian's websockets client: what a browser or a Python client does."""

    def run_client(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 60))

    def url(self, path="/echo"):
        return "ws://127.0.0.1:%d%s" % (self.server.port, path)

    def test_round_trips_with_and_without_compression(self):
        async def go(compression):
            async with websockets.connect(self.url(), compression=compression, max_size=2 ** 21) as ws:
                await ws.send("text ✓")
                self.assertEqual(await ws.recv(), "text ✓")
                await ws.send(b"\x00" * 60000)
                self.assertEqual(await ws.recv(), b"\x00" * 60000)
                pong = await ws.ping(b"lib")
                await asyncio.wait_for(pong, 5)
                await ws.close(4000, "done")
            self.assertEqual(ws.close_code, 4000)
        self.run_client(go("deflate"))
        self.run_client(go(None))

    def test_large_message_with_a_larger_limit(self):
        with Server("ws_app:app", "--ws-max-size", str(2 << 20)) as srv:
            async def go():
                url = "ws://127.0.0.1:%d/echo" % srv.port
                async with websockets.connect(url, max_size=4 << 20) as ws:
                    big = bytes(range(256)) * 4096   # 1 MiB
                    await ws.send(big)
                    self.assertEqual(await ws.recv(), big)
            self.run_client(go())

    def test_too_large_for_the_server(self):
        async def go():
            async with websockets.connect(self.url(), max_size=2 ** 21) as ws:
                await ws.send(b"x" * 70000)
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await ws.recv()
                self.assertEqual(cm.exception.rcvd.code, 1009)
        self.run_client(go())

    def test_many_connections_at_once(self):
        n = 100 if SANITIZED else 500

        async def one(i):
            async with websockets.connect(self.url(), compression=None) as ws:
                await ws.send("n%d" % i)
                return await ws.recv()

        async def go():
            got = await asyncio.gather(*(one(i) for i in range(n)))
            self.assertEqual(got, ["n%d" % i for i in range(n)])
        self.run_client(go())


if __name__ == "__main__":
    run_tests()
