"""The apps of tests/blackbox/test_concurrency.py: every way a request touches state that other threads touch at the
same time, with answers a client can check. On a free-threaded CPython the worker threads run these at once.

WSGI (`application`: `wsgi` under wsgiref.validate):
  /count       adds one to a shared dict under a lock, and appends to a shared list without one; answers the key
  /totals      what /count added: {"locked": n, "appended": n}
  /stream?n=N  a generator of N chunks; chunk i is 1024 bytes of the byte i % 251
  /write?n=N   the same N chunks through write(), called from a thread the app starts (PEP 3333 allows any
               thread while the app runs)
  /upload      reads wsgi.input in pieces of varied sizes; answers "LENGTH SHA256"

ASGI (`asgi`): /count, /totals, /stream?n=N and /upload as above, /count from a thread (asyncio.to_thread, so that
the loop is woken from other threads); WebSocket /echo answers each message from a thread."""

import asyncio
import hashlib
import json
import threading
from urllib.parse import parse_qs

from validated import validated

LOCK = threading.Lock()
COUNTS = {}
APPENDED = []


def count(key):
    with LOCK:
        COUNTS[key] = COUNTS.get(key, 0) + 1
    APPENDED.append(key)


def totals():
    with LOCK:
        locked = sum(COUNTS.values())
    return json.dumps({"locked": locked, "appended": len(APPENDED)}).encode()


def chunk(i):
    return bytes([i % 251]) * 1024


def read_all(stream):
    h, n, size = hashlib.sha256(), 0, 1
    while True:
        data = stream.read(size)
        if not data:
            return ("%d %s" % (n, h.hexdigest())).encode()
        h.update(data)
        n += len(data)
        size = size * 7 % 65521 + 1  # 1, 8, 57, ...: pieces across buffer boundaries


def number(query, name, default):
    return int(parse_qs(query).get(name, [default])[0])


def wsgi(environ, start_response):
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    if path == "/count":
        count("wsgi")
        body = [b"counted"]
    elif path == "/totals":
        body = [totals()]
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (chunk(i) for i in range(number(query, "n", "16")))
    elif path == "/write":
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        t = threading.Thread(target=lambda: [write(chunk(i)) for i in range(number(query, "n", "16"))])
        t.start()
        t.join()
        return []
    elif path == "/upload":
        body = [read_all(environ["wsgi.input"])]
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
        return []
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body[0])))])
    return body


application = validated(wsgi)


async def respond(send, body, more=()):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    for part in more:
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": body})


async def asgi_upload(receive):
    h, n = hashlib.sha256(), 0
    while True:
        ev = await receive()
        if ev["type"] == "http.disconnect":
            return None
        h.update(ev.get("body", b""))
        n += len(ev.get("body", b""))
        if not ev.get("more_body"):
            return ("%d %s" % (n, h.hexdigest())).encode()


async def asgi_echo(receive, send):
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        ev = await receive()
        if ev["type"] == "websocket.disconnect":
            return
        text = await asyncio.to_thread(lambda: ev["text"].upper())
        await send({"type": "websocket.send", "text": text})


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await asgi_echo(receive, send)
        return
    path, query = scope["path"], scope["query_string"].decode()
    if path == "/count":
        await asyncio.to_thread(count, "asgi")
        await respond(send, b"counted")
    elif path == "/totals":
        await respond(send, totals())
    elif path == "/stream":
        n = number(query, "n", "16")
        try:
            await respond(send, chunk(n - 1), [chunk(i) for i in range(n - 1)])
        except OSError:  # ponte.ClientDisconnected: the client went
            pass
    elif path == "/upload":
        body = await asgi_upload(receive)
        if body is not None:
            await respond(send, body)
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
