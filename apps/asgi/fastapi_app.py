"""A FastAPI app (Debian's python3-fastapi) on ponte: path and query parameters, a validated JSON body, a
streaming response, and startup/shutdown events.

    build/ponte --app-dir apps/asgi fastapi_app:app
"""

import asyncio

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

app = FastAPI()
state = {"ready": False}


class Note(BaseModel):
    text: str
    stars: int = 0


@app.on_event("startup")
async def startup():
    await asyncio.sleep(0)
    state["ready"] = True


@app.on_event("shutdown")
async def shutdown():
    state["ready"] = False


@app.get("/")
async def root():
    return {"ready": state["ready"], "server": "ponte"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str = None):
    return {"item_id": item_id, "q": q}


@app.post("/notes")
async def create_note(note: Note):
    return {"text": note.text.upper(), "stars": note.stars}


@app.get("/stream")
async def stream(n: int = 5):
    async def gen():
        for i in range(n):
            yield ("line %d\n" % i).encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/sync")
def sync_view():
    # FastAPI runs plain functions in a thread pool: the loop thread stays free.
    return {"sync": True}
