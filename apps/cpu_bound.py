"""A CPU-bound WSGI app: each request does pure-Python arithmetic while holding the GIL.

    /?n=20000        work size (default 20000, about 1 ms of Python here), at most 10,000,000

Only one thread runs Python at a time, so more worker threads do not make this faster: they queue for the GIL
(watch the convoy in ponte's GIL view). Processes, each with its own GIL, do.
"""

from urllib.parse import parse_qs

MAX_N = 10_000_000


def work(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def application(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        n = min(max(int(q.get("n", ["20000"])[0]), 0), MAX_N)
    except ValueError:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"n must be a whole number\n"]
    body = b"work(%d) = %d\n" % (n, work(n))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = application
