"""The ASGI twin of apps/io_bound.py: each request waits (asyncio.sleep) without a thread; the event loop serves
every other request meanwhile.

    /?delay=0.01     wait 10 ms (default), at most 10 s
"""

import asyncio
from urllib.parse import parse_qs

MAX_DELAY = 10.0


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    q = parse_qs(scope["query_string"].decode("latin-1"))
    try:
        delay = min(max(float(q.get("delay", ["0.01"])[0]), 0.0), MAX_DELAY)
    except ValueError:
        body, status = b"delay must be a number of seconds\n", 400
    else:
        await asyncio.sleep(delay)
        body, status = b"waited %.3f s\n" % delay, 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
