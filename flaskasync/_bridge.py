"""The greenlet bridge: sync code on the event loop's thread that awaits.

ASGI serving runs Flask's unchanged, synchronous request pipeline for an
async view in a greenlet on the loop's thread.  Whenever that sync code
needs a coroutine's result (Flask's ``ensure_sync`` -> ``async_to_sync`` ->
:func:`flaskasync.run`, reading the request body, sending the response), it
switches to its parent greenlet, the one running the request's task, which
awaits the coroutine on the loop and switches back with the result, or
throws the exception in.  SQLAlchemy's asyncio support uses the same
pattern (``greenlet_spawn`` / ``await_only``).

- **One Context per request.**  The request's task runs in a
  :class:`contextvars.Context` of its own, and the greenlet runs in that
  same Context object (``gr_context``).  A coroutine the greenlet hands
  over is awaited *inline* in the request's task, not in a new task, so
  Flask's context variables and values that a hook or the view sets are
  seen on both sides, as in a sync view.
- **No running loop inside the greenlet.**  While the sync code runs, the
  thread's running loop is unset (and set again whenever control is back on
  the loop's side), so the sync code sees what it sees in a WSGI worker
  thread: ``flaskasync.run()``, ``async_to_sync`` and every "am I inside a
  running loop?" guard behave as there.  ``flaskasync.run()`` called on the
  loop's thread with no running loop reaches :func:`reenter` (installed in
  the C runner when the server's loop is adopted as the app loop), which
  switches to the parent.
- **Cancellation.**  Cancelling the request's task (a client that went
  away) raises ``CancelledError`` at the sync code's current switch, that
  is inside the coroutine it was waiting for: ``finally`` blocks run on
  both sides and the exception propagates out of the greenlet, ending the
  task as cancelled.
- **Hand-over hook.**  A greenlet may carry ``on_handover``, called (in
  the greenlet, where it may itself wait with :func:`await_only`) before
  each coroutine the application's code hands over through
  ``flaskasync.run()`` (:func:`reenter`): ASGI mode reads the rest of the
  request body there, since code running on the loop cannot wait for it.
  The serving code's own waits (:func:`await_only`) do not call it.

Nothing here imports Flask.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any, Awaitable, Callable, Optional

try:
    import greenlet as _greenlet_mod
except ImportError:  # pragma: no cover - checked by flaskasync._asgi
    _greenlet_mod = None

__all__ = ["run_in_greenlet", "await_only", "in_greenlet", "reenter", "set_on_handover"]

_get_running_loop = asyncio._get_running_loop
_set_running_loop = asyncio._set_running_loop
_iscoroutine = asyncio.iscoroutine
_Task = asyncio.Task


#: Idle request greenlets kept per thread for the next requests.  A new
#: greenlet costs about 10 µs more than a reused one (its Python frame
#: stack is mapped and unmapped each time); an idle one holds that stack
#: (16 KiB) and its saved C stack.
POOL_SIZE = 64

if _greenlet_mod is not None:
    _getcurrent = _greenlet_mod.getcurrent

    class RequestGreenlet(_greenlet_mod.greenlet):
        """The greenlet running one request's sync code (then, back in the
        pool, the next request's)."""

        __slots__ = ("on_handover",)

else:  # pragma: no cover
    RequestGreenlet = None  # type: ignore[assignment,misc]


class _Finished:
    """What a request greenlet switches to its parent when fn has returned
    (value) or raised (error), to tell it from a coroutine handed over."""

    __slots__ = ("value", "error")

    def __init__(self, value: Any, error: Optional[BaseException]) -> None:
        self.value = value
        self.error = error


def _serve_requests(fn: Callable[..., Any], args: tuple) -> None:
    """The body of a pooled request greenlet: run fn(*args), hand the
    outcome to the parent, receive the next (fn, args), forever.  Nothing
    of a request stays referenced while the greenlet waits in the pool.
    (run_in_greenlet empties the _Finished it hands over.)  A GreenletExit
    at that switch (the pool's greenlet collected) ends it."""
    while True:
        try:
            outcome = _Finished(fn(*args), None)
        except BaseException as exc:  # noqa: B036 - handed to the awaiting task
            outcome = _Finished(None, exc)
        fn = args = None
        fn, args = _getcurrent().parent.switch(outcome)


_pools = threading.local()


def _acquire(parent) -> "RequestGreenlet":
    pool = getattr(_pools, "idle", None)
    if pool:
        g = pool.pop()
        if g.parent is not parent:
            g.parent = parent
        return g
    return RequestGreenlet(_serve_requests, parent)


def _release(g) -> None:
    g.gr_context = None  # the request's Context (Flask's contexts) is not kept
    g.on_handover = None
    pool = getattr(_pools, "idle", None)
    if pool is None:
        pool = _pools.idle = []
    if len(pool) < POOL_SIZE:
        pool.append(g)


