"""The WSGI app every WSGI server in bench/run serves: one module, so each server is started once per run.

    /         hello: 13 bytes                  /io       waits 10 ms (like a database call)
    /cpu      about 1 ms of pure Python        /stream   64 KiB in 16 chunks of 4 KiB
    /upload   reads the whole body, answers its size
    /release?n=N  releases and retakes the GIL N times (os.fstat of an open file, which CPython calls without the
              GIL; about 0.5 µs each): bench/run prices the GIL probe per transition with it
"""

import os
import time

HELLO = b"Hello, world!"
CHUNK = b"x" * 4096
DEVNULL = os.open(os.devnull, os.O_RDONLY)


def work(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [HELLO]
    if path == "/io":
        time.sleep(0.01)
        body = b"waited 10 ms"
    elif path == "/cpu":
        body = b"%d" % work(20000)
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (CHUNK for _ in range(16))
    elif path == "/release":
        n = int(environ["QUERY_STRING"].partition("n=")[2])
        for _ in range(n):
            os.fstat(DEVNULL)
        body = b"released %d times" % n
    elif path == "/upload":
        inp, size = environ["wsgi.input"], 0
        while True:
            chunk = inp.read(65536)
            if not chunk:
                break
            size += len(chunk)
        body = b"%d" % size
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = application
