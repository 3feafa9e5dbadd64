"""apps/asyncio_semantics.py, with asyncio changed at import the way an app or a library may change it, so that
each of ponte's start-up checks of its C replacements of asyncio's internals fails on its own and asyncio's own code
runs (test_asgi_tasks.OwnLoopMethods):

- the loop's class gets a call_soon of its own (doing what BaseEventLoop's does): the C turn and call_soon
  (gateway/asgi_loop_once.c) stay asyncio's;
- and a _read_from_self of its own: the self-pipe's reader (gateway/asgi_loop.c) stays asyncio's;
- the task set gets an add of its own (its own WeakSet.add, bound): the C add (gateway/asgi_all_tasks.c) is not
  installed (3.11 to 3.13; 3.14 keeps its tasks in C itself)."""

import asyncio.base_events
import asyncio.selector_events
import asyncio.tasks
import asyncio.unix_events
import sys

LOOP = asyncio.unix_events._UnixSelectorEventLoop


def call_soon(self, callback, *args, context=None):
    return asyncio.base_events.BaseEventLoop.call_soon(self, callback, *args, context=context)


def _read_from_self(self):
    return asyncio.selector_events.BaseSelectorEventLoop._read_from_self(self)


LOOP.call_soon = call_soon
LOOP._read_from_self = _read_from_self
if sys.version_info < (3, 14):
    _set = asyncio.tasks._all_tasks if sys.version_info < (3, 12) else asyncio.tasks._scheduled_tasks
    _set.add = _set.add

from asyncio_semantics import app  # noqa: E402  (after the changes, as an app importing its libraries would)