def in_greenlet() -> bool:
    """Whether the calling code runs in a request's greenlet."""
    return _greenlet_mod is not None and type(_getcurrent()) is RequestGreenlet


async def run_in_greenlet(fn: Callable[..., Any], context: contextvars.Context,
                          *args: Any, on_handover: Optional[Callable[[], None]] = None) -> Any:
    """Run fn(*args) in a request greenlet sharing context (which must be
    the Context of the task awaiting this), awaiting what it hands over with
    :func:`await_only` or :func:`reenter`; return fn's result.
    on_handover: called before each coroutine :func:`reenter` hands over.
    The greenlet comes from a per-thread pool and goes back to it when fn
    has returned or raised."""
    loop = _get_running_loop()
    g = _acquire(_getcurrent())
    g.gr_context = context
    g.on_handover = on_handover
    switch = g.switch
    _set_running_loop(None)
    try:
        request = switch((fn, args)) if g else switch(fn, args)
    finally:
        _set_running_loop(loop)
    while type(request) is not _Finished:
        try:
            value = await request
        except BaseException as exc:  # noqa: B036 - thrown into the sync code
            request = None
            _set_running_loop(None)
            try:
                request = g.throw(exc)
            finally:
                _set_running_loop(loop)
        else:
            request = None
            _set_running_loop(None)
            try:
                request = switch(value)
            finally:
                _set_running_loop(loop)
    _release(g)
    # The idle greenlet's frame still refers to this _Finished: empty it.
    value, error = request.value, request.error
    request.value = request.error = None
    if error is not None:
        try:
            raise error
        finally:
            error = None
    return value


def await_only(awaitable: Awaitable[Any]) -> Any:
    """From sync code in a request's greenlet: await awaitable on the loop
    (in the request's task) and return its result (without calling the
    greenlet's on_handover)."""
    g = _getcurrent()
    if type(g) is not RequestGreenlet:
        if _iscoroutine(awaitable):
            awaitable.close()
        raise RuntimeError("await_only() called outside a request's greenlet")
    return g.parent.switch(awaitable)


def set_on_handover(hook: Optional[Callable[[], None]]) -> None:
    """Set (None: remove) the calling request greenlet's on_handover."""
    g = _getcurrent()
    if type(g) is RequestGreenlet:
        g.on_handover = hook


def _check_timeout(timeout: Any) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"run(): timeout must be a number or None, got {timeout!r}")
    if not timeout >= 0:
        raise ValueError(f"run(): timeout must be >= 0, got {timeout!r}")
    return float(timeout)


async def _with_timeout(coro, timeout: float):
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError as exc:
        if isinstance(exc.__cause__, asyncio.CancelledError):
            raise TimeoutError(
                f"flaskasync.run() timed out after {timeout:.3g} seconds"
            ) from exc.__cause__
        raise


def reenter(coro, *, timeout=None, name=None, context=None):
    """``flaskasync.run(coro, ...)`` called on the loop's thread with no loop
    running: from a request's greenlet, await coro in the request's task.

    Without ``context=``, coro runs inline in the request's task (and so in
    the request's Context: nothing needs copying back; ``name=`` is not
    used, there is no task of its own to name).  With ``context=``, it runs
    as its own task in that Context, as ``run(context=)`` does from a
    thread."""
    g = _getcurrent() if _greenlet_mod is not None else None
    if type(g) is not RequestGreenlet:
        if _iscoroutine(coro):
            coro.close()
        raise RuntimeError(
            "flaskasync.run() cannot be called from the thread running the app loop "
            "(the server's event loop) outside a request"
        )
    try:
        timeout = _check_timeout(timeout)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"run(): name must be a str or None, got {name!r}")
        if context is not None and not isinstance(context, contextvars.Context):
            raise TypeError(
                f"run(): context must be a contextvars.Context or None, got {context!r}"
            )
    except BaseException:
        coro.close()
        raise
    hook = g.on_handover
    if hook is not None:
        try:
            hook()
        except BaseException:
            if _iscoroutine(coro):
                coro.close()
            raise
    if context is not None:
        aw = _start_task(coro, name, context)
    else:
        # Inline in the request's task (name= would name a task of its
        # own; there is none to name).
        aw = coro
    if timeout is not None:
        aw = _with_timeout(aw, timeout)
    return g.parent.switch(aw)


async def _start_task(coro, name, context):
    # Created directly, not through the loop's task factory: the caller
    # awaits it, as flaskasync.run()'s own task.
    loop = asyncio.get_running_loop()
    if context is None:
        task = _Task(coro, loop=loop, name=name)
    else:
        task = _Task(coro, loop=loop, name=name, context=context)
    return await task
