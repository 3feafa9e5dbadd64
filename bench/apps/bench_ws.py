"""The WebSocket benchmark's ASGI app (bench/ws), the same for every server.

/echo       sends every message back.
/broadcast  sends every message to every connection on /broadcast (each send awaited in turn, as a chat room
            written the plain way would).
"""

ROOM = set()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            ev = await receive()
            await send({"type": ev["type"] + ".complete"})
            if ev["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    broadcast = scope["path"] == "/broadcast"
    if broadcast:
        ROOM.add(send)
    try:
        while True:
            ev = await receive()
            if ev["type"] == "websocket.disconnect":
                return
            if ev.get("bytes") is not None:
                out = {"type": "websocket.send", "bytes": ev["bytes"]}
            else:
                out = {"type": "websocket.send", "text": ev["text"]}
            if not broadcast:
                await send(out)
                continue
            for peer in list(ROOM):
                try:
                    await peer(out)
                except Exception:
                    ROOM.discard(peer)
    finally:
        ROOM.discard(send)
