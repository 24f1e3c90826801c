"""ASGI serving: an unchanged Flask app on the server's event loop.

``ASGIApp(app)`` is an ASGI 3 application (``http`` and ``lifespan``
scopes; a ``websocket`` scope is refused) for any Flask app.  Run it on
flaskasync's loop, for example with ``python -m flaskasync serve`` (uvicorn
with httptools), ``gunicorn -k flaskasync.GunicornWorker`` or
``uvicorn --loop flaskasync:new_event_loop``.

How a request is served:

- The matched endpoint decides, before Flask's pipeline runs.  A request
  for an **async view** (an ``async def`` view, an async generator view, a
  ``View``/``MethodView`` whose handler for the method is async, or a
  decorated function wrapping one with ``functools.wraps``) runs Flask's
  whole WSGI pipeline (``app.wsgi_app``: hooks, error handlers, signals,
  sessions, extensions) in a greenlet on the loop's thread, and every
  coroutine Flask runs is awaited on the loop by the request's task
  (:mod:`flaskasync._bridge`): the request holds no thread while it waits.
- Every other request (sync views, 404, 405, redirects) runs the same
  pipeline in a thread pool (``threads``), exactly as a threaded WSGI
  server runs it, never on the loop's thread.
- Either way the request body streams in from ASGI ``receive`` and the
  response streams out to ``send``; ``flaskasync.run()`` (which both use)
  reaches the loop from a pool thread by submitting and waiting, and from a
  greenlet by switching to the loop's side.

The server's loop is the process's app loop from lifespan startup to
lifespan shutdown (``flaskasync.get_loop()`` returns it, background tasks
and ``spawn`` run on it).  At lifespan shutdown background tasks get
``FLASKASYNC_SHUTDOWN_TIMEOUT`` seconds, then are cancelled.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import io
import logging
import queue
import sys
import tempfile
import threading
from typing import Any, Optional

try:
    import greenlet  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "flaskasync's ASGI mode (ASGIApp, python -m flaskasync serve, GunicornWorker) "
        "needs greenlet, uvicorn and httptools: pip install 'flaskasync[serve]'"
    ) from exc

import flask
from flask.views import MethodView
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from . import _bridge, _core, _tasks
from ._flask import FlaskAsync
from ._core import _asgi_environ, _asgi_start, run

__all__ = ["ASGIApp"]

logger = logging.getLogger("flaskasync")

_Task = asyncio.Task
_CancelledError = asyncio.CancelledError

#: Default size of the thread pool running sync views.
DEFAULT_THREADS = 8

#: Seconds after which a request still running starts watching for its
#: client going away (see _RequestState.watch_soon).
WATCH_DELAY = 0.05


class ClientDisconnected(OSError):
    """The client went away while the response was being sent."""


# --------------------------------------------------------------- environ


def _wsgi_str(s: str) -> str:
    """A str of the ASGI scope as a WSGI "native string" (bytes as latin-1)."""
    if s.isascii():
        return s
    return s.encode("utf-8").decode("latin-1")


_HEADER_KEYS: dict = {}


def _header_key(name: bytes) -> str:
    key = _HEADER_KEYS.get(name)
    if key is None:
        text = name.decode("latin-1").upper().replace("-", "_")
        if text in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = text
        else:
            key = "HTTP_" + text
        if len(_HEADER_KEYS) < 1024:
            _HEADER_KEYS[name] = key
    return key


def build_environ(scope: dict, body: Any) -> dict:
    """The WSGI environ of an ASGI http scope, with body as ``wsgi.input``.

    The reference for ``_core._asgi_environ``, which serves requests (the
    tests compare the two)."""
    root_path = scope.get("root_path", "")
    path = scope["path"]
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": _wsgi_str(root_path),
        "PATH_INFO": _wsgi_str(path),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "",
        "SERVER_PROTOCOL": "HTTP/" + scope.get("http_version", "1.1"),
        "REMOTE_ADDR": client[0] if client else "",
        "REMOTE_PORT": str(client[1]) if client else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "asgi.scope": scope,
    }
    for name, value in scope.get("headers", ()):
        key = _HEADER_KEYS.get(name) or _header_key(name)
        value = value.decode("latin-1")
        if key in environ:
            # Repeated headers are joined, cookies with "; " (RFC 6265).
            sep = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = environ[key] + sep + value
        else:
            environ[key] = value
    return environ


# --------------------------------------------------------------- request body


class _Input(io.RawIOBase):
    """``wsgi.input``: the request body, read from ASGI ``receive`` as the
    application reads it (never ahead of it, so a 413 or an unread body
    does not make the server read it all)."""

    def __init__(self, receive, state) -> None:
        super().__init__()
        self._receive = receive
        self._state = state
        self._buf = b""
        self._pos = 0
        self._more = True

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Get the next chunk; False at the end of the body."""
        while self._more:
            coro = _call(self._receive)
            try:
                msg = run(coro)
            except RuntimeError:
                coro.close()  # run() refused it (called from async code)
                raise
            kind = msg.get("type")
            if kind == "http.request":
                self._more = msg.get("more_body", False)
                if not self._more:
                    self._state.body_done()
                data = msg.get("body", b"")
                if data:
                    self._buf = data
                    self._pos = 0
                    return True
            elif kind == "http.disconnect":
                # As a WSGI server's input at a closed socket: the body ends
                # early, and werkzeug answers the short read with 400
                # (werkzeug.exceptions.ClientDisconnected), sent to nobody.
                self._more = False
                self._state.disconnected = True
        return False

    def readinto(self, b) -> int:
        if self._pos >= len(self._buf) and not self._fill():
            return 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self._pos >= len(self._buf) and not self._fill():
            return b""
        chunk = self._buf[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk

    def readall(self) -> bytes:
        parts = [self._buf[self._pos:]]
        self._pos = len(self._buf)
        while self._fill():
            parts.append(self._buf)
            self._pos = len(self._buf)
        return b"".join(parts)


class _Empty(io.RawIOBase):
    """``wsgi.input`` of a request without a body."""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass  # one instance serves every bodyless request


async def _call(fn, *args):
    return await fn(*args)


def _body_kind(scope: dict):
    """(has a body, is chunked) from the request headers."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"0", b""), False
        if name == b"transfer-encoding":
            return True, True
    return False, False


_EMPTY = _Empty()

#: Bodies of async views' requests larger than this go to a temporary file.
_SPOOL_MAX = 1 << 20


class _RequestState:
    """What the serving side knows about one request."""

    __slots__ = ("disconnected", "done", "task", "watcher", "receive", "body_complete", "loop",
                 "timer")

    def __init__(self, loop, receive, body_complete: bool) -> None:
        self.loop = loop
        self.disconnected = False
        self.done = False
        self.task: Optional[asyncio.Task] = None
        self.watcher: Optional[asyncio.Task] = None
        self.receive = receive
        self.body_complete = body_complete
        self.timer: Optional[asyncio.TimerHandle] = None

    def body_done(self) -> None:
        """The application read the whole body (in a pool thread or a
        greenlet): from now on, watch for the client going away."""
        self.body_complete = True
        self.loop.call_soon_threadsafe(self.watch)

    def watch(self) -> None:
        """Watch for the client going away (on the loop, once the body has
        been read: the watcher consumes ``receive``)."""
        self.timer = None
        if self.body_complete and self.watcher is None and not self.done:
            self.watcher = _Task(_watch_disconnect(self), loop=self.loop)

    def watch_soon(self) -> None:
        """Watch for the client going away if the request is still running
        in WATCH_DELAY seconds.  Most requests are done by then and never
        pay for a watcher task; a disconnect is noticed that much later."""
        self.timer = self.loop.call_later(WATCH_DELAY, self.watch)

    def finish(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        watcher = self.watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()


# --------------------------------------------------------------- response


async def _send_all(send, messages) -> None:
    for msg in messages:
        await send(msg)


def _serve_wsgi(wsgi_app, environ: dict, send, state: _RequestState):
    """Run the WSGI app (in a pool thread or a request's greenlet).

    Messages are sent as the body is produced, except the last ones, which
    are returned for the caller to send on the loop: a response whose body
    is one chunk (most) costs no extra trip to the loop."""
    headers_out: list = []
    status_out: list = []

    def start_response(status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if status_out and state_started[0]:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        status_out[:] = [status]
        headers_out[:] = headers
        return _write_not_supported

    state_started = [False]
    app_iter = wsgi_app(environ, start_response)
    try:
        it = iter(app_iter)
        chunk = b""
        for chunk in it:
            if chunk:
                break
        else:
            chunk = None
        if not status_out:
            raise RuntimeError("the WSGI application did not call start_response()")
        start, length = _asgi_start(status_out[0], headers_out)
        if chunk is None:
            return [start, {"type": "http.response.body", "body": b"", "more_body": False}]
        if length is not None and len(chunk) >= length:
            return [start, {"type": "http.response.body", "body": chunk, "more_body": False}]
        # A streamed body: each chunk is sent as it is produced.
        state_started[0] = True
        _send_sync(send, state, [start, {"type": "http.response.body", "body": chunk,
                                         "more_body": True}])
        for chunk in it:
            if chunk:
                _send_sync(send, state, [{"type": "http.response.body", "body": chunk,
                                          "more_body": True}])
        return [{"type": "http.response.body", "body": b"", "more_body": False}]
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None:
            close()


def _write_not_supported(data):  # pragma: no cover - Flask never uses write()
    raise NotImplementedError("the WSGI write() callable is not supported in ASGI mode")


def _start_message(status_out, headers_out):
    """The reference for ``_core._asgi_start``, which serves requests."""
    if not status_out:
        raise RuntimeError("the WSGI application did not call start_response()")
    status = int(status_out[0][:3])
    headers = []
    length = None
    for name, value in headers_out:
        lname = name.lower()
        if lname == "content-length":
            try:
                length = int(value)
            except ValueError:
                pass
        headers.append((lname.encode("latin-1"), value.encode("latin-1")))
    return {"type": "http.response.start", "status": status, "headers": headers}, length


def _send_sync(send, state: _RequestState, messages) -> None:
    if state.disconnected:
        raise ClientDisconnected("the client disconnected")
    run(_send_all(send, messages))
    if state.disconnected:
        raise ClientDisconnected("the client disconnected")


# --------------------------------------------------------------- the pool


def _set_result(fut, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut, exc) -> None:
    if not fut.done():
        fut.set_exception(exc)


class _Pool:
    """The threads running sync views: a queue and ``threads`` threads.

    Lighter than ``loop.run_in_executor`` with a ThreadPoolExecutor (no
    concurrent.futures.Future, lock and Condition per call, no chaining of
    two futures): a call is one ``SimpleQueue.put`` and, when done, one
    ``call_soon_threadsafe`` resolving an asyncio future."""

    def __init__(self, loop, threads: int) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"flaskasync-sync_{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn, *args) -> asyncio.Future:
        fut = self._loop.create_future()
        self._queue.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        get = self._queue.get
        call = self._loop.call_soon_threadsafe
        while True:
            item = get()
            if item is None:
                return
            fut, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: B036 - handed to the awaiting request
                try:
                    call(_set_exception, fut, exc)
                except RuntimeError:  # the loop is closed: nobody is waiting
                    pass
            else:
                try:
                    call(_set_result, fut, result)
                except RuntimeError:
                    pass
            del item, fut, fn, args

    def shutdown(self) -> None:
        """Let the queued calls finish, then stop the threads (blocking)."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()


# --------------------------------------------------------------- dispatch


def _is_async_callable(func) -> bool:
    func = inspect.unwrap(func)
    return inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)


def _view_is_async(view_func, method: str) -> bool:
    view_class = getattr(view_func, "view_class", None)
    if view_class is None:
        return _is_async_callable(view_func)
    if issubclass(view_class, MethodView) and view_class.dispatch_request is MethodView.dispatch_request:
        handler = getattr(view_class, method.lower(), None)
        if handler is None and method == "HEAD":
            handler = getattr(view_class, "get", None)
        return handler is not None and _is_async_callable(handler)
    return _is_async_callable(view_class.dispatch_request)


def _n_rules(app) -> int:
    # Flask refuses new routes once it has handled a request; a change
    # before that shows in the number of views.
    return len(app.view_functions)


class _Routes:
    """Which requests go to an async view, worked out from the app's URL map
    once (again if rules are added).

    - all_async: True when every view of the app is async (every request
      runs in a greenlet), False when none is (every request runs in the
      pool), None for a mix;
    - static: (method, path) -> bool for the rules without variables, host
      or subdomain, looked up without matching;
    - anything else is matched by Flask's own URL adapter."""

    def __init__(self, app) -> None:
        self.app = app
        self.n_rules = _n_rules(app)
        self.static: dict = {}
        self.by_view: dict = {}
        kinds = set()
        url_map = app.url_map
        plain = not url_map.host_matching and not getattr(app, "subdomain_matching", False)
        for rule in url_map.iter_rules():
            view = app.view_functions.get(rule.endpoint)
            if view is None:
                continue
            for method in rule.methods or ():
                decision = self.view_is_async(view, method)
                kinds.add(decision)
                if plain and not rule.arguments and not rule.subdomain and not rule.host \
                        and not rule.redirect_to and not rule.websocket:
                    self.static[(method, rule.rule)] = decision
        self.all_async = kinds.pop() if len(kinds) == 1 else None

    def view_is_async(self, view, method: str) -> bool:
        key = (view, method)
        decision = self.by_view.get(key)
        if decision is None:
            decision = self.by_view[key] = _view_is_async(view, method)
        return decision

    def match(self, environ: dict, method: str) -> bool:
        app = self.app
        try:
            adapter = app.create_url_adapter(app.request_class(environ))
            if adapter is None:
                return False
            rule, _args = adapter.match(return_rule=True)
        except (HTTPException, RequestRedirect):
            return False
        view = app.view_functions.get(rule.endpoint)
        return view is not None and self.view_is_async(view, method)


class ASGIApp:
    """An ASGI 3 application serving a Flask app on the server's event loop.

    ``ASGIApp(app)`` installs :class:`flaskasync.FlaskAsync` on app if it is
    not installed.  threads: size of the pool running sync views (and every
    request that is not for an async view).

    Async views run in a greenlet on the loop thread and hold no thread
    while they wait; sync views run in the pool.  The server's loop must be
    a :class:`flaskasync.Loop` (``uvicorn --loop flaskasync:new_event_loop``);
    it is the process's app loop while the server runs.
    """

    def __init__(self, app: flask.Flask, *, threads: int = DEFAULT_THREADS) -> None:
        if not isinstance(app, flask.Flask):
            raise TypeError(f"ASGIApp() expects a flask.Flask app, got {app!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"ASGIApp(): threads must be an int >= 1, got {threads!r}")
        if "flaskasync" not in app.extensions:
            FlaskAsync(app)
        self.app = app
        self.threads = threads
        self._pool: Optional[_Pool] = None
        self._loop = None
        self._adopted = False
        self._route_table: Optional[_Routes] = None

    def __repr__(self) -> str:
        return f"<flaskasync.ASGIApp for {self.app!r}>"

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self._loop is None:
                self._start(asyncio.get_running_loop())
            return await self._http(scope, receive, send)
        if kind == "lifespan":
            return await self._lifespan(receive, send)
        if kind == "websocket":
            # Flask has no websockets: refuse the handshake (403).
            msg = await receive()
            if msg.get("type") == "websocket.connect":
                await send({"type": "websocket.close", "code": 1000})
            return None
        raise ValueError(f"flaskasync.ASGIApp: unsupported ASGI scope type {kind!r}")

    # ------------------------------------------------------------ lifespan

    def _start(self, loop) -> None:
        """Make the server's loop the app loop (at lifespan startup, or at
        the first request of a server without lifespan)."""
        if not isinstance(loop, _core.CLoop):
            raise RuntimeError(
                "flaskasync.ASGIApp must run on flaskasync's event loop: "
                "uvicorn --loop flaskasync:new_event_loop (python -m flaskasync serve "
                f"and flaskasync.GunicornWorker set it up), not on {type(loop).__name__}"
            )
        _core._adopt_app_loop(loop, _bridge.reenter)
        self._adopted = True
        if asyncio.coroutines._is_debug_mode():
            # PYTHONASYNCIODEBUG / -X dev, which uvicorn's runner overrides
            # with debug=False on Python 3.11.
            loop.set_debug(True)
        self._loop = loop
        self._pool = _Pool(loop, self.threads)
        _tasks.app_loop()  # install the task supervision on it

    async def _stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            await _tasks.drain(_tasks._grace_period())
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                await loop.run_in_executor(None, pool.shutdown)
            if self._adopted:
                _core._release_app_loop(loop)
                self._adopted = False
            self._loop = None

    async def _lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            kind = msg["type"]
            if kind == "lifespan.startup":
                try:
                    self._start(asyncio.get_running_loop())
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                try:
                    await self._stop()
                except Exception as exc:
                    logger.exception("flaskasync: error at lifespan shutdown")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------ http

    def _routes(self) -> "_Routes":
        routes = self._route_table
        if routes is None or routes.n_rules != _n_rules(self.app):
            routes = self._route_table = _Routes(self.app)
        return routes

    def _is_async_request(self, environ: dict) -> bool:
        """Whether the request's matched view is async (decided before
        Flask's pipeline runs; a request matching no view is sync)."""
        routes = self._routes()
        if routes.all_async is not None:
            return routes.all_async
        method = environ["REQUEST_METHOD"]
        decision = routes.static.get((method, environ["PATH_INFO"]))
        if decision is not None:
            return decision
        return routes.match(environ, method)

    async def _http(self, scope, receive, send) -> None:
        environ, has_body, chunked = _asgi_environ(scope, _EMPTY, sys.stderr, _HEADER_KEYS)
        state = _RequestState(self._loop, receive, not has_body)
        if chunked:
            # uvicorn removes the chunked framing; the body ends at EOF.
            environ["wsgi.input_terminated"] = True
        if self._is_async_request(environ):
            if has_body:
                # Sync code reading the body from the view's coroutine (on the
                # loop, not in the greenlet) could not wait for it: read it
                # first, into memory or a temporary file.
                try:
                    environ["wsgi.input"] = await self._read_body(environ, state)
                except ClientDisconnected:
                    return  # gone before the body arrived: nobody to answer
            await self._serve_async(environ, send, state)
        else:
            if has_body:
                environ["wsgi.input"] = _Input(receive, state)
            await self._serve_sync(environ, send, state)

    async def _read_body(self, environ: dict, state: "_RequestState"):
        """The whole body of an async view's request, read before the view
        runs.  Not read at all when Content-Length exceeds
        MAX_CONTENT_LENGTH (Flask answers 413 from the header alone); a
        chunked body is read up to one byte past the limit, enough for
        Flask to answer 413."""
        limit = self.app.config.get("MAX_CONTENT_LENGTH")
        length = environ.get("CONTENT_LENGTH", "")
        if limit is not None and length.isdigit() and int(length) > limit:
            return _EMPTY
        receive = state.receive
        first: Optional[bytes] = None
        spool = None
        total = 0
        more = True
        while more:
            msg = await receive()
            kind = msg.get("type")
            if kind == "http.disconnect":
                state.disconnected = True
                raise ClientDisconnected("the client disconnected while sending the request body")
            if kind != "http.request":
                continue
            more = msg.get("more_body", False)
            data = msg.get("body", b"")
            if not data:
                continue
            total += len(data)
            if spool is None:
                if first is None and not more:
                    first = data  # the usual case: the whole body at once
                    break
                spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MAX)
            spool.write(data)
            if limit is not None and total > limit:
                break  # enough for a 413; the rest is never read
        if not more:
            state.body_complete = True
        if spool is not None:
            spool.seek(0)
            return spool
        return io.BytesIO(first or b"")

    async def _serve_async(self, environ, send, state: _RequestState) -> None:
        ctx = contextvars.copy_context()
        task = _Task(
            _bridge.run_in_greenlet(_serve_wsgi, ctx, self.app.wsgi_app, environ, send, state),
            loop=self._loop,
            context=ctx,
        )
        state.task = task
        state.watch_soon()
        try:
            final = await task
        except _CancelledError:
            if state.disconnected and not _current_cancelling():
                return  # the client went away: nobody to answer
            raise
        except ClientDisconnected:
            return
        finally:
            state.finish()
        for msg in final:
            await send(msg)

    async def _serve_sync(self, environ, send, state: _RequestState) -> None:
        state.watch_soon()
        try:
            final = await self._pool.submit(_serve_wsgi, self.app.wsgi_app, environ, send, state)
        except ClientDisconnected:
            return
        finally:
            state.finish()
        for msg in final:
            await send(msg)


def _current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


async def _watch_disconnect(state: _RequestState) -> None:
    receive = state.receive
    while not state.done:
        msg = await receive()
        if msg.get("type") == "http.disconnect":
            if not state.done:
                state.disconnected = True
                task = state.task
                if task is not None and not task.done():
                    task.cancel()
            return
