"""The Flask integration: async views, hooks and handlers on the app loop.

Install it on an app with one line::

    from flaskasync import FlaskAsync
    FlaskAsync(app)                 # or: ext = FlaskAsync(); ext.init_app(app)

or create the app from the drop-in subclass ``flaskasync.Flask``.  Flask
hands every coroutine function it calls (views, ``View``/``MethodView``
dispatch, request hooks, error handlers, context processors, signal
receivers, ``copy_current_request_context``) to ``app.ensure_sync``, which
calls ``app.async_to_sync``.  The extension replaces ``async_to_sync`` so
that those calls run on the process's one app loop through
:func:`flaskasync.run`, and ``make_response`` so that a view may return an
async generator and have it streamed.

What the extension adds beyond Flask's default (asgiref, a new thread and a
new event loop for every call):

- objects bound to a loop (clients, pools, locks, queues) created once are
  usable by every request on every worker thread of the process;
- tasks a view creates keep running after the response (background tasks),
  are referenced until done, and their exceptions are logged through
  ``app.logger``; :func:`spawn` starts one explicitly from sync or async code;
- an async generator (or ``Response(async_gen)``) is streamed chunk by
  chunk with the request context available, and closed (``aclose``) when
  the client goes away;
- ``FLASKASYNC_TIMEOUT`` cancels a slow view and answers 504.

Configuration (``app.config``), each documented in ``docs/guide.md``:

``FLASKASYNC_TIMEOUT`` (``None``)
    Seconds an async view may run before it is cancelled and the request
    answered with 504 Gateway Timeout through Flask's error handling.
``FLASKASYNC_BACKGROUND_TASKS`` (``True``)
    ``True``: tasks a view (or hook) creates and leaves running keep running
    after it returns.  ``False``: they are cancelled, and awaited, when it
    returns (Flask's default behaviour).
``FLASKASYNC_SHUTDOWN_TIMEOUT`` (``5.0``)
    At process exit, seconds background tasks get to finish before they are
    cancelled (each one cancelled is logged by name).
``FLASKASYNC_DEBUG`` (``False``)
    ``True`` puts the app loop in asyncio debug mode (slow callback
    warnings, coroutine origin tracking, never-awaited coroutine sources).
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import inspect
import logging
import os
import sys
import threading
import weakref
from typing import Any, Awaitable, Callable, Coroutine, Optional, TypeVar

import flask
from flask.globals import _cv_app, _cv_request
from flask.views import View
from werkzeug.exceptions import GatewayTimeout
from werkzeug.wrappers import Response as _WerkzeugResponse

from . import _core
from ._core import get_loop, run

__all__ = ["FlaskAsync", "Flask", "async_route", "spawn", "ViewTimeout", "DEFAULT_CONFIG"]

_T = TypeVar("_T")

#: The configuration keys and their defaults, set with ``setdefault`` by
#: :meth:`FlaskAsync.init_app`.
DEFAULT_CONFIG: dict = {
    "FLASKASYNC_TIMEOUT": None,
    "FLASKASYNC_BACKGROUND_TASKS": True,
    "FLASKASYNC_SHUTDOWN_TIMEOUT": 5.0,
    "FLASKASYNC_DEBUG": False,
}

_EXTENSION_KEY = "flaskasync"

#: Messages about tasks and streams outside any Flask app go here; inside an
#: app they go to ``app.logger``.
logger = logging.getLogger("flaskasync")

_Task = asyncio.Task
_current_task = asyncio.current_task
_get_running_loop = asyncio._get_running_loop
_iscoroutine = asyncio.iscoroutine
_iscoroutinefunction = inspect.iscoroutinefunction
_TASK_CONTEXT = sys.version_info >= (3, 11)  # Task(..., context=) and Task.uncancel()
_MISSING = object()


def _flask_version() -> tuple:
    try:
        from importlib.metadata import version

        parts = version("flask").split(".")[:2]
        return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts)
    except Exception:  # not installed as a distribution: assume a current Flask
        return (99, 0)


_FLASK_VERSION = _flask_version()


def _context_processors_called_directly() -> bool:
    """Whether Flask calls template context processors without ensure_sync
    (Flask < 3.0), so async ones need the extension's update_template_context."""
    try:
        source = inspect.getsource(flask.Flask.update_template_context)
    except (OSError, TypeError):
        return _FLASK_VERSION < (3, 0)
    return "ensure_sync" not in source


