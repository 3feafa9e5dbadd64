"""The ASGI twin of apps/cpu_bound.py: pure-Python work on the event loop. While one request computes, the loop
(and every other request) waits: asyncio does not help CPU-bound work; processes do.

    /?n=20000        work size (default 20000), at most 10,000,000
"""

import os
import sys
from urllib.parse import parse_qs

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cpu_bound import MAX_N, work  # noqa: E402  (the same work as the WSGI app)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    q = parse_qs(scope["query_string"].decode("latin-1"))
    try:
        n = min(max(int(q.get("n", ["20000"])[0]), 0), MAX_N)
    except ValueError:
        body, status = b"n must be a whole number\n", 400
    else:
        body, status = b"work(%d) = %d\n" % (n, work(n)), 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
