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

Module layout: this file is the Flask glue.  Task supervision, ``spawn``
and the async-to-sync wrapper live in ``_tasks`` (no Flask), the WSGI
streaming of async iterables in ``_streaming`` (no Flask), and everything
that depends on Flask's version or internals in ``_flaskcompat``.
"""

from __future__ import annotations

import functools
import inspect
from itertools import chain
from typing import Any, Callable, Coroutine, Optional

import flask
from flask.views import View
from werkzeug.exceptions import GatewayTimeout
from werkzeug.wrappers import Response as _WerkzeugResponse

from . import _bridge, _core, _flaskcompat, _tasks
from ._core import get_loop, run
from ._streaming import AsyncStream
from ._tasks import Scope, scoped, spawn

__all__ = ["FlaskAsync", "Flask", "async_route", "spawn", "ViewTimeout", "DEFAULT_CONFIG"]

#: The configuration keys and their defaults, set with ``setdefault`` by
#: :meth:`FlaskAsync.init_app`.
DEFAULT_CONFIG: dict = {
    "FLASKASYNC_TIMEOUT": None,
    "FLASKASYNC_BACKGROUND_TASKS": True,
    "FLASKASYNC_SHUTDOWN_TIMEOUT": _tasks.DEFAULT_SHUTDOWN_TIMEOUT,
    "FLASKASYNC_DEBUG": False,
}

_EXTENSION_KEY = "flaskasync"
_MISSING = object()
_NO_CONFIG: dict = {}
_has_request_context = flask.has_request_context
_LoopState = _tasks._LoopState


def _current_app_or_none():
    return _flaskcompat.app_in(None)


def _shutdown_timeout_of(app) -> Optional[float]:
    return app.config.get("FLASKASYNC_SHUTDOWN_TIMEOUT")


_tasks.set_owner_hooks(_flaskcompat.app_in, _shutdown_timeout_of)


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


# --------------------------------------------------------------- running Flask's async calls


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
    if not _has_request_context():
        return False
    rule = flask.request.url_rule
    if rule is not None and flask.current_app.view_functions.get(rule.endpoint) is func:
        return True
    # View.dispatch_request and MethodView's methods are bound to a View.
    return isinstance(getattr(func, "__self__", None), View)


def _view_timed_out(scope: Scope, timeout: float) -> ViewTimeout:
    """On the loop, in the view's task: log the timeout, make the 504."""
    endpoint = flask.request.endpoint if _has_request_context() else None
    label = endpoint or scope.label
    _tasks.logger_for(scope.owner).warning(
        "flaskasync: view %s did not finish within %g s (FLASKASYNC_TIMEOUT): "
        "cancelled it, answering 504",
        label,
        timeout,
    )
    return ViewTimeout(timeout, label)


def _supervise(coro, func, app, timeout=_MISSING):
    """The supervised coroutine for one of Flask's async calls (func) for
    app, and the name of its task.  How it is awaited is up to the caller:
    :func:`_run_call` runs it with flaskasync.run from a WSGI thread.

    timeout: _MISSING for the app's FLASKASYNC_TIMEOUT when func is the
    request's view, else seconds or None."""
    if get_loop() is not _LoopState.loop:
        _tasks.app_loop()
    config = _NO_CONFIG if app is None else app.config
    if timeout is _MISSING:
        timeout = config.get("FLASKASYNC_TIMEOUT")
        if timeout is not None and not _is_view(func):
            timeout = None
    if timeout is not None:
        try:
            timeout = _check_timeout(timeout)
        except BaseException:
            coro.close()
            raise
    scope = Scope(app, not config.get("FLASKASYNC_BACKGROUND_TASKS", True), False, func)
    # The task is named after the function: the view's name, not "scoped".
    name = getattr(func, "__qualname__", None)
    return scoped(coro, scope, timeout, _view_timed_out), name if type(name) is str else None


def _run_call(coro, func, app, timeout=_MISSING):
    """Run the coroutine of one of Flask's async calls from a WSGI thread."""
    job, name = _supervise(coro, func, app, timeout)
    if _flaskcompat.STREAM_WITH_CONTEXT_PUSHES_EARLY:
        return _flaskcompat.run_keeping_push_tokens(run, job, name=name)
    return run(job, name=name)


# --------------------------------------------------------------- streaming


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


def _stream(app, aiterable) -> AsyncStream:
    """A WSGI response body streaming aiterable, for the current request."""
    where = None
    if _has_request_context():
        req = flask.request
        where = f"{req.method} {req.full_path.rstrip('?')}"
    cancel = app is not None and not app.config.get("FLASKASYNC_BACKGROUND_TASKS", True)
    return AsyncStream(app, aiterable, where, cancel)


# Return values that cannot hold an async body: make_response as is.
_PLAIN_RV_TYPES = frozenset({str, bytes, bytearray, dict, list})


def _prepare_rv(app, rv):
    """Turn an async body returned by a view into a streaming WSGI iterable."""
    if type(rv) is tuple:
        if rv:
            body = _unwrap_async_body(rv[0])
            if body is not None:
                return (_stream(app, body),) + rv[1:]
        return rv
    body = _unwrap_async_body(rv)
    if body is not None:
        return _stream(app, body)
    return rv


