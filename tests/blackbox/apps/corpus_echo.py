"""The echo app for the request corpora: answers each request with the request as the app saw it (JSON) and
appends the same line to $PONTE_TEST_EVENTS, so a test can prove an invalid request never reached it."""

import json
import os

from validated import validated

EVENTS = os.environ.get("PONTE_TEST_EVENTS")


def echo(environ, start_response):
    inp = environ["wsgi.input"]
    body = b""
    while True:
        chunk = inp.read(65536)
        if not chunk:
            break
        body += chunk
    doc = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_") or k.startswith("CONTENT_")},
        "body": body.decode("latin-1"),
    }
    line = json.dumps(doc)
    if EVENTS:
        with open(EVENTS, "a") as f:
            f.write(line + "\n")
    out = line.encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


application = validated(echo)
