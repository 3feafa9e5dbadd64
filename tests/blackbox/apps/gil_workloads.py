"""The GIL sampler's known workloads, with as little else around them as an app can have (no wsgiref.validate, no
framework): /spin spends ?seconds= (default 5 ms) in spin(), holding the GIL; /slow sleeps ?delay= (default 10 ms)
without it. WSGI `application` and ASGI `asgi_app`."""

import asyncio
import time
from urllib.parse import parse_qs


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def arg(query, name, default):
    return float(parse_qs(query).get(name, [default])[0])


def application(environ, start_response):
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    if path == "/spin":
        spin(arg(query, "seconds", 0.005))
    elif path == "/slow":
        time.sleep(arg(query, "delay", 0.01))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = scope["query_string"].decode()
    if scope["path"] == "/spin":
        spin(arg(query, "seconds", 0.005))
    elif scope["path"] == "/slow":
        await asyncio.sleep(arg(query, "delay", 0.01))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