_PATCH_CONTEXT_PROCESSORS = _context_processors_called_directly()


def _stream_with_context_pushes_early() -> bool:
    """Whether flask.stream_with_context pushes the request context when it
    is called (Flask < 3.1) instead of when the response is iterated.

    Called in an async view, that push happens in the view's task, whose
    Context is a copy of the worker thread's, and Flask later resets the
    token in the thread's Context: "Token was created in a different
    Context" (asgiref has the same problem)."""
    try:
        source = inspect.getsource(flask.helpers.stream_with_context)
    except (OSError, TypeError):
        return _FLASK_VERSION < (3, 1)
    return "with ctx:" in source


_FIX_PUSH_TOKENS = _stream_with_context_pushes_early()


class ViewTimeout(GatewayTimeout):
    """Raised (and answered with 504) when an async view runs longer than
    ``FLASKASYNC_TIMEOUT`` seconds, or the ``timeout`` given to
    :func:`async_route`.

    It is a :class:`werkzeug.exceptions.GatewayTimeout`, so handlers
    registered with ``@app.errorhandler(504)`` or
    ``@app.errorhandler(GatewayTimeout)`` receive it.  ``timeout`` holds the
    limit in seconds and ``view`` the view's endpoint (or qualified name).
    """

    def __init__(self, timeout: float, view: str) -> None:
        self.timeout = timeout
        self.view = view
        super().__init__(
            description=f"The server did not produce a response within {timeout:g} seconds."
        )


# --------------------------------------------------------------- task tracking
#
# Every task created on the app loop by running code (a view, a hook, a task
# they created, a spawned task) goes through _task_factory, which records it:
#
# - in the *scope* of the flaskasync.run() call that created it, while that
#   call runs (a view, a hook, a streamed response); when the call returns,
#   the scope closes: its unfinished tasks become background tasks (or are
#   cancelled, with FLASKASYNC_BACKGROUND_TASKS = False), and finished ones
#   whose exception nobody retrieved are logged;
# - in _background otherwise (spawned tasks, tasks outliving their scope),
#   which holds a strong reference until the task is done.
#
# All of this runs on the app loop (the factory, done callbacks and scope
# closing all run in loop callbacks or tasks), so the baton serialises it.

_scope_var: contextvars.ContextVar = contextvars.ContextVar("flaskasync_scope")


class _Scope:
    """The tasks created while one flaskasync.run() call of the extension runs.

    what: the function that call runs (or a str describing it)."""

    __slots__ = ("app", "cancel_leftovers", "open", "what", "children")

    def __init__(self, app, cancel_leftovers: bool = False, detached: bool = False, what=None):
        self.app = app
        self.cancel_leftovers = cancel_leftovers
        self.open = not detached
        self.what = what
        self.children: list = []

    @property
    def label(self) -> str:
        what = self.what
        return what if isinstance(what, str) else _label(what)

    def close(self) -> list:
        """Close the scope (on the loop); return the tasks it recorded."""
        self.open = False
        children, self.children = self.children, []
        for task in children:
            if task.done():
                _report_unretrieved(task, self.app, self.label)
            else:
                _background[task] = self.app
        return children


# task -> owning app (or None): background tasks, strongly referenced until done.
_background: dict = {}
_apps: "weakref.WeakSet" = weakref.WeakSet()


class _LoopState:
    """Process-wide state of the integration (re-created after fork)."""

    loop = None  # the app loop our task factory is installed on
    inner_factory = None  # a task factory that was installed before ours
    want_debug = False
    atexit_registered = False
    lock = threading.Lock()


def _logger_for(app) -> logging.Logger:
    if app is not None:
        try:
            return app.logger
        except Exception:
            pass
    return logger


def _owner_from(context: Optional[contextvars.Context]):
    app_ctx = _cv_app.get(None) if context is None else context.get(_cv_app)
    return None if app_ctx is None else app_ctx.app


def _describe(task) -> str:
    coro = task.get_coro()
    what = getattr(coro, "__qualname__", None) or repr(coro)
    return f"{task.get_name()!r} ({what})"


def _report_unretrieved(task, app, how: str) -> None:
    """Log a finished task's exception if nobody has retrieved it.

    how: "background" (the task outlived the call that created it, or was
    spawned) or the label of the view/hook that created it and returned
    without awaiting it."""
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
    _logger_for(app).error(message, *args, exc_info=(type(exc), exc, exc.__traceback__))


