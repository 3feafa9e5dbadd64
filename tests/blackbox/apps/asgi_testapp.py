"""The ASGI 3.0 app the black-box tests talk to: echo of the scope and body, streaming, back-pressure, errors,
and the asyncio features apps rely on."""

import asyncio
import contextvars
import json
import os
import threading
import time
from urllib.parse import parse_qs

EVENTS = os.environ.get("PONTE_TEST_EVENTS")
request_id = contextvars.ContextVar("request_id", default=None)


def record(event):
    if EVENTS:
        with open(EVENTS, "a") as f:
            f.write(event + "\n")


def query(scope):
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def respond(send, body, status=200, content_type=b"application/json"):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Disconnected(Exception):
    """The client went away before the whole body arrived."""


async def read_body(receive):
    chunks, events = [], 0
    while True:
        ev = await receive()
        events += 1
        if ev["type"] == "http.disconnect":
            raise Disconnected()
        chunks.append(ev["body"])
        if not ev.get("more_body"):
            return b"".join(chunks), events


async def echo(scope, receive, send):
    body, events = await read_body(receive)
    doc = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string", "state")}
    doc["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    doc["raw_path"] = scope["raw_path"].decode("latin-1")
    doc["query_string"] = scope["query_string"].decode("latin-1")
    doc["body"] = body.decode("latin-1")
    doc["body_events"] = events
    doc["types"] = {k: type(v).__name__ for k, v in scope.items()}
    await respond(send, doc)


async def stream(scope, receive, send):
    q = query(scope)
    n, size, delay = int(q.get("n", "3")), int(q.get("size", "4")), float(q.get("delay", "0"))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(n):
        if delay:
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b"%d" % (i % 10) * size, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def big(scope, receive, send):
    """One body of ?size= bytes, sent at once."""
    await respond(send, b"b" * int(query(scope).get("size", "1048576")), content_type=b"application/octet-stream")


async def flood(scope, receive, send):
    """Sends until the client goes: back-pressure must hold memory flat; send() then raises OSError."""
    name = query(scope).get("name", "flood")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    sent = 0
    try:
        while sent < 10_000_000_000:
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            sent += 65536
    except OSError as e:
        record("%s stopped: %s %s" % (name, type(e).__name__, isinstance(e, OSError)))
        raise


async def disconnect(scope, receive, send):
    """Waits for http.disconnect while the client is still connected, then records it."""
    name = query(scope).get("name", "d")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"waiting", "more_body": True})
    body, _ = await read_body(receive)
    ev = await receive()
    record("%s got %s" % (name, ev["type"]))


async def after_response(scope, receive, send):
    await respond(send, b"done", content_type=b"text/plain")
    ev = await receive()
    record("after-response got %s" % ev["type"])


async def asyncio_features(scope, receive, send):
    loop = asyncio.get_running_loop()
    out = {}

    # sleep, create_task, gather
    async def worker(i):
        await asyncio.sleep(0.01 * i)
        return i * i
    out["gather"] = await asyncio.gather(*(loop.create_task(worker(i)) for i in range(5)))

    # wait_for and cancellation
    cancelled = False
    try:
        await asyncio.wait_for(asyncio.sleep(10), timeout=0.05)
    except asyncio.TimeoutError:
        cancelled = True
    out["wait_for_timeout"] = cancelled

    # contextvars follow the task
    request_id.set(query(scope).get("id"))

    async def read_var():
        await asyncio.sleep(0)
        return request_id.get()
    out["contextvar"] = await loop.create_task(read_var())

    # run_in_executor: a blocking call on a thread, the loop keeps going
    started = time.time()
    out["executor"] = await loop.run_in_executor(None, lambda: (time.sleep(0.05), threading.get_ident())[1])
    out["executor_other_thread"] = out["executor"] != threading.get_ident()
    out["executor_waited"] = time.time() - started >= 0.04

    # call_soon_threadsafe from another thread
    fut = loop.create_future()
    threading.Thread(target=lambda: loop.call_soon_threadsafe(fut.set_result, "from-thread")).start()
    out["threadsafe"] = await asyncio.wait_for(fut, 5)

    # open_connection to a local TCP server run by this loop
    async def handle(reader, writer):
        data = await reader.readline()
        writer.write(data.upper())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    await writer.drain()
    out["tcp"] = (await reader.readline()).decode()
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    out["running_loop_type"] = type(loop).__name__
    await respond(send, out)


async def raise_before(scope, receive, send):
    raise RuntimeError("boom before the response")


async def raise_after(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("boom mid-response")


async def no_response(scope, receive, send):
    return None


async def incomplete(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"half", "more_body": True})


