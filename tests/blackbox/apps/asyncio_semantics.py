"""ASGI routes that lean on asyncio's and anyio's view of the running Task, for test_asgi_tasks.py: ponte takes a
Task's first step at once (gateway/asgi_task.c), and none of this may notice. Each route answers JSON."""

import asyncio
import contextvars
import json
import os
import signal
import sys
import threading
import time

# The WeakSet a Task registers in from its constructor (gateway/asgi_all_tasks.c); from 3.14 asyncio keeps its C
# tasks in a list of its own, and there is no set to look at.
TASK_SET = "_all_tasks" if sys.version_info < (3, 12) else "_scheduled_tasks" if sys.version_info < (3, 14) else None

import anyio

REQUEST_VAR = contextvars.ContextVar("request_var", default="unset")


async def current(scope):
    task = asyncio.current_task()
    first = {"is_task": isinstance(task, asyncio.Task), "done": task.done(), "in_all_tasks": task in asyncio.all_tasks(),
             "coro": type(task.get_coro()).__name__, "name": task.get_name().rstrip("0123456789")}
    await asyncio.sleep(0)
    first["same_after_a_wait"] = asyncio.current_task() is task
    return first


async def timeout(scope):
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(5)
        timed_out = False
    except TimeoutError:
        timed_out = True
    return {"timed_out": timed_out, "seconds": time.monotonic() - t0, "cancelling": asyncio.current_task().cancelling()}


async def wait_for(scope):
    try:
        await asyncio.wait_for(asyncio.sleep(5), 0.05)
        return {"timed_out": False}
    except asyncio.TimeoutError:
        return {"timed_out": True}


async def cancel_self(scope):
    asyncio.current_task().cancel()
    try:
        await asyncio.sleep(0)
        cancelled = False
    except asyncio.CancelledError:
        cancelled = True
        asyncio.current_task().uncancel()
    return {"cancelled": cancelled}


async def anyio_scopes(scope):
    with anyio.move_on_after(0.05) as moved:
        await anyio.sleep(5)
    try:
        with anyio.fail_after(0.05):
            await anyio.sleep(5)
        failed = False
    except TimeoutError:
        failed = True
    children = []

    async def child(n):
        await anyio.sleep(0.01)
        children.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(child, n)
    with anyio.CancelScope() as outer:
        outer.cancel()
        await anyio.sleep(5)
    return {"moved_on": moved.cancel_called, "failed_after": failed, "children": sorted(children),
            "cancelled_scope": outer.cancel_called}


async def set_var(scope):
    REQUEST_VAR.set(scope["query_string"].decode())
    await asyncio.sleep(0)
    return {"var": REQUEST_VAR.get()}


async def get_var(scope):
    return {"var": REQUEST_VAR.get()}


async def set_var_no_wait(scope):
    REQUEST_VAR.set(scope["query_string"].decode())
    return {"var": REQUEST_VAR.get()}


async def threadsafe(scope):
    """Another thread wakes the loop with call_soon_threadsafe (as asgiref's executor does), and an executor job."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    threading.Thread(target=lambda: (time.sleep(0.05), loop.call_soon_threadsafe(fut.set_result, "woken"))).start()
    t0 = time.monotonic()
    woken = await fut
    ran = await loop.run_in_executor(None, lambda: threading.current_thread() is not threading.main_thread())
    reader = loop._selector.get_key(loop._ssock.fileno()).data[0]._callback
    return {"woken": woken, "seconds": time.monotonic() - t0, "executor": ran,
            "wake": type(loop._write_to_self).__name__, "reader": type(reader).__name__}


async def signal_handler(scope):
    """A signal handled by asyncio (add_signal_handler) arrives through the same self-pipe as the wake-ups, as its
    number: ponte's reader (gateway/asgi_loop.c) hands that byte to asyncio."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGWINCH, lambda: fut.done() or fut.set_result("handled"))
    try:
        os.kill(os.getpid(), signal.SIGWINCH)
        got = await asyncio.wait_for(fut, 5)
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
    return {"signal": got}


