"""An ASGI app with one WebSocket route per behaviour test_websocket.py checks. What the app sees (disconnect codes,
errors from send()) is appended as JSON lines to $PONTE_TEST_EVENTS."""

import asyncio
import json
import os
from urllib.parse import parse_qs

EVENTS = os.environ.get("PONTE_TEST_EVENTS")


def note(tag, **kw):
    if EVENTS:
        with open(EVENTS, "a") as f:
            f.write(json.dumps(dict(tag=tag, **kw)) + "\n")


async def echo_until_disconnect(receive, send, cid):
    while True:
        ev = await receive()
        if ev["type"] == "websocket.disconnect":
            note("disconnect", id=cid, code=ev["code"], reason=ev.get("reason", ""))
            return
        if ev.get("text") is not None:
            await send({"type": "websocket.send", "text": ev["text"]})
        else:
            await send({"type": "websocket.send", "bytes": ev["bytes"]})


def describe(scope):
    out = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string", "state")}
    out["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    out["raw_path"] = scope["raw_path"].decode("latin-1")
    out["query_string"] = scope["query_string"].decode("latin-1")
    out["types"] = {k: type(v).__name__ for k, v in scope.items()}
    out["state"] = dict(scope.get("state") or {})
    return out


async def send_after_close(receive, send, cid):
    ev = await receive()
    note("disconnect", id=cid, code=ev["code"], reason=ev.get("reason", ""), type=ev["type"])
    try:
        await send({"type": "websocket.send", "text": "too late"})
        note("send_after_close", id=cid, raised=None)
    except OSError as e:
        note("send_after_close", id=cid, raised=type(e).__name__, oserror=True)
    ev = await receive()
    note("receive_after_close", id=cid, type=ev["type"])


async def flood(receive, send, q, cid):
    size, n = int(q.get("size", "65536")), int(q.get("n", "1000"))
    chunk = b"x" * size
    for i in range(n):
        try:
            await send({"type": "websocket.send", "bytes": chunk})
        except OSError:
            note("flood", id=cid, sent=i, stopped="disconnected")
            return
        if i % 16 == 0:
            note("flood", id=cid, sent=i)
    note("flood", id=cid, sent=n, stopped="done")
    await echo_until_disconnect(receive, send, cid)


async def websocket(scope, receive, send):
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    cid, route = q.get("id", ""), scope["path"]
    ev = await receive()
    assert ev["type"] == "websocket.connect", ev
    if route == "/deny":
        await send({"type": "websocket.close"})
        return
    if route == "/deny-custom":
        await send({"type": "websocket.http.response.start", "status": 401, "headers": [(b"x-why", b"no")]})
        await send({"type": "websocket.http.response.body", "body": b"go ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"away"})
        return
    if route == "/raise-before":
        raise RuntimeError("boom before accepting")
    if route == "/noaccept":
        return
    if route == "/bad-sub":
        try:
            await send({"type": "websocket.accept", "subprotocol": "nope"})
        except ValueError as e:
            note("bad_sub", id=cid, error=str(e))
        await send({"type": "websocket.close", "code": 1008})
        return
    accept = {"type": "websocket.accept"}
    if "sub" in q:
        accept["subprotocol"] = q["sub"]
    if route == "/headers":
        accept["headers"] = [(b"x-extra", b"yes"), (b"set-cookie", b"a=1")]
    await send(accept)
    if route == "/scope":
        await send({"type": "websocket.send", "text": json.dumps(describe(scope))})
        await echo_until_disconnect(receive, send, cid)
    elif route == "/raise-after":
        raise RuntimeError("boom after accepting")
    elif route == "/return":
        return
    elif route == "/close":
        await send({"type": "websocket.close", "code": int(q.get("code", "1000")), "reason": q.get("reason", "")})
        await send_after_close(receive, send, cid)
    elif route == "/flood":
        await flood(receive, send, q, cid)
    elif route == "/hello-then-echo":
        await send({"type": "websocket.send", "text": "hello"})
        await echo_until_disconnect(receive, send, cid)
    else:
        await echo_until_disconnect(receive, send, cid)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            ev = await receive()
            if ev["type"] == "lifespan.startup" and "state" in scope:
                scope["state"]["greeting"] = "from lifespan"
            await send({"type": ev["type"] + ".complete"})
            if ev["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send)
    headers = dict(scope["headers"])
    body = b"plain http, upgrade=" + headers.get(b"upgrade", b"-")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
