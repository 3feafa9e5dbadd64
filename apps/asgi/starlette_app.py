"""A Starlette app (Debian's python3-starlette) on ponte: routing, JSON, a streaming response, a request body,
a WebSocket chat-style echo, and lifespan events that prepare state for the requests.

    build/ponte --app-dir apps/asgi starlette_app:app
"""

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


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


async def ws_echo(websocket: WebSocket):
    """Echoes text as "echo: ...", JSON as JSON with a count; says goodbye on "bye" and closes with 4000."""
    await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None)
    count = 0
    try:
        while True:
            text = await websocket.receive_text()
            count += 1
            if text == "bye":
                await websocket.send_json({"goodbye": True, "count": count})
                await websocket.close(code=4000)
                return
            await websocket.send_text("echo: " + text)
    except WebSocketDisconnect:
        pass


app = Starlette(
    routes=[
        Route("/", home),
        Route("/items/{item_id:int}", item),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        WebSocketRoute("/ws", ws_echo),
    ],
    lifespan=lifespan,
)