async def threadsafe_burst(scope):
    """Wake-ups that come in bursts from several threads while the loop has nothing else to do (no timer, no
    socket): ponte sends one wake-up byte per poll, so a lost one would leave a future unresolved for ever."""
    loop = asyncio.get_running_loop()
    futs = [loop.create_future() for _ in range(400)]

    def resolve(mine):
        for i, f in enumerate(mine):
            if i % 7 == 0:
                time.sleep(0.0002 * (i % 3))
            loop.call_soon_threadsafe(f.set_result, 1)

    threads = [threading.Thread(target=resolve, args=(futs[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    total = sum(await asyncio.gather(*futs))
    for t in threads:
        t.join()
    return {"resolved": total}


async def handles(scope):
    """call_soon and call_soon_threadsafe (C in ponte's loop, gateway/asgi_loop_once.c) give real asyncio.Handles:
    FIFO, arguments kept, the given context entered, a cancelled handle never run."""
    loop = asyncio.get_running_loop()
    ran = []
    ctx = contextvars.copy_context()
    ctx.run(REQUEST_VAR.set, "in-handle-context")
    h1 = loop.call_soon(ran.append, 1)
    h2 = loop.call_soon(lambda a, b: ran.append((a, b)), "a", "b")
    h3 = loop.call_soon(lambda: ran.append(REQUEST_VAR.get()), context=ctx)
    h4 = loop.call_soon(ran.append, "cancelled")
    h4.cancel()
    h5 = loop.call_soon_threadsafe(ran.append, 5)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return {"ran": ran, "types": sorted({type(h).__name__ for h in (h1, h2, h3, h4, h5)}),
            "is_handle": all(isinstance(h, asyncio.Handle) for h in (h1, h2, h3, h4, h5)),
            "context": h3._context is ctx, "cancelled": [h.cancelled() for h in (h1, h4)],
            "repr": repr(h4).startswith("<Handle cancelled"),
            "impl": [type(loop._run_once).__name__, type(loop.call_soon).__name__, type(loop.get_debug).__name__]}


async def timers(scope):
    """Timers fire in order of their deadline; cancelled ones at the heap's head are dropped, and once more than
    half of over 100 are cancelled the heap is rebuilt without them (asyncio's _run_once does both)."""
    loop = asyncio.get_running_loop()
    fired = []
    for delay, tag in ((0.03, 3), (0.01, 1), (0.02, 2)):
        loop.call_later(delay, fired.append, tag)
    loop.call_later(0.001, fired.append, "cancelled").cancel()
    far = [loop.call_later(60, fired.append, "far") for _ in range(300)]
    for h in far[:200]:
        h.cancel()
    await asyncio.sleep(0.05)
    left = len(loop._scheduled)
    for h in far[200:]:
        h.cancel()
    return {"fired": fired, "left_after_rebuild": left, "cancelled_count": loop._timer_cancelled_count >= 0}


async def callback_error(scope):
    """A callback that raises goes to the loop's exception handler as Handle._run hands it, and the loop goes on."""
    loop = asyncio.get_running_loop()
    seen = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda lp, context: seen.append(context))

    def fails():
        raise ValueError("from a callback")

    h = loop.call_soon(fails)
    loop.call_soon(seen.append, "after")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)
    first = seen[0]
    return {"message": first["message"].startswith("Exception in callback"), "exception": repr(first["exception"]),
            "handle": first["handle"] is h, "traceback": first["exception"].__traceback__ is not None,
            "then": seen[1:]}


async def debug_mode(scope):
    """In debug mode the loop is asyncio's own again: handles carry where they were made, callbacks still run."""
    loop = asyncio.get_running_loop()
    ran = []
    debug = [loop.get_debug()]
    loop.set_debug(True)
    try:
        debug.append(loop.get_debug())
        h = loop.call_soon(ran.append, "debug")
        loop.call_soon_threadsafe(ran.append, "threadsafe")
        await asyncio.sleep(0.001)
        await asyncio.sleep(0)
    finally:
        loop.set_debug(False)
    debug.append(loop.get_debug())
    return {"ran": ran, "source_traceback": h._source_traceback is not None, "get_debug": debug}


async def all_tasks(scope):
    """asyncio's task set (its add is C in ponte, gateway/asgi_all_tasks.c): a running task is in it, a finished
    one leaves it once freed, and one freed while the set is being iterated leaves it when the iteration ends."""
    me = asyncio.current_task()

    async def child():
        return 1

    await asyncio.sleep(0)  # from 3.12 a task started eagerly joins the set when it first waits: now, if not yet
    if TASK_SET is None:
        t = asyncio.get_running_loop().create_task(child())
        listed = [t in asyncio.all_tasks(), me in asyncio.all_tasks()]
        await t
        return {"listed": listed, "size": len(asyncio.all_tasks()), "finished_listed": t in asyncio.all_tasks()}
    from _weakrefset import _IterationGuard
    registry = getattr(asyncio.tasks, TASK_SET)
    size = len(registry.data)
    t = asyncio.get_running_loop().create_task(child())
    listed = [t in asyncio.all_tasks(), me in asyncio.all_tasks()]
    await t
    await asyncio.sleep(0)  # the callback that woke this task held t: now only t does
    added = len(registry.data) - size
    with _IterationGuard(registry):  # what iterating the set enters: a removal waits in _pending_removals
        del t
        pending = len(registry._pending_removals)
    return {"listed": listed, "added": added, "pending_while_iterated": pending,
            "pending_after": len(registry._pending_removals), "left": len(registry.data) - size, "size": size,
            "add": type(registry.__dict__.get("add")).__name__}


ROUTES = {"/all_tasks": all_tasks, "/current": current, "/threadsafe_burst": threadsafe_burst, "/timeout": timeout, "/wait_for": wait_for, "/cancel_self": cancel_self,
          "/anyio": anyio_scopes, "/threadsafe": threadsafe, "/set_var": set_var, "/set_var_no_wait": set_var_no_wait, "/get_var": get_var,
          "/handles": handles, "/timers": timers, "/callback_error": callback_error, "/debug": debug_mode,
          "/signal": signal_handler}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps(await ROUTES[scope["path"]](scope)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
