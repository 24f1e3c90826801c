"""Task supervision on the app loop, and the one async-to-sync wrapper.

Nothing here imports Flask: the WSGI integration (``_flask``), streamed
responses (``_streaming``) and :func:`spawn` use it, and so can any other
way of serving (an ASGI mode).  Flask enters only through two hooks, set by
the integration with :func:`set_owner_hooks`: which *owner* (a Flask app)
is current, for logging through its logger, and its shutdown grace period.

Every task the app loop creates (a view, a hook, a task they created, a
spawned task; not the task ``flaskasync.run()`` makes for its caller) is
supervised by the loop's C core (``loop._set_supervision``, see
``csrc/supervise.c``), which records it:

- in the :class:`Scope` of the call that created it, while that call runs
  (a view, a hook, a streamed response); when the call returns, the scope
  closes: its unfinished tasks become background tasks (or are cancelled,
  with ``cancel_leftovers``), and finished ones whose exception nobody
  retrieved are logged;
- in ``_background`` otherwise (spawned tasks, tasks outliving their scope),
  which holds a strong reference until the task is done and logs its
  exception if nobody retrieves it (through :func:`_record`).

At process exit, :func:`_shutdown_at_exit` gives background tasks their
grace period, then cancels them.  All of this runs on the app loop (task creation, done callbacks and scope
closing run in loop callbacks or tasks), so the baton serialises it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import inspect
import logging
import os
import threading
import weakref
from typing import Any, Awaitable, Callable, Coroutine, Optional, TypeVar

from . import _core
from ._core import get_loop, run

__all__ = ["spawn", "async_to_sync"]

_T = TypeVar("_T")

#: Messages about tasks outside any owner go here; with an owner (a Flask
#: app) they go to ``owner.logger``.
logger = logging.getLogger("flaskasync")

#: Seconds background tasks get at exit when no owner says otherwise.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0

_Task = asyncio.Task
_current_task = asyncio.current_task
_get_running_loop = asyncio._get_running_loop
_iscoroutine = asyncio.iscoroutine
_CancelledError = asyncio.CancelledError
_MISSING = object()

# --------------------------------------------------------------- owners


def _no_owner(context: Optional[contextvars.Context]) -> Any:
    return None


def _no_shutdown_timeout(owner: Any) -> Optional[float]:
    return None


_owner_in = _no_owner
_shutdown_timeout_of = _no_shutdown_timeout
# Owners registered for the shutdown grace period (weakly: an app that is
# gone has no say).
_owners: "weakref.WeakSet" = weakref.WeakSet()


def set_owner_hooks(
    owner_in: Callable[[Optional[contextvars.Context]], Any],
    shutdown_timeout_of: Callable[[Any], Optional[float]],
) -> None:
    """Install the integration's two hooks.

    owner_in(context): the owner current in context (the current context
    when None), or None.  shutdown_timeout_of(owner): its grace period in
    seconds at exit, or None for the default."""
    global _owner_in, _shutdown_timeout_of
    _owner_in = owner_in
    _shutdown_timeout_of = shutdown_timeout_of


def register_owner(owner: Any) -> None:
    """Count owner's grace period at exit (see :func:`_grace_period`)."""
    _owners.add(owner)


def logger_for(owner: Any) -> logging.Logger:
    if owner is not None:
        try:
            return owner.logger
        except Exception:
            pass
    return logger


# --------------------------------------------------------------- scopes

scope_var: contextvars.ContextVar = contextvars.ContextVar("flaskasync_scope")


def label(func: Any) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


