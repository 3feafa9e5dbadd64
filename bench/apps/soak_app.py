"""The soak test's app (bench/soak): a little of everything a real app does, WSGI and ASGI alike."""

import json

STREAM_CHUNKS = 8


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/upload":
        n = 0
        while True:
            chunk = environ["wsgi.input"].read(65536)
            if not chunk:
                break
            n += len(chunk)
        body = b"%d" % n
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"%d" % i * 1024 for i in range(STREAM_CHUNKS))
    elif path == "/error":
        raise RuntimeError("the soak's deliberate error")
    elif path == "/echo":
        body = json.dumps({"method": environ["REQUEST_METHOD"], "query": environ["QUERY_STRING"]}).encode()
    else:
        body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                ev = await receive()
                await send({"type": ev["type"] + ".complete"})
                if ev["type"] == "lifespan.shutdown":
                    return
        return
    path = scope["path"]
    n = 0
    while True:
        ev = await receive()
        if ev["type"] == "http.disconnect":
            return
        n += len(ev.get("body", b""))
        if not ev.get("more_body"):
            break
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(STREAM_CHUNKS):
            await send({"type": "http.response.body", "body": b"%d" % i * 1024, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/error":
        raise RuntimeError("the soak's deliberate error")
    if path == "/upload":
        body = b"%d" % n
    elif path == "/echo":
        body = json.dumps({"method": scope["method"], "query": scope["query_string"].decode("latin-1")}).encode()
    else:
        body = b"Hello, world!"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
