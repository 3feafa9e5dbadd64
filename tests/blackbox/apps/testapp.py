"""The well-behaved WSGI app the black-box tests talk to. Every route runs under wsgiref.validate.validator."""

import hashlib
import json
import os
import threading
import time
from urllib.parse import parse_qs

from validated import validated

# Routes record events (close() called, request seen) here for the tests to read back.
EVENTS = os.environ.get("PONTE_TEST_EVENTS")
_lock = threading.Lock()


def record(event):
    if EVENTS:
        with _lock, open(EVENTS, "a") as f:
            f.write(event + "\n")


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def read_body(environ):
    inp = environ["wsgi.input"]
    chunks = []
    while True:
        chunk = inp.read(65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def echo(environ, start_response):
    """The request as the app saw it, as JSON."""
    body = read_body(environ)
    keys = {k: v for k, v in environ.items() if isinstance(v, str)}
    doc = {
        "environ": keys,
        "body": body.decode("latin-1"),
        "types": {k: type(v).__name__ for k, v in environ.items()},
        "wsgi.version": list(environ["wsgi.version"]),
        "wsgi.multithread": environ["wsgi.multithread"],
        "wsgi.multiprocess": environ["wsgi.multiprocess"],
        "wsgi.run_once": environ["wsgi.run_once"],
        "wsgi.input_terminated": environ.get("wsgi.input_terminated"),
        "has_file_wrapper": "wsgi.file_wrapper" in environ,
    }
    out = json.dumps(doc).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def lines(environ, start_response):
    """Exercises readline(n), readlines() and iteration on wsgi.input."""
    inp = environ["wsgi.input"]
    q = query(environ)
    mode = q.get("mode", "readline")
    if mode == "readline":
        got = []
        while True:
            line = inp.readline(int(q.get("n", "65536")))
            if not line:
                break
            got.append(line.decode("latin-1"))
    elif mode == "readlines":
        got = [line.decode("latin-1") for line in inp.readlines()]
    else:
        got = [line.decode("latin-1") for line in inp]
    out = json.dumps(got).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]


def stream(environ, start_response):
    """n chunks of size bytes, optionally delay seconds apart, no Content-Length (chunked on HTTP/1.1)."""
    q = query(environ)
    n, size, delay = int(q.get("n", "3")), int(q.get("size", "5")), float(q.get("delay", "0"))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def gen():
        for i in range(n):
            if delay and i:
                time.sleep(delay)
            yield (b"%d" % (i % 10)) * size

    return gen()


class Tracked:
    """An iterable that records when close() is called: the tests check ponte always calls it."""

    def __init__(self, name, chunks, delay):
        self.name, self.chunks, self.delay = name, chunks, delay
        record("start " + name)

    def __iter__(self):
        for i in range(self.chunks):
            if i and self.delay:
                time.sleep(self.delay)
            yield b"x" * 65536

    def close(self):
        record("close " + self.name)


def tracked(environ, start_response):
    q = query(environ)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return Tracked(q.get("name", "t"), int(q.get("chunks", "1000000")), float(q.get("delay", "0")))


def write_callable(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write(b"then ")
    return [b"returned"]


def slow(environ, start_response):
    delay = float(query(environ).get("delay", "1"))
    record("slow start")
    time.sleep(delay)
    record("slow end")
    body = b"slept %g" % delay
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def file_route(environ, start_response):
    path = query(environ)["path"]
    f = open(path, "rb")
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f, 32768)


def status(environ, start_response):
    code = int(query(environ).get("code", "200"))
    reasons = {200: "OK", 204: "No Content", 304: "Not Modified", 404: "Not Found", 201: "Created"}
    headers = [] if code in (204, 304) else [("Content-Type", "text/plain")]
    start_response("%d %s" % (code, reasons.get(code, "Whatever")), headers)
    return [] if code in (204, 304) else [b"status %d" % code]


def answer_lines(environ, start_response):
    """Answers each line of the body as it arrives: a client can wait for the answer before sending the next."""
    inp = environ["wsgi.input"]
    start_response("200 OK", [("Content-Type", "text/plain")])

    def answers():
        while True:
            line = inp.readline()
            if not line:
                return
            yield b"got " + line
    return answers()


def numbered_chunk(i, size):
    return b"<%d:%s>" % (i, b"x" * (i * 7919 % size))


def numbered(environ, start_response):
    """?chunks=N&size=S: chunks of varying sizes below S, each naming its number (order and completeness show)."""
    q = query(environ)
    n, size = int(q.get("chunks", "1000")), int(q.get("size", "97"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (numbered_chunk(i, size) for i in range(n))


def big(environ, start_response):
    size = int(query(environ).get("size", "1048576"))
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    return [b"b" * size]


def upload_size(environ, start_response):
    """Reads the body in small pieces and reports its size and a checksum: the body is never held whole."""
    inp = environ["wsgi.input"]
    total, digest = 0, hashlib.sha256()
    while True:
        chunk = inp.read(8192)
        if not chunk:
            break
        total += len(chunk)
        digest.update(chunk)
    out = json.dumps({"size": total, "sha256": digest.hexdigest()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]


def ignore_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"did not read the body"]


def read_all(environ, start_response):
    """wsgi.input.read() with no size (the validator forbids this call, so only the unwrapped app serves it)."""
    body = environ["wsgi.input"].read()
    tail = environ["wsgi.input"].read()
    out = json.dumps({"size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "tail": len(tail)}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def spawn(environ, start_response):
    """Starts a Python thread that burns CPU for ?seconds= under the name ?name=, and answers at once."""
    q = query(environ)
    seconds = float(q.get("seconds", "1"))

    def burn():
        end = time.time() + seconds
        while time.time() < end:
            sum(range(1000))

    threading.Thread(target=burn, name=q.get("name", "burner"), daemon=True).start()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"started"]


def spin(environ, start_response):
    """Burns CPU in the request itself, holding the GIL, for ?seconds= (time.time() does not release it)."""
    end = time.time() + float(query(environ).get("seconds", "1"))
    while time.time() < end:
        sum(range(1000))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"spun"]


def churn(environ, start_response):
    """Stacks that come and go under the GIL sampler: short-lived threads, deep recursion, generators, exceptions."""
    def deep(n):
        if n == 0:
            sum(range(2000))  # time spent at the bottom, not only in the calls and the unwinding (3.14 makes those cheap)
            raise LookupError("bottom")
        return deep(n - 1)

    def frames():
        for i in range(60):
            try:
                deep(100 + i % 60)  # 110 to 170 frames deep: past the 128 the sampler reads
            except LookupError:
                yield i

    threads = [threading.Thread(target=lambda: sum(frames())) for _ in range(3)]
    for t in threads:
        t.start()
    total = sum(frames())
    for t in threads:
        t.join()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(total).encode()]


ROUTES = {
    "/churn": churn,
    "/echo": echo,
    "/spawn": spawn,
    "/spin": spin,
    "/lines": lines,
    "/stream": stream,
    "/tracked": tracked,
    "/write": write_callable,
    "/slow": slow,
    "/file": file_route,
    "/status": status,
    "/big": big,
    "/numbered": numbered,
    "/answer-lines": answer_lines,
    "/upload": upload_size,
    "/ignore": ignore_body,
    "/pid": pid,
    "/readall": read_all,
}


def _dispatch(environ, start_response):
    route = ROUTES.get(environ["PATH_INFO"], echo)
    return route(environ, start_response)


application = validated(_dispatch)

# wsgiref.validate wraps the returned iterable, which hides wsgi.file_wrapper from the server: the sendfile() test
# uses the same routes unwrapped.
raw_application = _dispatch
