"""ASGI apps for the lifespan tests."""

import asyncio
import os

EVENTS = os.environ.get("PONTE_TEST_EVENTS")


def record(event):
    if EVENTS:
        with open(EVENTS, "a") as f:
            f.write(event + "\n")


async def respond_state(scope, send):
    body = repr(sorted(scope.get("state", {}).items())).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def good(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(0.05)       # real async work at start-up
                scope["state"]["db"] = "connected"
                record("startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.sleep(0.05)
                record("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    else:
        await respond_state(scope, send)
        if "state" in scope:
            scope["state"]["mutated"] = True     # a shallow copy: the next request must not see it


async def failing(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await respond_state(scope, send)


async def no_lifespan(scope, receive, send):
    if scope["type"] != "http":
        raise ValueError("only http is supported")
    await respond_state(scope, send)


async def shutdown_fails(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "could not flush the cache"})
        return
    await respond_state(scope, send)
