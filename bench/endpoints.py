"""What bench/run measures, shared with bench/floor.py: the endpoints (which app, which request, how many
connections) and where each app lives."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_APPS = os.path.join(HERE, "apps")
REPO_APPS = os.path.join(os.path.dirname(HERE), "apps")

RELEASES = 1000  # per request of the release endpoint: each is a release and a take of the GIL
ENDPOINTS = {
    # name: (app, method, path, connections, what)
    "hello": ("bench", "GET", "/", 64, "13-byte body"),
    "io": ("bench", "GET", "/io", 64, "waits 10 ms, c=64"),
    "io256": ("bench", "GET", "/io", 256, "waits 10 ms, c=256"),
    "cpu": ("bench", "GET", "/cpu", 8, "about 1 ms of Python"),
    "stream": ("bench", "GET", "/stream", 16, "64 KiB in 16 chunks"),
    "upload": ("bench", "POST", "/upload", 8, "1 MiB request body"),
    "django": ("django", "GET", "/", 16, "the Django demo's index page (ORM + template)"),
    "release": ("bench", "GET", "/release?n=%d" % RELEASES, 1,
                "releases and retakes the GIL %d times" % RELEASES),
}
# Measured by bench/run's extras only (the GIL probe's price per transition), not in the table's default endpoints.
EXTRA_ENDPOINTS = {"release"}


def app_for(iface, which):
    """(app folder, module:callable) of the bench app or the Django demo, for 'wsgi' or 'asgi'."""
    if which == "django":
        return REPO_APPS, "django_site.%s:application" % iface
    return BENCH_APPS, "bench_%s:app" % iface
