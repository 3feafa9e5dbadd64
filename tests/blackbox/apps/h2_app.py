"""Apps for tests/blackbox/test_h2.py: what an app sees of HTTP/2, and responses of every shape.

WSGI (application) and ASGI (app), the same routes:
  /            {"protocol": SERVER_PROTOCOL or "HTTP/" + http_version, "scheme", "host", "cookie", "method",
                "path", "query", "headers": [[name, value], ...] (ASGI: as the scope has them)}
  /big?N       N bytes, (i % 251) for i in range(N), streamed in 16 KiB pieces without a Content-Length
  /upload      the request body's length and SHA-256
  /slow?S      waits S seconds, then answers how many requests were in the app at once, at most, so far
  /short       says Content-Length: 10 and sends 5 bytes
  /continue    reads the body (a client that sent Expect: 100-continue waits for the server's 100 first)
"""

import asyncio
import hashlib
import json
import threading
import time

_lock = threading.Lock()
_now = _most = 0


def big(n):
    pattern = bytes(i % 251 for i in range(251 * 64))
    return (pattern * (n // len(pattern) + 1))[:n]


def _enter():
    global _now, _most
    with _lock:
        _now += 1
        _most = max(_most, _now)


def _leave():
    global _now
    with _lock:
        _now -= 1


def application(environ, start_response):
    path = environ["PATH_INFO"]
    length = None
    if path == "/big":
        n = int(environ["QUERY_STRING"])
        data = big(n)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [data[i:i + 16384] for i in range(0, n, 16384)]
    if path in ("/upload", "/continue"):
        data = environ["wsgi.input"].read()
        body = ("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode()
    elif path == "/slow":
        _enter()
        try:
            time.sleep(float(environ["QUERY_STRING"]))
        finally:
            _leave()
        body = str(_most).encode()
    elif path == "/short":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"12345"]
    else:
        headers = [[k[5:].lower().replace("_", "-"), v] for k, v in environ.items() if k.startswith("HTTP_")]
        body = json.dumps({"protocol": environ["SERVER_PROTOCOL"], "scheme": environ["wsgi.url_scheme"],
                           "host": environ.get("HTTP_HOST"), "cookie": environ.get("HTTP_COOKIE"),
                           "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                           "query": environ["QUERY_STRING"], "headers": sorted(headers)}).encode()
        length = str(len(body))
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", length or
                                                                           str(len(body)))])
    return [body]


async def _body(receive):
    chunks = []
    while True:
        m = await receive()
        chunks.append(m.get("body", b""))
        if not m.get("more_body"):
            return b"".join(chunks)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    path = scope["path"]
    if path == "/big":
        n = int(scope["query_string"])
        data = big(n)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x/y")]})
        for i in range(0, n, 16384):
            await send({"type": "http.response.body", "body": data[i:i + 16384], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/short":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345"})
        return
    if path in ("/upload", "/continue"):
        data = await _body(receive)
        body = ("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode()
    elif path == "/slow":
        _enter()
        try:
            await asyncio.sleep(float(scope["query_string"]))
        finally:
            _leave()
        body = str(_most).encode()
    else:
        hdrs = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        get = dict(hdrs).get
        body = json.dumps({"protocol": "HTTP/" + scope["http_version"], "scheme": scope["scheme"],
                           "host": get("host"), "cookie": get("cookie"), "method": scope["method"],
                           "path": scope["path"], "query": scope["query_string"].decode(),
                           "headers": sorted(hdrs)}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
