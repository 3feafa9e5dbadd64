"""The demo ponte serves from the README's first command: a landing page that links the example apps, each mounted
under its own path (SCRIPT_NAME), the way a WSGI server mounts any app."""

import html
import os
import sys

import cpu_bound
import hello
import io_bound
import shared_state

MOUNTS = {
    "/hello": (hello.application, "Hello, world: the smallest WSGI app, the throughput baseline."),
    "/io": (io_bound.application, "I/O-bound: waits ?delay=0.01 seconds with the GIL released. Threads help."),
    "/cpu": (cpu_bound.application, "CPU-bound: ?n=20000 loops of pure Python while holding the GIL. Threads don't."),
    "/shared": (shared_state.application, "Shared state: the same loops under one lock every request takes. On a "
                "free-threaded CPython, threads wait for it instead of the GIL."),
}

try:
    # The Django project, when Debian's python3-django is installed.
    from django_site.wsgi import application as django_app

    MOUNTS["/django"] = (django_app, "A Django 3.2 project: a notes list with a form (CSRF), JSON, and a 404.")
except ImportError as e:
    print("demo: Django project not mounted: %s" % e, file=sys.stderr)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ponte demo</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222 }}
code, pre {{ background: #f3f3f3; padding: .1rem .3rem; border-radius: 3px }}
pre {{ padding: .6rem; overflow-x: auto }}
li {{ margin: .4rem 0 }}
</style></head><body>
<h1>ponte</h1>
<p>A small HTTP gateway in C serving this Python WSGI app. Requests are parsed by the C event loop and run by
{mode}.</p>
<ul>
{links}
</ul>
{gil}
<h2>Try it</h2>
<pre>wrk -t1 -c64 -d5s 'http://127.0.0.1:8000/io?delay=0.01'   # threads overlap the waits
wrk -t1 -c8  -d5s 'http://127.0.0.1:8000/cpu?n=20000'     # one GIL: threads queue for it
wrk -t1 -c50 -d5s  http://127.0.0.1:8000/hello            # the server's own cost</pre>
<p>Restart with <code>--threads 0</code> to run the app on the loop thread, or <code>--threads 64</code> for more
I/O overlap, and compare.</p>
</body></html>
"""


def landing(environ, start_response):
    threads = "worker threads" if environ.get("wsgi.multithread") else "the event-loop thread itself (--threads 0)"
    items = []
    for prefix, (_, text) in MOUNTS.items():
        href = prefix + ("/" if prefix == "/django" else "")
        items.append('<li><a href="%s">%s</a> &mdash; %s</li>' % (href, prefix, html.escape(text)))
    url = os.environ.get("PONTE_DEMO_GIL_URL")
    gil = ('<p><b>The GIL, live:</b> <a href="%s">%s</a> shows which thread holds it, which wait, and which route; '
           'its buttons load this server for 10 s with I/O-bound or CPU-bound clients, no wrk needed.</p>'
           % (html.escape(url), html.escape(url))) if url else ""
    body = PAGE.format(mode=threads, links="\n".join(items), gil=gil).encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "") or "/"
    for prefix, (app, _) in MOUNTS.items():
        if path == prefix or path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix):]
            return app(environ, start_response)
    if path == "/":
        return landing(environ, start_response)
    body = b"Not Found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
