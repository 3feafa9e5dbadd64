"""Modules for the start-up error tests."""

not_callable = 42


async def asgi_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def sys_info(environ, start_response):
    import json
    import sys
    body = json.dumps({"executable": sys.executable, "prefix": sys.prefix, "version": sys.version}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Nested:
    class Inner:
        @staticmethod
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"nested"]
