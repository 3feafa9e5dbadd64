"""An I/O-bound WSGI app: each request waits, like the founding blog post's URL fetch, without using the CPU.

    /?delay=0.01     wait 10 ms (default), at most 10 s

The wait is a blocking call that releases the GIL, as a socket read or a database query does, so other worker
threads run meanwhile: with N threads, N requests wait at once. This is where threads help.
"""

import time
from urllib.parse import parse_qs

MAX_DELAY = 10.0


def application(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        delay = min(max(float(q.get("delay", ["0.01"])[0]), 0.0), MAX_DELAY)
    except ValueError:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"delay must be a number of seconds\n"]
    time.sleep(delay)       # releases the GIL, like waiting for a socket
    body = b"waited %.3f s\n" % delay
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = application
