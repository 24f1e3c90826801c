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

import atexit

from . import _core
from ._core import Handle, TimerHandle, gather, get_loop, run
from ._tasks import async_to_sync
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
    "ASGIApp",
    "GunicornWorker",
]

__version__ = "0.1.0"

# Stop the app loop's home thread before the interpreter finalizes.  atexit
# runs handlers last-registered-first, so the graceful shutdown of
# background tasks (flaskasync._tasks, registered later) runs before this.
atexit.register(_core._shutdown)

_FLASK_NAMES = ("FlaskAsync", "Flask", "async_route", "ViewTimeout")


def __getattr__(name):
    if name == "EventLoopPolicy":  # built on first use (deprecated API on 3.14+)
        from . import loop

        return loop.EventLoopPolicy
    # The Flask integration is imported on first use so that the loop and
    # the runner can be used without importing Flask.
    if name in _FLASK_NAMES:
        from . import _flask

        return getattr(_flask, name)
    if name == "spawn":
        # spawn itself needs no Flask, but with Flask installed the
        # integration tells it which app a task belongs to (for its logger).
        try:
            from . import _flask  # noqa: F401
        except ModuleNotFoundError as exc:
            if exc.name != "flask":
                raise
        from ._tasks import spawn

        return spawn
    # ASGI serving (the `serve` extra: greenlet, uvicorn, httptools).
    if name == "ASGIApp":
        from ._asgi import ASGIApp

        return ASGIApp
    if name == "GunicornWorker":
        from ._serve import GunicornWorker

        return GunicornWorker
    raise AttributeError(f"module 'flaskasync' has no attribute {name!r}")
