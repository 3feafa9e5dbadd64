"""asyncio's selector for ponte: a selectors.BaseSelector whose select() runs ponte's libuv loop once.

asyncio.SelectorEventLoop(selector) is public API: asyncio calls selector.select(timeout) whenever it would block,
and register/unregister for the file descriptors it watches (its self-pipe, the app's sockets). Here those become
uv_poll handles, and select() runs one libuv iteration with the GIL released. So libuv is the only thing that
blocks, the HTTP sockets stay in C, and the asyncio loop is a real one (tasks, timers, executors, call_soon_threadsafe).
This file is compiled into ponte (gateway/meson.build) and run at start-up with `_ponte` already importable.
"""

import selectors
import sys
from asyncio import format_helpers
from collections.abc import Mapping

import _ponte


def _fd(fileobj):
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        fd = int(fileobj.fileno())
    if fd < 0:
        raise ValueError("invalid file descriptor: %r" % (fileobj,))
    return fd


class _Map(Mapping):
    def __init__(self, keys):
        self._keys = keys

    def __len__(self):
        return len(self._keys)

    def __getitem__(self, fileobj):
        try:
            return self._keys[_fd(fileobj)]
        except ValueError:
            raise KeyError(fileobj) from None

    def __iter__(self):
        return iter(self._keys)


class LibuvSelector(selectors.BaseSelector):
    def __init__(self):
        self._keys = {}
        self._map = _Map(self._keys)

    def register(self, fileobj, events, data=None):
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError("invalid events: %r" % (events,))
        fd = _fd(fileobj)
        if fd in self._keys:
            raise KeyError("%r (FD %d) is already registered" % (fileobj, fd))
        key = selectors.SelectorKey(fileobj, fd, events, data)
        _ponte.poll_start(fd, events)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj):
        try:
            key = self._keys.pop(_fd(fileobj))
        except ValueError:
            key = None
            for fd, k in list(self._keys.items()):
                if k.fileobj is fileobj:
                    key = self._keys.pop(fd)
                    break
            if key is None:
                raise KeyError("%r is not registered" % (fileobj,)) from None
        _ponte.poll_stop(key.fd)
        return key

    def modify(self, fileobj, events, data=None):
        key = self.get_key(fileobj)
        if events != key.events:
            if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
                raise ValueError("invalid events: %r" % (events,))
            _ponte.poll_start(key.fd, events)
        key = key._replace(events=events, data=data)
        self._keys[key.fd] = key
        return key

    def select(self, timeout=None):
        ready = []
        for fd, mask in _ponte.run_once(timeout):
            key = self._keys.get(fd)
            if key is not None and mask & key.events:
                ready.append((key, mask & key.events))
        return ready

    def close(self):
        for fd in list(self._keys):
            _ponte.poll_stop(fd)
        self._keys.clear()

    def get_map(self):
        return self._map


def _callback_failed(handle, exc):
    """What asyncio's Handle._run does when a callback raised: the C turn of the loop (asgi_loop_once.c) calls it.
    From 3.13 Handle._run passes the loop's debug flag to the formatter (which then shortens long arguments less)."""
    if sys.version_info >= (3, 13):
        cb = format_helpers._format_callback_source(handle._callback, handle._args, debug=handle._loop.get_debug())
    else:
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)
