"""ASGI lifespan for ponte: startup before the server listens, shutdown after the last request.

Compiled into ponte with asgi_selector.py and run in the same namespace. `_ponte.log(level, message)` writes to
ponte's log. The state dict the app fills at startup is shallow-copied into every request scope (asgi.c).
"""

import asyncio

import _ponte


class Lifespan:
    def __init__(self, app, mode, asgi2=False):
        self.app = app
        self.mode = mode            # "auto" or "on"
        self.asgi2 = asgi2
        self.state = {}
        self.supported = True
        self.task = None
        self.queue = asyncio.Queue()
        loop = asyncio.get_event_loop()
        self.startup_done = loop.create_future()
        self.shutdown_done = loop.create_future()

    async def receive(self):
        return await self.queue.get()

    async def send(self, message):
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self._settle(self.startup_done, None)
        elif kind == "lifespan.startup.failed":
            self._settle(self.startup_done, message.get("message", ""))
        elif kind == "lifespan.shutdown.complete":
            self._settle(self.shutdown_done, None)
        elif kind == "lifespan.shutdown.failed":
            self._settle(self.shutdown_done, message.get("message", ""))
        else:
            raise RuntimeError("unexpected ASGI lifespan message %r" % (kind,))

    @staticmethod
    def _settle(fut, failure):
        if not fut.done():
            fut.set_result(failure)

    async def _main(self):
        scope = {"type": "lifespan", "asgi": {"version": "2.0" if self.asgi2 else "3.0", "spec_version": "2.0"},
                 "state": self.state}
        if self.asgi2:
            await self.app(scope)(self.receive, self.send)
        else:
            await self.app(scope, self.receive, self.send)

    async def startup(self):
        """True to go on serving; False after logging why the app failed to start."""
        self.queue.put_nowait({"type": "lifespan.startup"})
        self.task = asyncio.get_event_loop().create_task(self._main())
        await asyncio.wait([self.startup_done, self.task], return_when=asyncio.FIRST_COMPLETED)
        if self.startup_done.done():
            failure = self.startup_done.result()
            if failure is not None:
                _ponte.log(3, "ASGI lifespan startup failed: %s" % (failure or "(no message)"))
                return False
            return True
        # The app returned or raised before answering the startup event.
        exc = self.task.exception()
        if self.mode == "auto":
            self.supported = False
            _ponte.log(1, "ASGI lifespan not supported by the app (%s): going on without it"
                       % (repr(exc) if exc else "it returned"))
            return True
        _ponte.log(3, "ASGI lifespan startup failed: the app %s" % ("raised %r" % exc if exc else "returned"))
        return False

    async def shutdown(self):
        if not self.supported or self.task is None or self.task.done():
            return
        self.queue.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait([self.shutdown_done, self.task], return_when=asyncio.FIRST_COMPLETED)
        if self.shutdown_done.done() and self.shutdown_done.result() is not None:
            _ponte.log(3, "ASGI lifespan shutdown failed: %s" % self.shutdown_done.result())
        elif not self.shutdown_done.done():
            exc = self.task.exception()
            _ponte.log(3, "ASGI lifespan shutdown: the app %s" % ("raised %r" % exc if exc else "returned"))
