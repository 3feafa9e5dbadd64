"""A WSGI app whose requests all update one piece of shared state: a dict of counters behind one lock, held while
each request computes its update, as code that guards a cache or a tally with a lock does.

    /?n=20000        work size under the lock (default 20000, about 1 ms of Python here), at most 10,000,000

With a GIL, threads take turns anyway and the lock costs little more. Without one (free-threaded 3.14t), the
threads that ran /cpu at once wait here for the lock instead: ponte's GIL view shows them waiting for a lock, and
names this function as where they wait. Shorten what runs under the lock and they run at once again.
"""

import threading
from urllib.parse import parse_qs

import cpu_bound

LOCK = threading.Lock()
TALLY = {}


def update(n):
    with LOCK:
        TALLY[n] = TALLY.get(n, 0) + cpu_bound.work(n) % 2 + 1
        return TALLY[n]


def application(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        n = min(max(int(q.get("n", ["20000"])[0]), 0), cpu_bound.MAX_N)
    except ValueError:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"n must be a whole number\n"]
    body = b"tally[%d] = %d\n" % (n, update(n))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = application
