"""Apps for tests/blackbox/test_tls.py: what the app sees of TLS.

WSGI (application) and ASGI (app), the same routes:
  /            {"scheme": ..., "https": environ["HTTPS"] or None (WSGI), "tls": scope's extensions["tls"] (ASGI)}
  /big?N       N bytes, (i % 251) for i in range(N)
  /upload      the request body's length and SHA-256
ASGI also takes a WebSocket on any path: it sends its scheme and TLS extension, then echoes text in upper case.
"""

import hashlib
import json


def big(n):
    pattern = bytes(i % 251 for i in range(251 * 64))
    return (pattern * (n // len(pattern) + 1))[:n]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/big":
        body = big(int(environ["QUERY_STRING"]))
    elif path == "/upload":
        data = environ["wsgi.input"].read()
        body = ("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode()
    else:
        body = json.dumps({"scheme": environ["wsgi.url_scheme"], "https": environ.get("HTTPS")}).encode()
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def tls_of(scope):
    tls = scope.get("extensions", {}).get("tls")
    return dict(tls, client_cert_chain=list(tls["client_cert_chain"])) if tls else None


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps({"scheme": scope["scheme"], "tls": tls_of(scope)})})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": (m.get("text") or "").upper()})
    path = scope["path"]
    if path == "/big":
        body = big(int(scope["query_string"]))
    elif path == "/upload":
        h, n = hashlib.sha256(), 0
        while True:
            m = await receive()
            h.update(m.get("body", b""))
            n += len(m.get("body", b""))
            if not m.get("more_body"):
                break
        body = ("%d %s" % (n, h.hexdigest())).encode()
    else:
        body = json.dumps({"scheme": scope["scheme"], "tls": tls_of(scope)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