def _finish_response(app, response):
    """``Response(async_gen)``: stream the async iterable it wraps."""
    body = getattr(response, "response", None)
    if body is not None and type(body) is not list:
        body = _unwrap_async_body(body)
        if body is not None:
            response.response = _stream(app, body)
    return response


# --------------------------------------------------------------- the app side


def _update_template_context(app, context: dict) -> None:
    """Flask 3's update_template_context, for Flask < 3.0, which calls
    context processors without ensure_sync."""
    names: Any = (None,)
    if _has_request_context():
        names = chain(names, reversed(flask.request.blueprints))
    orig_ctx = context.copy()
    for name in names:
        if name in app.template_context_processors:
            for func in app.template_context_processors[name]:
                context.update(app.ensure_sync(func)())
    context.update(orig_ctx)


def _slow_caller(func, app):
    """The Python sync caller: every case the C fast path leaves to Python."""
    return _tasks.sync_caller(func, _run_call, app)


def _other_value(value, func, app):
    """func returned something else than a coroutine object: run it as the
    Python sync caller does."""
    if not _tasks._iscoroutine(value):
        if not inspect.isawaitable(value):
            raise _tasks._not_awaitable(func, value)
        value = _tasks._await(value)
    return _run_call(value, func, app)


def _run_inline(coro, scope):
    """The C sync caller's path in ASGI mode, on the loop's thread: the
    request's greenlet hands coro (in scope) to its task, which awaits it
    inline."""
    try:
        return _bridge.reenter(_tasks.run_in_scope(coro, scope))
    except BaseException:
        # Refused before it ran (outside a request's greenlet): reenter
        # closed the wrapper; close coro too, or it is reported as never
        # awaited on top of the error.
        if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            coro.close()
        raise


#: What the C sync caller (csrc/supervise.c) needs from Python; the order
#: is the C side's.  The fast path covers calls with no FLASKASYNC_TIMEOUT
#: and FLASKASYNC_BACKGROUND_TASKS on: one C call from Flask's ensure_sync
#: to flaskasync.run, in a task scope recorded by the loop's C supervision
#: (in ASGI mode, from a request's greenlet: to _run_inline).
_POLICY = (
    _tasks.Scope,
    _slow_caller,
    _other_value,
    _tasks._nested_call_error,
    _tasks.app_loop,
    _run_inline,
    "FLASKASYNC_TIMEOUT",
    "FLASKASYNC_BACKGROUND_TASKS",
)


def _async_to_sync_for(app):
    """app.async_to_sync: the C caller, or on Flask < 3.1 (whose
    stream_with_context needs its push tokens re-created) the Python one."""
    if _flaskcompat.STREAM_WITH_CONTEXT_PUSHES_EARLY:
        return functools.partial(_slow_caller, app=app)
    return _core._AsyncToSync(app, _POLICY)


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
        caller = _async_to_sync_for(app)
        if not isinstance(app, Flask):
            # Set on the instance: Flask looks them up as self.<name>(...).
            app.async_to_sync = caller  # type: ignore[method-assign]
            app.make_response = _patched_make_response.__get__(app)  # type: ignore[method-assign]
            if _flaskcompat.CONTEXT_PROCESSORS_BYPASS_ENSURE_SYNC:
                patched = _patched_update_template_context.__get__(app)
                app.update_template_context = patched  # type: ignore[method-assign]
        else:
            app._flaskasync_async_to_sync = caller
        app.extensions.setdefault(_EXTENSION_KEY, self)
        _tasks.register_owner(app)
        if app.config.get("FLASKASYNC_DEBUG"):
            _tasks.set_debug()
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
        return self._flaskasync_async_to_sync(func)

    def make_response(self, rv: Any) -> flask.Response:
        """Flask's make_response, plus async generators as streamed bodies."""
        if type(rv) in _PLAIN_RV_TYPES:
            return super().make_response(rv)
        return _finish_response(self, super().make_response(_prepare_rv(self, rv)))

    if _flaskcompat.CONTEXT_PROCESSORS_BYPASS_ENSURE_SYNC:

        def update_template_context(self, context: dict) -> None:
            """Flask's, running async context processors through ensure_sync."""
            _update_template_context(self, context)


# --------------------------------------------------------------- public helpers


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
            return _stream(_current_app_or_none(), func(*args, **kwargs))

        return stream_view
    if not inspect.iscoroutinefunction(func):
        raise TypeError(
            f"async_route() expects an async def function or async generator function, got {func!r}"
        )

    @functools.wraps(func)
    def view(*args, **kwargs):
        app = _current_app_or_none()
        limit = timeout
        if limit is _MISSING:
            limit = app.config.get("FLASKASYNC_TIMEOUT") if app is not None else None
        call = functools.partial(_run_call, timeout=limit)
        rv = _tasks.sync_caller(func, call, app)(*args, **kwargs)
        rv = _prepare_rv(app, rv)
        if isinstance(rv, _WerkzeugResponse):
            rv = _finish_response(app, rv)
        return rv

    return view