def _on_task_done(task) -> None:
    owner = _background.pop(task, _MISSING)
    if owner is _MISSING:
        return  # still in an open scope: the scope reports it when it closes
    if getattr(task, "_log_traceback", True) and not task.cancelled():
        # Give whoever awaits the task (its wake-up is scheduled right after
        # this callback) the chance to retrieve the exception first.
        task.get_loop().call_soon(_report_unretrieved, task, owner, "background")


def _task_factory(loop, coro, *, context=None):
    inner = _LoopState.inner_factory
    if inner is not None:
        task = inner(loop, coro) if context is None else inner(loop, coro, context=context)
    elif context is None:
        task = _Task(coro, loop=loop)
    else:
        task = _Task(coro, loop=loop, context=context)
    scope = _scope_var.get(None) if context is None else context.get(_scope_var)
    if scope is None:
        if _current_task(loop) is None:
            # Created by flaskasync.run() for its caller, or by a plain
            # callback: whoever created it holds it.
            return task
        _background[task] = _owner_from(context)
    elif scope.open:
        scope.children.append(task)
    else:
        _background[task] = scope.app
    task.add_done_callback(_on_task_done)
    return task


def _setup_loop(loop) -> None:
    with _LoopState.lock:
        if _LoopState.loop is loop:
            return
        current = loop.get_task_factory()
        if current is not _task_factory:
            _LoopState.inner_factory = current
            loop.set_task_factory(_task_factory)
        if _LoopState.want_debug:
            loop.set_debug(True)
        if not _LoopState.atexit_registered:
            _LoopState.atexit_registered = True
            atexit.register(_shutdown_at_exit)
        _LoopState.loop = loop


def _app_loop():
    loop = get_loop()
    if loop is not _LoopState.loop:
        _setup_loop(loop)
    return loop


def _after_fork_in_child() -> None:
    # The parent's tasks do not exist on the child's (new) app loop.
    _background.clear()
    _LoopState.loop = None
    _LoopState.inner_factory = None
    _LoopState.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------- shutdown


def _grace_period() -> float:
    values = []
    for app in list(_apps):
        value = app.config.get(
            "FLASKASYNC_SHUTDOWN_TIMEOUT", DEFAULT_CONFIG["FLASKASYNC_SHUTDOWN_TIMEOUT"]
        )
        try:
            values.append(max(0.0, float(value)))
        except (TypeError, ValueError):
            pass
    return max(values) if values else DEFAULT_CONFIG["FLASKASYNC_SHUTDOWN_TIMEOUT"]