async def bad_event(scope, receive, send):
    await send({"type": "http.response.body", "body": b"no start"})


async def bad_header(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-evil", b"a\r\nInjected: 1")]})


class Name(bytes):
    pass


async def header_shapes(scope, receive, send):
    """Headers in every shape ASGI servers take: a list of tuples, of lists, a generator, a tuple; bytes subclasses.
    Each pair must reach the wire as it was when sent, whatever the app does to its list afterwards."""
    shape = query(scope)["shape"]
    pairs = [(b"x-one", b"1"), (b"x-two", b"2")]
    headers = {"tuples": pairs, "lists": [list(p) for p in pairs], "generator": (p for p in pairs),
               "tuple": tuple(pairs), "subclass": [(Name(b"x-one"), Name(b"1")), (b"x-two", b"2")]}[shape]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if shape == "lists":
        headers[0][1] = b"changed"
    await send({"type": "http.response.body", "body": b"ok"})


async def block(scope, receive, send):
    """A blocking call inside a coroutine: the whole loop stalls (what the loop-lag figure is for)."""
    time.sleep(float(query(scope).get("seconds", "0.3")))
    await respond(send, b"blocked", content_type=b"text/plain")


async def spin(scope, receive, send):
    """Burns CPU on the loop, holding the GIL, for ?seconds= (the per-route GIL table's known answer)."""
    end = time.time() + float(query(scope).get("seconds", "0.005"))
    while time.time() < end:
        sum(range(1000))
    await respond(send, b"spun", content_type=b"text/plain")


async def slow(scope, receive, send):
    await asyncio.sleep(float(query(scope).get("delay", "0.5")))
    await respond(send, b"slept", content_type=b"text/plain")


async def cancel_receive(scope, receive, send):
    """A receive() cancelled by wait_for must not block the next one."""
    timed_out = False
    try:
        await asyncio.wait_for(receive(), 0.1)
    except asyncio.TimeoutError:
        timed_out = True
    body, _ = await read_body(receive)
    await respond(send, {"timed_out": timed_out, "body": body.decode()})


async def collect(scope, receive, send):
    """A full garbage collection while another request's task waits on its receive()."""
    import gc
    gc.collect()
    await respond(send, b"collected", content_type=b"text/plain")


async def cancel_self(scope, receive, send):
    """The app's own task cancelled: the task ends cancelled, the client gets a 500."""
    asyncio.current_task().cancel()
    await asyncio.sleep(1)


async def in_task(scope, receive, send):
    """The app runs in a real asyncio Task: current_task() and asyncio.timeout() (which needs it) work."""
    task = asyncio.current_task()
    out = {"task": type(task).__name__, "name": task.get_name()}
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(1)
    except TimeoutError:
        out["timed_out"] = True
    await respond(send, out)


factory_calls = []


async def task_factory(scope, receive, send):
    """?set=1 installs a task factory (the next requests' tasks come from it), ?set=0 removes it."""
    loop = asyncio.get_running_loop()
    if query(scope).get("set") == "1":
        def factory(loop, coro, **kwargs):
            factory_calls.append(type(coro).__name__)
            return asyncio.Task(coro, loop=loop, **kwargs)
        loop.set_task_factory(factory)
    elif query(scope).get("set") == "0":
        loop.set_task_factory(None)
    await respond(send, {"calls": len(factory_calls), "task": type(asyncio.current_task()).__name__})


async def scope_add(scope, receive, send):
    scope["added_by_app"] = True
    scope["headers"].append((b"x-added", b"1"))
    await respond(send, {"added": True})


ROUTES = {
    "/task-factory": task_factory, "/scope_add": scope_add, "/header-shapes": header_shapes,
    "/cancel-receive": cancel_receive, "/collect": collect, "/cancel-self": cancel_self, "/in-task": in_task,
    "/echo": echo, "/stream": stream, "/flood": flood, "/disconnect": disconnect,
    "/after-response": after_response, "/asyncio": asyncio_features, "/raise-before": raise_before,
    "/raise-after": raise_after, "/incomplete": incomplete, "/no-response": no_response, "/bad-event": bad_event, "/bad-header": bad_header,
    "/slow": slow, "/spin": spin, "/block": block, "/big": big,
}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    try:
        await ROUTES.get(scope["path"], echo)(scope, receive, send)
    except Disconnected:
        record("disconnected before the body was complete")


class LegacyApp:
    """ASGI 2 (double callable): LegacyApp(scope) is the instance, instance(receive, send) the coroutine."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] != "http":
            return
        await respond(send, {"asgi": self.scope["asgi"], "path": self.scope["path"]})
