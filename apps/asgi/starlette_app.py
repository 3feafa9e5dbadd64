"""A Starlette app (Debian's python3-starlette) on ponte: routing, JSON, a streaming response, a request body,
and lifespan events that prepare state for the requests.

    build/ponte --app-dir apps/asgi starlette_app:app
"""

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app):
    app.state.greeting = "hello from lifespan"
    app.state.started = True
    yield
    app.state.started = False


async def home(request: Request):
    return PlainTextResponse(request.app.state.greeting)


async def item(request: Request):
    item_id = request.path_params["item_id"]
    return JSONResponse({"item_id": item_id, "q": request.query_params.get("q")})


async def echo(request: Request):
    body = await request.body()
    return JSONResponse({"length": len(body), "json": await request.json() if body else None})


async def stream(request: Request):
    n = int(request.query_params.get("n", "5"))

    async def numbers():
        for i in range(n):
            yield b"%d\n" % i
            await asyncio.sleep(0.01)

    return StreamingResponse(numbers(), media_type="text/plain")


app = Starlette(
    routes=[
        Route("/", home),
        Route("/items/{item_id:int}", item),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
    ],
    lifespan=lifespan,
)
