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


def interpreter_info(environ, start_response):
    """Which program runs the app (python3 under --interpreter host, the ponte executable embedded), what the app
    sees of its command line, and the LD_PRELOAD it and its subprocesses get (ponte's own must not leak to them)."""
    import json
    import os
    import subprocess
    import sys
    child = subprocess.run(["/bin/sh", "-c", 'printf %s "${LD_PRELOAD-unset}"'], capture_output=True, text=True)
    body = json.dumps({
        "exe": os.path.realpath("/proc/self/exe"),
        "executable": sys.executable,
        "argv": sys.argv,
        "ld_preload": os.environ.get("LD_PRELOAD", "unset"),
        "child_ld_preload": child.stdout,
        "leftovers": sorted(k for k in os.environ if k.startswith("PONTE_LD")),
        "path0": sys.path[0],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def extension_modules(environ, start_response):
    """Each C extension from lib-dynload that an app is likely to load, used once: they resolve the C API from the
    executable (a static libpython) or from libpython3.X.so, and must work the same either way."""
    import _asyncio
    import _decimal
    import ctypes
    import json
    import json.encoder
    import sqlite3
    import ssl
    got = {
        "decimal": str(_decimal.Decimal("1.10") * 3),
        "sqlite3": sqlite3.connect(":memory:").execute("select 6 * 7").fetchone()[0],
        "ssl": ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED,
        "json": json.encoder.c_make_encoder is not None and json.dumps({"a": [1]}) == '{"a": [1]}',
        "ctypes": ctypes.pythonapi.Py_IsInitialized(),
        "asyncio": _asyncio.Task.__module__,
    }
    body = json.dumps(got).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Nested:
    class Inner:
        @staticmethod
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"nested"]
