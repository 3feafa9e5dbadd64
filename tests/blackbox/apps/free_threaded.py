"""Routes for tests/blackbox/test_free_threaded.py: whether the GIL is on, a module that turns it back on, and a
spin of pure Python that two threads can run at once only without a GIL. PONTE_TEST_NEEDS_GIL_AT_IMPORT=1 imports
the module with the app."""

import importlib
import json
import os
import sys
import threading
import time

if os.environ.get("PONTE_TEST_NEEDS_GIL_AT_IMPORT") == "1":
    importlib.import_module("needs_gil")


def gil_enabled():
    return getattr(sys, "_is_gil_enabled", lambda: True)()  # 3.13+; 3.11 always has one


def spin(seconds):
    """Pure Python for `seconds`: the sampler finds it innermost."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


LOCK = threading.Lock()
COUNTS = {}


def contended(seconds):
    """Counts into one dict under one lock, holding the lock while it computes: other threads wait for it here."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        with LOCK:
            COUNTS["n"] = COUNTS.get("n", 0) + 1
            spin(0.002)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/import":
        importlib.import_module("needs_gil")
    elif path == "/spin":
        spin(float(environ["QUERY_STRING"] or "1"))
    elif path == "/contended":
        contended(float(environ["QUERY_STRING"] or "1"))
    body = json.dumps({"gil": gil_enabled()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