class Scope(_core._Scope):
    """The tasks created while one supervised call runs.

    ``Scope(owner, cancel_leftovers=False, detached=False, what=None)``;
    the fields live in C (``_core._Scope``), where the loop records tasks.

    owner: whose logger reports them (a Flask app, or None).
    what: the function that call runs (or a str describing it).
    cancel_leftovers: cancel the unfinished tasks when the call returns
    (Flask's own behaviour) instead of letting them run on.
    detached: a closed scope from the start (spawn): its tasks are
    background tasks at once.
    open: whether tasks created now are recorded in children.
    driver_context: the Context in which ``flaskasync.run(context=...)``
    runs the calls of a scope that spans several of them (a streamed
    response); the tasks run() creates for them are not its children."""

    __slots__ = ()

    @property
    def label(self) -> str:
        what = self.what
        return what if isinstance(what, str) else label(what)

    def close(self) -> list:
        """Close the scope (on the loop): unfinished tasks become background
        tasks, finished ones are reported.  Return the tasks it recorded."""
        self.open = False
        children, self.children = self.children, []
        for task in children:
            if task.done():
                _report_unretrieved(task, self.owner, self.label)
            else:
                _make_background(task, self.owner)
        return children

    async def cancel_children(self) -> None:
        """Close the scope the Flask way: cancel the tasks the call left
        running, wait for them, report the failures."""
        self.open = False
        children, self.children = self.children, []
        pending = [t for t in children if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in children:
            _report_unretrieved(task, self.owner, self.label)


async def scoped(coro: Coroutine[Any, Any, _T], scope: Scope, timeout: Optional[float] = None,
                 on_timeout: Optional[Callable[[Scope, float], BaseException]] = None) -> _T:
    """The coroutine ``flaskasync.run()`` runs for one supervised call.

    Runs coro with scope current (for the tasks it creates), then closes the
    scope.  With timeout (seconds), coro is cancelled when it expires and
    ``on_timeout(scope, timeout)`` is raised instead of the TimeoutError
    (a TimeoutError coro raises itself propagates as it is)."""
    token = scope_var.set(scope)
    try:
        if timeout is None:
            return await coro
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await coro
        except TimeoutError as exc:
            if on_timeout is None or not (
                deadline.expired() and isinstance(exc.__cause__, _CancelledError)
            ):
                raise
            raise on_timeout(scope, timeout) from None
    finally:
        scope_var.reset(token)
        if scope.cancel_leftovers:
            await scope.cancel_children()
        elif scope.children:
            scope.close()
        else:
            scope.open = False


async def run_in_scope(coro: Coroutine[Any, Any, _T], scope: Scope) -> _T:
    """:func:`scoped` for the common case, no timeout and leftovers left
    running: coro with scope current, then the scope finished (in C when
    every child finished and nothing is to be reported).  The C sync
    caller hands it to a request's greenlet in ASGI mode."""
    token = scope_var.set(scope)
    try:
        return await coro
    finally:
        scope_var.reset(token)
        scope.finish()


# --------------------------------------------------------------- background tasks

# task -> owner (or None): background tasks, strongly referenced until done.
_background: dict = {}


def track(task: asyncio.Task, owner: Any) -> None:
    """Make task a background task of owner (on the loop)."""
    _make_background(task, owner)


def _make_background(task: asyncio.Task, owner: Any) -> None:
    _background[task] = owner
    task.add_done_callback(_on_task_done)


def _describe(task: asyncio.Task) -> str:
    coro = task.get_coro()
    what = getattr(coro, "__qualname__", None) or repr(coro)
    return f"{task.get_name()!r} ({what})"


def _report_unretrieved(task: asyncio.Task, owner: Any, how: str) -> None:
    """Log a finished task's exception if nobody has retrieved it.

    how: "background" (the task outlived the call that created it, or was
    spawned) or the label of the call that created it and returned without
    awaiting it."""
    if task.cancelled():
        return
    flag = getattr(task, "_log_traceback", _MISSING)
    if flag is _MISSING:
        exc = task.exception()  # a task type without the flag: always report
    elif not flag:
        return
    else:
        task._log_traceback = False
        exc = task.exception()
    if exc is None:
        return
    if how == "background":
        message, args = "flaskasync: background task %s failed", (_describe(task),)
    else:
        message = "flaskasync: task %s failed and nobody awaited it (created by %s)"
        args = (_describe(task), how)
    logger_for(owner).error(message, *args, exc_info=(type(exc), exc, exc.__traceback__))


def _on_task_done(task: asyncio.Task) -> None:
    owner = _background.pop(task, _MISSING)
    if owner is _MISSING:
        return
    if getattr(task, "_log_traceback", True) and not task.cancelled():
        # Give whoever awaits the task (its wake-up is scheduled right after
        # this callback) the chance to retrieve the exception first.
        task.get_loop().call_soon(_report_unretrieved, task, owner, "background")


# --------------------------------------------------------------- the app loop


class _LoopState:
    """Process-wide state of the supervision (re-created after fork)."""

    loop = None  # the app loop the supervision is installed on
    want_debug = False
    atexit_registered = False
    lock = threading.Lock()


def _record(task, scope, context):
    """Called by the loop's C supervision for a task it cannot simply append
    to an open scope's children: a task created by a running task outside
    any scope (scope None), or in a closed scope.  It becomes a background
    task of the owner current in its context, or of the scope's owner."""
    _make_background(task, _owner_in(context) if scope is None else scope.owner)


def _install(loop) -> None:
    with _LoopState.lock:
        if _LoopState.loop is loop:
            return
        loop._set_supervision(scope_var, _record)
        if _LoopState.want_debug:
            loop.set_debug(True)
        if not _LoopState.atexit_registered:
            _LoopState.atexit_registered = True
            atexit.register(_shutdown_at_exit)
        _LoopState.loop = loop


def app_loop():
    """The app loop, with the supervision installed on it."""
    loop = get_loop()
    if loop is not _LoopState.loop:
        _install(loop)
    return loop


def supervised_loop():
    """The loop the supervision is installed on (None before first use)."""
    return _LoopState.loop


def set_debug() -> None:
    """Put the app loop in asyncio debug mode, now or when it is created."""
    _LoopState.want_debug = True
    if _LoopState.loop is not None:
        _LoopState.loop.set_debug(True)


def _after_fork_in_child() -> None:
    # The parent's tasks do not exist on the child's (new) app loop.
    _background.clear()
    _LoopState.loop = None
    _LoopState.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------- shutdown


def _grace_period() -> float:
    values = []
    for owner in list(_owners):
        value = _shutdown_timeout_of(owner)
        if value is None:
            value = DEFAULT_SHUTDOWN_TIMEOUT
        try:
            values.append(max(0.0, float(value)))
        except (TypeError, ValueError):
            pass
    return max(values) if values else DEFAULT_SHUTDOWN_TIMEOUT


async def drain(grace: float) -> int:
    """Wait up to grace seconds for background tasks, then cancel the rest.

    Returns the number of tasks cancelled."""
    loop = asyncio.get_running_loop()
    pending = [t for t in _background if not t.done()]
    if not pending:
        return 0
    logger.info(
        "flaskasync: waiting up to %g s for %d background task(s) to finish", grace, len(pending)
    )
    deadline = loop.time() + grace
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.wait(pending, timeout=remaining)
        # Tasks started meanwhile get the rest of the grace period too.
        pending = [t for t in _background if not t.done()]
    for task in pending:
        logger_for(_background.get(task)).warning(
            "flaskasync: cancelling background task %s: still running after the "
            "%g s shutdown grace period (FLASKASYNC_SHUTDOWN_TIMEOUT)",
            _describe(task),
            grace,
        )
        task.cancel()
    if pending:
        # Let their finally blocks run, within reason.
        await asyncio.wait(pending, timeout=1.0)
    # Let the done callbacks report exceptions before the loop stops.
    for _ in range(3):
        await asyncio.sleep(0)
    return len(pending)


def _shutdown_at_exit() -> None:
    """atexit: give background tasks the grace period, then cancel them."""
    loop = _LoopState.loop
    if loop is None or not _core._has_app_loop() or get_loop() is not loop:
        return
    if not _background:
        return
    try:
        run(drain(_grace_period()))
    except BaseException:  # at exit nobody else can report it
        logger.exception("flaskasync: error while shutting down background tasks")


# --------------------------------------------------------------- spawn


async def _create_task(coro, name, context):
    return asyncio.get_running_loop().create_task(coro, name=name, context=context)


def spawn(coro: Coroutine[Any, Any, _T], *, name: Optional[str] = None) -> "asyncio.Task[_T]":
    """Run a coroutine as a background task on the app loop; return the task.

    Works from sync code (a sync view, a thread, a CLI command) and from
    async code.  The task:

    - starts at once and keeps running after the request that spawned it
      has been answered;
    - sees the current context (``request``, ``g``, ``current_app`` ... of
      the request that spawned it, as a copy);
    - is referenced until it is done (it cannot be garbage collected);
    - has its exception, if it raises one and nobody awaits the task,
      logged through ``app.logger`` (or the ``flaskasync`` logger outside an
      app);
    - at process exit, gets ``FLASKASYNC_SHUTDOWN_TIMEOUT`` seconds to
      finish, then is cancelled and logged by name.

    The result is an :class:`asyncio.Task` of the app loop: ``await`` it or
    call ``cancel()`` from async code on the app loop.  From sync code, wait
    for it with ``flaskasync.run(asyncio.wait_for(task, None))`` and cancel
    it with ``flaskasync.get_loop().call_soon_threadsafe(task.cancel)``
    (asyncio objects are not thread-safe).
    """
    if not _iscoroutine(coro):
        hint = " (did you forget to call it?)" if inspect.iscoroutinefunction(coro) else ""
        raise TypeError(f"spawn() expects a coroutine object, got {coro!r}{hint}")
    if name is not None and not isinstance(name, str):
        coro.close()
        raise TypeError(f"spawn(): name must be a str or None, got {name!r}")
    loop = app_loop()
    context = contextvars.copy_context()
    context.run(scope_var.set, Scope(_owner_in(None), detached=True))
    running = _get_running_loop()
    if running is loop:
        return loop.create_task(coro, name=name, context=context)
    if running is None:
        return run(_create_task(coro, name, context))
    # Another event loop runs in this thread: hand the creation to the app loop.
    return asyncio.run_coroutine_threadsafe(_create_task(coro, name, context), loop).result()


# --------------------------------------------------------------- async to sync


def _nested_call_error(func) -> RuntimeError:
    return RuntimeError(
        f"cannot run the async function {label(func)} synchronously from async code "
        "(it was called through async_to_sync / app.ensure_sync while an event loop "
        "is running in this thread, for example by render_template() with an async "
        "context processor, or a signal with an async receiver sent from an async "
        "view). Await it instead, or make it a plain function."
    )


def _not_awaitable(func, value) -> TypeError:
    return TypeError(
        f"{label(func)} was run as an async function but returned {value!r}, "
        "which is not awaitable"
    )


async def _await(awaitable):
    return await awaitable


def sync_caller(fn: Callable[..., Awaitable[Any]],
                call: Optional[Callable[[Coroutine, Callable, Any], Any]] = None,
                owner: Any = None) -> Callable[..., Any]:
    """The one async-to-sync wrapper: a sync function calling fn.

    Each call refuses to run inside a running event loop (before fn is
    called), calls fn, makes its awaitable a coroutine and runs it:
    ``flaskasync.run(coro)``, or ``call(coro, fn, owner)`` when an
    integration supervises the call (the Flask glue)."""
    if not callable(fn):
        raise TypeError(f"async_to_sync() expects an async callable, got {fn!r}")

    def run_on_app_loop(*args, **kwargs):
        if _get_running_loop() is not None:
            raise _nested_call_error(fn)
        coro = fn(*args, **kwargs)
        if not _iscoroutine(coro):
            if not inspect.isawaitable(coro):
                raise _not_awaitable(fn, coro)
            coro = _await(coro)
        if call is None:
            return run(coro)
        return call(coro, fn, owner)

    return run_on_app_loop


def async_to_sync(fn: Callable[..., Awaitable[_T]]) -> Callable[..., _T]:
    """Return a synchronous wrapper of the async callable fn.

    A drop-in for ``asgiref.sync.async_to_sync``: each call runs
    ``fn(*args, **kwargs)`` on the app loop with :func:`flaskasync.run` and
    returns its result.  The wrapper keeps ``__name__``, ``__doc__`` and
    ``__wrapped__``.  Called while an event loop runs in the thread, it
    raises RuntimeError without calling fn.
    """
    return functools.wraps(fn)(sync_caller(fn))
