"""The ASGI twin of bench_wsgi.py, route for route."""

import asyncio

HELLO = b"Hello, world!"
CHUNK = b"x" * 4096
TEXT = [(b"content-type", b"text/plain")]


def work(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


async def respond(send, body, headers=TEXT):
    await send({"type": "http.response.start", "status": 200,
                "headers": headers + [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            await send({"type": event["type"] + ".complete"})
            if event["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/":
        await respond(send, HELLO)
    elif path == "/io":
        await asyncio.sleep(0.01)
        await respond(send, b"waited 10 ms")
    elif path == "/cpu":
        await respond(send, b"%d" % work(20000))
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        for _ in range(15):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": CHUNK})
    elif path == "/upload":
        size, more = 0, True
        while more:
            event = await receive()
            size += len(event.get("body", b""))
            more = event.get("more_body", False)
        await respond(send, b"%d" % size)
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body"})
