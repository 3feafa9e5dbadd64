"""The app alone: the same views bench/run serves, called in a loop in one process with no server, so each server's
overhead per request can be read as its CPU per request minus this floor.

    /usr/bin/python3 bench/floor.py [--seconds 3] [--only django-wsgi,cpu-asgi,...] [--concurrency 16]

Under libpython3.11.so, the library ponte embeds, run it with any program that calls Py_BytesMain and links
`pkg-config --libs python3-embed` (a three-line main; bench/ has none, as only gateway/ includes Python.h).

Prints one JSON object: {"django-wsgi": {"us": CPU µs per request, "n": requests}, ...}. CPU is the whole
process's (every thread: Django's ASGI handler runs sync views in asgiref's executor thread). The request is the
one wrk sends (GET with a Host header), the environ and scope are what ponte passes, and every response body is
read to its end and checked for a 200.
"""

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time

from endpoints import ENDPOINTS, app_for


def environ_for(path):
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False,
    }


def scope_for(path):
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }


def wsgi_runner(app, path):
    status = []

    def start_response(s, headers, exc_info=None):
        status.append(s)

    def one():
        status.clear()
        it = app(environ_for(path), start_response)
        try:
            for _ in it:
                pass
        finally:
            if hasattr(it, "close"):
                it.close()
        if not status or not status[0].startswith("200"):
            raise RuntimeError("%s answered %r" % (path, status))
    return one


def asgi_runner(app, path):
    async def one():
        sent, asked = [], []

        async def receive():
            # The body once; then, as a server does, wait for the client to go (Django 5 listens for the disconnect
            # while the view runs, and cancels the wait when the response is sent).
            if asked:
                await asyncio.get_running_loop().create_future()
            asked.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(event):
            sent.append(event)
        await app(scope_for(path), receive, send)
        if not sent or sent[0].get("status") != 200 or sent[-1].get("more_body", False):
            raise RuntimeError("%s answered %r" % (path, sent[:1]))
    return one


def measure(one, seconds, is_async, concurrency=1):
    """CPU µs per request over at least `seconds` of wall time, after a warm-up. An ASGI app runs `concurrency`
    requests at a time, as tasks on one loop, the way a server under wrk -cN runs it."""
    if is_async:
        loop = asyncio.new_event_loop()

        async def serial(n):
            for _ in range(n):
                await one()

        async def many(n):
            await asyncio.gather(*(serial(n // concurrency + (i < n % concurrency)) for i in range(concurrency)))
        run = lambda n: loop.run_until_complete(many(n))  # noqa: E731
    else:
        def run(n):
            for _ in range(n):
                one()
    run(200)
    n, cpu0, wall0 = 0, time.process_time(), time.monotonic()
    while time.monotonic() - wall0 < seconds:
        run(100)
        n += 100
    us = (time.process_time() - cpu0) / n * 1e6
    if is_async:
        loop.close()
    return {"us": round(us, 1), "n": n}


def load(which, iface):
    """The app bench/run serves for endpoint `which` ('django' or 'cpu'), and the path it requests."""
    appdir, spec = app_for(iface, ENDPOINTS[which][0])
    if which == "django":
        os.environ.setdefault("PONTE_DJANGO_DB", os.path.join(tempfile.mkdtemp(prefix="ponte-floor-"), "db.sqlite3"))
    sys.path.insert(0, appdir)
    module, name = spec.split(":")
    return getattr(__import__(module, fromlist=[name]), name), ENDPOINTS[which][2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--only", default="django-wsgi,django-asgi,cpu-wsgi,cpu-asgi")
    ap.add_argument("--concurrency", type=int, default=1, help="ASGI requests in flight at a time (bench/run's "
                    "django endpoint: 16)")
    args = ap.parse_args()
    out = {}
    for case in args.only.split(","):
        which, iface = case.split("-")
        app, path = load(which, iface)
        one = asgi_runner(app, path) if iface == "asgi" else wsgi_runner(app, path)
        out[case] = measure(one, args.seconds, iface == "asgi", max(1, args.concurrency))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
