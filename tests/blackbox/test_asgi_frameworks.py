"""A real ASGI framework from Debian on ponte, Starlette (python3-starlette): routing, JSON, a request body, a
streaming response, a WebSocket route (with Debian's python3-websockets client), lifespan (startup state,
shutdown). FastAPI is test_asgi_fastapi.py: sid builds its pydantic-core for 3.14 and 3.15 only, so it is not in the
core suite every CPython runs (test_pip serves FastAPI from PyPI on each)."""

import asyncio
import json
import unittest

import websockets

from harness import REPO_APPS, ServerCase, run_tests

ASGI_APPS = REPO_APPS + "/asgi"


class StarletteApp(ServerCase, unittest.TestCase):
    app = "starlette_app:app"
    app_dir = ASGI_APPS

    def test_lifespan_state(self):
        r = self.conn().request("GET", "/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"hello from lifespan")

    def test_websocket_route(self):
        async def go():
            url = "ws://127.0.0.1:%d/ws" % self.server.port
            async with websockets.connect(url, subprotocols=["chat"]) as ws:
                self.assertEqual(ws.subprotocol, "chat")
                await ws.send("hi")
                self.assertEqual(await ws.recv(), "echo: hi")
                await ws.send("bye")
                self.assertEqual(json.loads(await ws.recv()), {"goodbye": True, "count": 2})
                with self.assertRaises(websockets.ConnectionClosed):
                    await ws.recv()
            self.assertEqual(ws.close_code, 4000)
        asyncio.run(asyncio.wait_for(go(), 30))

    def test_websocket_route_missing_is_403(self):
        async def go():
            url = "ws://127.0.0.1:%d/nope" % self.server.port
            # websockets 10's client (Debian 12) raises InvalidStatusCode; 13 and later's (sid) InvalidStatus
            rejected = tuple(getattr(websockets.exceptions, name) for name in ("InvalidStatusCode", "InvalidStatus")
                             if hasattr(websockets.exceptions, name))
            with self.assertRaises(rejected) as cm:
                async with websockets.connect(url):
                    pass
            e = cm.exception
            self.assertEqual(e.response.status_code if hasattr(e, "response") else e.status_code, 403)
        asyncio.run(asyncio.wait_for(go(), 30))

    def test_routing_and_json(self):
        c = self.conn()
        r = c.request("GET", "/items/42?q=x")
        self.assertEqual(json.loads(r.body), {"item_id": 42, "q": "x"})
        self.assertEqual(c.request("GET", "/items/notanint").status, 404)
        self.assertEqual(c.request("GET", "/nope").status, 404)

    def test_request_body(self):
        body = json.dumps({"a": list(range(1000))}).encode()
        r = self.conn().request("POST", "/echo", [("Content-Type", "application/json")], body)
        self.assertEqual(json.loads(r.body), {"length": len(body), "json": {"a": list(range(1000))}})
        self.assertEqual(self.conn().request("GET", "/echo").status, 405)

    def test_streaming(self):
        r = self.conn().request("GET", "/stream?n=4")
        self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertEqual(r.body, b"0\n1\n2\n3\n")


class Twins(unittest.TestCase):
    """hello, io_bound and cpu_bound have ASGI twins, to compare the same endpoints under both interfaces."""

    def test_twins_answer_like_their_wsgi_originals(self):
        from harness import Conn, Server
        for app, path, want in (("hello_asgi:app", "/", b"Hello, world!"),
                                ("io_bound_asgi:app", "/?delay=0.02", b"waited 0.020 s\n"),
                                ("cpu_bound_asgi:app", "/?n=1000", b"work(1000) = ")):
            with self.subTest(app=app), Server(app, app_dir=ASGI_APPS) as s:
                r = Conn(s).request("GET", path)
                self.assertEqual(r.status, 200)
                self.assertTrue(r.body.startswith(want), r.body)


if __name__ == "__main__":
    run_tests()
