"""Deliberately broken WSGI apps: ponte must answer with a clear error (or cut the connection when the head is
already out), log why, and keep serving. Not wrapped in the validator: breaking the protocol is their point."""

import os
import time


def record(event):
    path = os.environ.get("PONTE_TEST_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(event + "\n")


class Closing:
    def __init__(self, name, items):
        self.name, self.items = name, items

    def __iter__(self):
        for item in self.items:
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self):
        record("close " + self.name)


def raise_before(environ, start_response):
    raise RuntimeError("boom before start_response")


def raise_after_start(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing("after-start", [RuntimeError("boom in the iterable before any body")])


def raise_mid_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing("mid-body", [b"first chunk ", RuntimeError("boom after the first chunk")])


def returns_str(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["not bytes"]


def returns_none(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return None


def no_start_response(environ, start_response):
    return [b"forgot start_response"]


def bad_header_crlf(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Evil", "a\r\nInjected: yes")])
    return [b"never sent"]


def bad_header_name(environ, start_response):
    start_response("200 OK", [("Bad Name", "x")])
    return [b"never sent"]


def status_injection(environ, start_response):
    start_response("200 OK\r\nInjected: yes", [("Content-Type", "text/plain")])
    return [b"never sent"]


def header_nul(environ, start_response):
    start_response("200 OK", [("X-A", "a\x00b")])
    return [b"never sent"]


def header_bare_lf(environ, start_response):
    start_response("200 OK", [("X-A", "a\nInjected: yes")])
    return [b"never sent"]


def header_name_crlf(environ, start_response):
    start_response("200 OK", [("X-A\r\nInjected", "yes")])
    return [b"never sent"]


def leak_thread(environ, start_response):
    """Starts a thread that outlives the request (and the server, but for the interpreter's exit)."""
    import threading

    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    threading.Thread(target=time.sleep, args=(0.5,)).start()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"leaked"]


def bad_status(environ, start_response):
    start_response("OK", [])
    return [b"never sent"]


def twice(environ, start_response):
    start_response("200 OK", [])
    start_response("500 Oops", [])
    return [b"never sent"]


def exc_info_replace(environ, start_response):
    """Legal: start_response again with exc_info before anything was sent replaces the status."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("changed my mind")
    except ValueError:
        import sys
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced"]


def exc_info_too_late(environ, start_response):
    def gen():
        yield b"already sent "
        try:
            raise ValueError("too late")
        except ValueError:
            import sys
            start_response("500 Error", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"unreachable"

    start_response("200 OK", [("Content-Type", "text/plain")])
    return gen()


def too_long(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"12345", b"6789"]


def too_short(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"12345"]


def sys_exit(environ, start_response):
    raise SystemExit(3)


def hang(environ, start_response):
    time.sleep(3600)


_kept = {}


def keep_callables(environ, start_response):
    """Keeps start_response and write() beyond its request; the next request calls them."""
    _kept["start_response"] = start_response
    _kept["write"] = start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"kept"]


def call_kept(environ, start_response):
    outcomes = []
    for name, call in (("start_response", lambda: _kept["start_response"]("200 OK", [])),
                       ("write", lambda: _kept["write"](b"stale"))):
        try:
            call()
            outcomes.append(name + ": no error")
        except RuntimeError as e:
            outcomes.append("%s: %s" % (name, e))
    body = "\n".join(outcomes).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


SHARED_BODY = [b"one list ", b"for every request"]


def shared_list(environ, start_response):
    """Returns the same list object to every request, on every thread at once."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return SHARED_BODY


def read_whole_body(environ, start_response):
    """Reads its body to the end, letting wsgi.input's OSError pass when the client goes half way."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d bytes" % len(body)]


ROUTES = {name: fn for name, fn in globals().items() if callable(fn) and not name.startswith("_")
          and name not in ("record", "Closing", "SHARED_BODY")}


def application(environ, start_response):
    name = environ["PATH_INFO"].strip("/")
    return ROUTES[name](environ, start_response)
