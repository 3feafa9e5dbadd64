"""The ASGI echo app for the request corpora: the same JSON as corpus_echo.py (headers in CGI form, path
percent-decoded as latin-1 bytes), so one test checks both interfaces."""

import json
import os
from urllib.parse import unquote_to_bytes

EVENTS = os.environ.get("PONTE_TEST_EVENTS")


def cgi_key(name):
    key = name.decode("latin-1").upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {}
    for name, value in scope["headers"]:
        if b"_" in name:
            continue        # as ponte's WSGI environ does
        key = cgi_key(name)
        headers[key] = headers[key] + ", " + value.decode("latin-1") if key in headers else value.decode("latin-1")
    raw = scope["raw_path"]
    doc = {
        "method": scope["method"],
        "path": "" if raw == b"*" else unquote_to_bytes(raw).decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "protocol": "HTTP/" + scope["http_version"],
        "headers": headers,
        "body": body.decode("latin-1"),
    }
    line = json.dumps(doc)
    if EVENTS:
        with open(EVENTS, "a") as f:
            f.write(line + "\n")
    out = line.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})