async def _drain_background(grace: float) -> int:
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
        _logger_for(_background.get(task)).warning(
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
        run(_drain_background(_grace_period()))
    except BaseException:  # at exit nobody else can report it
        logger.exception("flaskasync: error while shutting down background tasks")


# --------------------------------------------------------------- running coroutines


def _nested_call_error(func) -> RuntimeError:
    name = getattr(func, "__qualname__", None) or repr(func)
    return RuntimeError(
        f"cannot run the async function {name} synchronously from async code "
        "(it was called through app.ensure_sync / async_to_sync while the app loop "
        "is running in this thread, for example by render_template() with an async "
        "context processor, or a signal with an async receiver sent from an async "
        "view). Await it instead, or make it a plain function."
    )


async def _await(awaitable):
    return await awaitable


def _not_awaitable(func, value) -> TypeError:
    name = getattr(func, "__qualname__", None) or repr(func)
    return TypeError(
        f"{name} was run as an async function but returned {value!r}, which is not awaitable"
    )


def _label(func) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


async def _await_with_timeout(coro, timeout: float, scope):
    loop = asyncio.get_running_loop()
    task = _current_task(loop)
    expired = []

    def expire():
        expired.append(True)
        task.cancel()

    handle = loop.call_later(timeout, expire)
    try:
        return await coro
    except asyncio.CancelledError:
        if not expired:
            raise
        if _TASK_CONTEXT:
            task.uncancel()
        req = _cv_request.get(None)
        label = (req.request.endpoint if req is not None else None) or scope.label
        _logger_for(scope.app).warning(
            "flaskasync: view %s did not finish within %g s (FLASKASYNC_TIMEOUT): "
            "cancelled it, answering 504",
            label,
            timeout,
        )
        raise ViewTimeout(timeout, label) from None
    finally:
        handle.cancel()


async def _cancel_scope(scope) -> None:
    """Flask's behaviour: cancel the tasks a call left running, and wait."""
    scope.open = False
    children, scope.children = scope.children, []
    pending = [t for t in children if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in children:
        _report_unretrieved(task, scope.app, scope.label)


async def _scoped(coro, scope, timeout):
    """The coroutine flaskasync.run() runs for each of Flask's async calls."""
    token = _scope_var.set(scope)
    try:
        if timeout is None:
            return await coro
        return await _await_with_timeout(coro, timeout, scope)
    finally:
        _scope_var.reset(token)
        if scope.cancel_leftovers:
            await _cancel_scope(scope)
        elif scope.children:
            scope.close()
        else:
            scope.open = False


def _check_timeout(value, key: str = "FLASKASYNC_TIMEOUT"):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} must be a number of seconds or None, got {value!r}")
    if not value > 0:
        raise ValueError(f"{key} must be > 0 (or None for no timeout), got {value!r}")
    return float(value)


def _is_view(func) -> bool:
    """Whether Flask is calling func as the request's view function."""
    ctx = _cv_request.get(None)
    if ctx is None:
        return False
    rule = ctx.request.url_rule
    if rule is not None and ctx.app.view_functions.get(rule.endpoint) is func:
        return True
    # View.dispatch_request and MethodView's methods are bound to a View.
    return isinstance(getattr(func, "__self__", None), View)


_NO_CONFIG: dict = {}


def _run_async(app, func, args, kwargs, timeout=_MISSING):
    """Run func(*args, **kwargs) on the app loop for app; return its result.

    timeout: _MISSING for the app's FLASKASYNC_TIMEOUT when func is the
    request's view, else seconds or None."""
    if _get_running_loop() is not None:
        raise _nested_call_error(func)
    if get_loop() is not _LoopState.loop:
        _app_loop()
    config = _NO_CONFIG if app is None else app.config
    if timeout is _MISSING:
        timeout = config.get("FLASKASYNC_TIMEOUT")
        if timeout is not None and not _is_view(func):
            timeout = None
    if timeout is not None:
        timeout = _check_timeout(timeout)
    coro = func(*args, **kwargs)
    if not _iscoroutine(coro):
        if not inspect.isawaitable(coro):
            raise _not_awaitable(func, coro)
        coro = _await(coro)
    scope = _Scope(app, not config.get("FLASKASYNC_BACKGROUND_TASKS", True), False, func)
    job = _scoped(coro, scope, timeout)
    # flaskasync.run() names its task after this: the view's name, not "_scoped".
    job.__qualname__ = getattr(func, "__qualname__", job.__qualname__)
    if _FIX_PUSH_TOKENS:
        return _run_fixing_tokens(job)
    return run(job)


def _run_fixing_tokens(coro):
    # Flask < 3.1: stream_with_context() in an async view pushes the request
    # context inside the view's task, whose Context is a copy of this
    # thread's.  Its token would be reset here, in this thread's Context, and
    # fail ("was created in a different Context").  Re-create the tokens of
    # such pushes in this Context (the values are already copied back).
    ctx = _cv_request.get(None)
    before = len(ctx._cv_tokens) if ctx is not None else 0
    try:
        return run(coro)
    finally:
        if ctx is not None and len(ctx._cv_tokens) > before:
            for i in range(before, len(ctx._cv_tokens)):
                _token, app_ctx = ctx._cv_tokens[i]
                if app_ctx is not None and app_ctx._cv_tokens:
                    app_ctx._cv_tokens[-1] = _cv_app.set(app_ctx)
                ctx._cv_tokens[i] = (_cv_request.set(ctx), app_ctx)


def _make_sync(app, func: Callable[..., Awaitable[_T]]) -> Callable[..., _T]:
    if not callable(func):
        raise TypeError(f"async_to_sync() expects an async callable, got {func!r}")

    def run_on_app_loop(*args, **kwargs):
        return _run_async(app, func, args, kwargs)

    return run_on_app_loop


# --------------------------------------------------------------- streaming


async def _anext(aiterator):
    return await aiterator.__anext__()


def _is_async_iterable(obj) -> bool:
    return hasattr(type(obj), "__aiter__")


def _unwrap_async_body(obj):
    """The async iterable a view returned, or None.

    ``flask.stream_with_context(async_gen)`` returns a function wrapping the
    async generator (Flask only knows sync generators): unwrap it, the
    stream keeps the request context anyway."""
    if _is_async_iterable(obj):
        return obj
    if inspect.isfunction(obj):
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None and _is_async_iterable(wrapped):
            return wrapped
    return None


class _AsyncStream:
    """A WSGI response iterable over an async iterator.

    Each ``next()`` runs one step of the async iterator on the app loop
    (``flaskasync.run``), always in the same :class:`contextvars.Context`,
    copied when the response was made: the request context is available
    and a context variable set in one step can be reset in another.
    ``close()`` (called by every WSGI server when the response ends or the
    client goes away) closes the async generator with ``aclose()``.
    """

    __slots__ = ("_app", "_aiter", "_ctx", "_scope", "_where", "_finished", "_closed")

    def __init__(self, app, aiterable) -> None:
        self._app = app
        self._aiter = type(aiterable).__aiter__(aiterable)
        self._finished = False
        self._closed = False
        req = _cv_request.get(None)
        if req is not None:
            self._where = f"{req.request.method} {req.request.full_path.rstrip('?')}"
        else:
            self._where = repr(self._aiter)
        config = app.config if app is not None else {}
        self._scope = _Scope(
            app,
            cancel_leftovers=not config.get("FLASKASYNC_BACKGROUND_TASKS", True),
            what=f"the response stream for {self._where}",
        )
        ctx = contextvars.copy_context()
        ctx.run(_scope_var.set, self._scope)
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"<flaskasync stream of {self._aiter!r} for {self._where}>"

    def __iter__(self):
        return self

    def _check_thread(self, what: str) -> None:
        if _get_running_loop() is not None:
            raise RuntimeError(
                f"cannot {what} a response streamed from an async iterator in async code "
                "(the event loop is running in this thread); the WSGI server consumes "
                "it, or iterate it from sync code"
            )

    def __next__(self):
        if self._finished:
            raise StopIteration
        self._check_thread("iterate")
        try:
            return run(_stream_step(self))
        except StopAsyncIteration:
            self._finished = True
            raise StopIteration from None
        except BaseException as exc:
            self._finished = True
            if isinstance(exc, Exception):
                _logger_for(self._app).error(
                    "flaskasync: exception while streaming the response to %s; "
                    "the response is cut short",
                    self._where,
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
            raise

    def close(self) -> None:
        """Close the async iterator (``aclose``) and the stream's task scope."""
        if self._closed:
            return
        self._closed = True
        running = _get_running_loop()
        try:
            if running is not None:
                if running is not _LoopState.loop:
                    raise RuntimeError("close() called from a foreign event loop")
                # Called from async code on the app loop: close in a task.
                task = _Task(_close_stream(self), loop=running)
                _background[task] = self._app
                task.add_done_callback(_on_task_done)
            else:
                run(_close_stream(self))
        except Exception as exc:
            _logger_for(self._app).error(
                "flaskasync: exception while closing the streamed response to %s",
                self._where,
                exc_info=(type(exc), exc, exc.__traceback__),
            )


async def _stream_step(stream: _AsyncStream):
    loop = asyncio.get_running_loop()
    if _TASK_CONTEXT:
        # Created directly (not through the task factory): it is awaited here.
        step = _Task(_anext(stream._aiter), loop=loop, context=stream._ctx)
    else:  # pragma: no cover - Python < 3.11: a copy of the stream's Context
        step = stream._ctx.run(_Task, _anext(stream._aiter), loop=loop)
    return await step


async def _close_stream(stream: _AsyncStream) -> None:
    loop = asyncio.get_running_loop()
    try:
        aclose = getattr(stream._aiter, "aclose", None)
        if aclose is not None and not stream._finished:
            stream._finished = True
            if _TASK_CONTEXT:
                await _Task(_await(aclose()), loop=loop, context=stream._ctx)
            else:  # pragma: no cover
                await stream._ctx.run(_Task, _await(aclose()), loop=loop)
    finally:
        stream._finished = True
        if stream._scope.cancel_leftovers:
            await _cancel_scope(stream._scope)
        else:
            stream._scope.close()


# Return values that cannot hold an async body: make_response as is.
_PLAIN_RV_TYPES = frozenset({str, bytes, bytearray, dict, list})


def _prepare_rv(app, rv):
    """Turn an async body returned by a view into a streaming WSGI iterable."""
    if type(rv) is tuple:
        if rv:
            body = _unwrap_async_body(rv[0])
            if body is not None:
                return (_AsyncStream(app, body),) + rv[1:]
        return rv
    body = _unwrap_async_body(rv)
    if body is not None:
        return _AsyncStream(app, body)
    return rv


def _finish_response(app, response):
    """``Response(async_gen)``: stream the async iterable it wraps."""
    body = getattr(response, "response", None)
    if body is not None and type(body) is not list:
        body = _unwrap_async_body(body)
        if body is not None:
            response.response = _AsyncStream(app, body)
    return response


# --------------------------------------------------------------- the app side


def _update_template_context(app, context: dict) -> None:
    """Flask 3's update_template_context, for Flask < 3.0, which calls
    context processors without ensure_sync."""
    from itertools import chain

    names = iter((None,))
    req = _cv_request.get(None)
    if req is not None:
        names = chain(names, reversed(req.request.blueprints))
    orig_ctx = context.copy()
    for name in names:
        if name in app.template_context_processors:
            for func in app.template_context_processors[name]:
                context.update(app.ensure_sync(func)())
    context.update(orig_ctx)


def _patched_async_to_sync(self, func):
    return _make_sync(self, func)


def _patched_make_response(self, rv):
    if type(rv) in _PLAIN_RV_TYPES:
        return type(self).make_response(self, rv)
    return _finish_response(self, type(self).make_response(self, _prepare_rv(self, rv)))


def _patched_update_template_context(self, context):
    _update_template_context(self, context)


class FlaskAsync:
    """Run a Flask app's ``async def`` code on flaskasync's app loop.

    ``FlaskAsync(app)``, or ``ext = FlaskAsync()`` then ``ext.init_app(app)``
    in an application factory.  Installing it:

    - sets the ``FLASKASYNC_*`` configuration defaults (see
      :data:`DEFAULT_CONFIG`);
    - replaces ``app.async_to_sync``, through which Flask runs every
      coroutine function, with one running it by :func:`flaskasync.run`;
    - replaces ``app.make_response`` so that a view may return an async
      generator (or a ``Response`` wrapping one) and have it streamed;
    - on Flask < 3.0, makes async template context processors work.

    The methods are set on the app instance; nothing is monkeypatched
    globally.  Sync views are left alone.  The app is recorded in
    ``app.extensions["flaskasync"]``.
    """

    def __init__(self, app: Optional[flask.Flask] = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Install the integration on app (idempotent)."""
        if not isinstance(app, flask.Flask):
            raise TypeError(f"FlaskAsync.init_app() expects a flask.Flask app, got {app!r}")
        for key, value in DEFAULT_CONFIG.items():
            app.config.setdefault(key, value)
        _validate_config(app.config)
        if not isinstance(app, Flask):
            # Set on the instance: Flask looks them up as self.<name>(...).
            app.async_to_sync = _patched_async_to_sync.__get__(app)  # type: ignore[method-assign]
            app.make_response = _patched_make_response.__get__(app)  # type: ignore[method-assign]
            if _PATCH_CONTEXT_PROCESSORS:
                patched = _patched_update_template_context.__get__(app)
                app.update_template_context = patched  # type: ignore[method-assign]
        app.extensions.setdefault(_EXTENSION_KEY, self)
        _apps.add(app)
        if app.config.get("FLASKASYNC_DEBUG"):
            _LoopState.want_debug = True
            if _LoopState.loop is not None:
                _LoopState.loop.set_debug(True)
        # The app loop itself is created on first use, not here: a gunicorn
        # master that imports the app (--preload) never needs one.


def _validate_config(config) -> None:
    _check_timeout(config.get("FLASKASYNC_TIMEOUT"))
    grace = config.get("FLASKASYNC_SHUTDOWN_TIMEOUT")
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
        raise ValueError(
            f"FLASKASYNC_SHUTDOWN_TIMEOUT must be a number of seconds >= 0, got {grace!r}"
        )
    for key in ("FLASKASYNC_BACKGROUND_TASKS", "FLASKASYNC_DEBUG"):
        if not isinstance(config.get(key), bool):
            raise TypeError(f"{key} must be True or False, got {config.get(key)!r}")


class Flask(flask.Flask):
    """A drop-in :class:`flask.Flask` with :class:`FlaskAsync` installed.

    ``app = flaskasync.Flask(__name__)`` is ``app = flask.Flask(__name__)``
    followed by ``FlaskAsync(app)``, with the integration as methods of the
    class instead of attributes of the instance, so a subclass can extend
    them with ``super()``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        FlaskAsync(self)

    def async_to_sync(self, func: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        """Return a sync function running ``func``'s coroutine on the app loop."""
        return _make_sync(self, func)

    def make_response(self, rv: Any) -> flask.Response:
        """Flask's make_response, plus async generators as streamed bodies."""
        if type(rv) in _PLAIN_RV_TYPES:
            return super().make_response(rv)
        return _finish_response(self, super().make_response(_prepare_rv(self, rv)))

    if _PATCH_CONTEXT_PROCESSORS:

        def update_template_context(self, context: dict) -> None:
            """Flask's, running async context processors through ensure_sync."""
            _update_template_context(self, context)


# --------------------------------------------------------------- public helpers


def _current_app_or_none():
    app_ctx = _cv_app.get(None)
    return None if app_ctx is None else app_ctx.app


def async_route(func=None, *, timeout: Any = _MISSING):
    """Make one async view run on the app loop, without installing FlaskAsync.

    Put it under the route decorator::

        @app.route("/")
        @flaskasync.async_route
        async def index():
            ...

        @app.route("/slow")
        @flaskasync.async_route(timeout=30)
        async def slow():
            ...

    The decorated view is a plain function to Flask, so the app's own
    ``async_to_sync`` (asgiref) is never involved.  It behaves as a view
    under :class:`FlaskAsync`: the coroutine runs with :func:`flaskasync.run`,
    tasks it creates follow ``FLASKASYNC_BACKGROUND_TASKS``, an async
    generator it returns (or that it is) is streamed, and ``timeout``
    (seconds; default: the app's ``FLASKASYNC_TIMEOUT``; ``None``: no limit)
    cancels it and answers 504.  It also works on methods of
    ``View``/``MethodView`` classes.
    """
    if timeout is not _MISSING:
        _check_timeout(timeout, "async_route(timeout=...)")
    if func is None:
        return functools.partial(async_route, timeout=timeout)
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        def stream_view(*args, **kwargs):
            return _AsyncStream(_current_app_or_none(), func(*args, **kwargs))

        return stream_view
    if not _iscoroutinefunction(func):
        raise TypeError(
            f"async_route() expects an async def function or async generator function, got {func!r}"
        )

    @functools.wraps(func)
    def view(*args, **kwargs):
        app = _current_app_or_none()
        limit = timeout
        if limit is _MISSING:
            limit = app.config.get("FLASKASYNC_TIMEOUT") if app is not None else None
        rv = _run_async(app, func, args, kwargs, limit)
        rv = _prepare_rv(app, rv)
        if isinstance(rv, _WerkzeugResponse):
            rv = _finish_response(app, rv)
        return rv

    return view


async def _create_task(coro, name, context):
    return _create_task_now(asyncio.get_running_loop(), coro, name, context)


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
        hint = " (did you forget to call it?)" if _iscoroutinefunction(coro) else ""
        raise TypeError(f"spawn() expects a coroutine object, got {coro!r}{hint}")
    if name is not None and not isinstance(name, str):
        coro.close()
        raise TypeError(f"spawn(): name must be a str or None, got {name!r}")
    loop = _app_loop()
    context = contextvars.copy_context()
    context.run(_scope_var.set, _Scope(_owner_from(None), detached=True))
    running = _get_running_loop()
    if running is loop:
        return _create_task_now(loop, coro, name, context)
    if running is None:
        return run(_create_task(coro, name, context))
    # Another event loop runs in this thread: hand the creation to the app loop.
    return asyncio.run_coroutine_threadsafe(_create_task(coro, name, context), loop).result()


def _create_task_now(loop, coro, name, context):
    if _TASK_CONTEXT:
        return loop.create_task(coro, name=name, context=context)
    task = context.run(loop.create_task, coro)  # pragma: no cover
    if name is not None:  # pragma: no cover
        task.set_name(name)
    return task  # pragma: no cover
