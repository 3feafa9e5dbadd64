"""An ASGI app for tests/blackbox/test_loops.py (--loops N): it says which loop thread answered, and can block the
loop that runs a request, so that a test knows the next connection is taken by another loop.

  /whoami           {"thread": the loop thread's ident, "token": the lifespan state's token}
  /block?SECONDS    writes its thread's ident to $PONTE_TEST_MARK, then blocks its loop (a synchronous wait, as a
                    careless app does) until /release or SECONDS pass
  /release          ends the block
  /sleep?SECONDS    writes its thread's ident to $PONTE_TEST_MARK, then awaits asyncio.sleep: the loop goes on
                    serving meanwhile
  /spin?SECONDS     writes its thread's ident to $PONTE_TEST_MARK, then runs pure Python for SECONDS
  /ws               a WebSocket that echoes text in upper case, and says which thread it runs on first

Lifespan: startup and shutdown each append a line to $PONTE_TEST_LIFESPAN_LOG, with the ident of their thread.
"""

import asyncio
import json
import os
import secrets
import threading

from free_threaded import spin  # pure Python for a while: the sampler finds it innermost

RELEASE = threading.Event()


def mark():
    with open(os.environ["PONTE_TEST_MARK"], "a") as f:
        f.write("%d\n" % threading.get_ident())


async def lifespan(receive, send):
    log = os.environ.get("PONTE_TEST_LIFESPAN_LOG")
    while True:
        m = await receive()
        kind = m["type"].split(".")[1]
        if log:
            with open(log, "a") as f:
                f.write("%s %d\n" % (kind, threading.get_ident()))
        if kind == "startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def answer(send, body, status=200):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def websocket(receive, send):
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": str(threading.get_ident())})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": (m.get("text") or "").upper()})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        scope["state"]["token"] = secrets.token_hex(4)
        return await lifespan(receive, send)
    if scope["type"] == "websocket":
        return await websocket(receive, send)
    path, query = scope["path"], scope["query_string"].decode()
    if path == "/whoami":
        return await answer(send, {"thread": threading.get_ident(), "token": scope["state"].get("token")})
    if path == "/block":
        RELEASE.clear()
        mark()
        released = RELEASE.wait(float(query or "10"))
        return await answer(send, {"thread": threading.get_ident(), "released": released})
    if path == "/release":
        RELEASE.set()
        return await answer(send, {"thread": threading.get_ident()})
    if path == "/sleep":
        mark()
        await asyncio.sleep(float(query or "0.1"))
        return await answer(send, {"thread": threading.get_ident()})
    if path == "/spin":
        mark()
        return await answer(send, {"thread": threading.get_ident(), "n": spin(float(query or "1"))})
    return await answer(send, {"error": "no such path"}, status=404)
