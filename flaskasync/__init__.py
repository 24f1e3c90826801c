"""flaskasync: fast, dependable async views for Flask.

Flask's ``async def`` views, hooks and error handlers run on one
long-lived event loop per process, written in C on libuv, driven inline by
the WSGI worker thread that needs it.  The same pieces work without Flask:

- :func:`run` runs a coroutine from synchronous code on the app loop;
- :func:`async_to_sync` wraps an async function for synchronous callers;
- :func:`gather` is ``asyncio.gather`` in C;
- :class:`Loop` / :func:`new_event_loop` give the C loop as a general
  asyncio event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect

from . import _core
from ._core import Handle, TimerHandle, gather, get_loop, run
from .loop import Loop, new_event_loop

__all__ = [
    "run",
    "async_to_sync",
    "gather",
    "spawn",
    "get_loop",
    "Loop",
    "new_event_loop",
    "EventLoopPolicy",
    "Handle",
    "TimerHandle",
    "FlaskAsync",
    "Flask",
    "async_route",
    "ViewTimeout",
]

__version__ = "0.1.0"

# Stop the app loop's home thread before the interpreter finalizes.  atexit
# runs handlers last-registered-first, so the Flask integration's graceful
# shutdown of background tasks (registered later) runs before this.
atexit.register(_core._shutdown)


async def _await(awaitable):
    return await awaitable


def async_to_sync(fn):
    """Return a synchronous wrapper of the async callable fn.

    A drop-in for ``asgiref.sync.async_to_sync``: each call runs
    ``fn(*args, **kwargs)`` on the app loop with :func:`run` and returns its
    result.  The wrapper keeps ``__name__``, ``__doc__`` and ``__wrapped__``.
    """
    if not callable(fn):
        raise TypeError(f"async_to_sync() expects an async callable, got {fn!r}")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        aw = fn(*args, **kwargs)
        if not asyncio.iscoroutine(aw):
            if not inspect.isawaitable(aw):
                raise TypeError(
                    f"async_to_sync(): {fn!r} returned {aw!r}, which is not awaitable"
                )
            aw = _await(aw)
        return run(aw)

    return wrapper


def __getattr__(name):
    if name == "EventLoopPolicy":  # built on first use (deprecated API on 3.14+)
        from . import loop

        return loop.EventLoopPolicy
    # The Flask integration is imported on first use so that the loop and
    # the runner can be used without importing Flask.
    if name in ("FlaskAsync", "Flask", "async_route", "spawn", "ViewTimeout"):
        from . import _flask

        return getattr(_flask, name)
    raise AttributeError(f"module 'flaskasync' has no attribute {name!r}")
