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
- Either way the request body streams in from ASGI ``receive`` as the
  application reads it and the response streams out to ``send``: a pool
  thread waits with ``flaskasync.run()`` (submitting to the loop), a
  greenlet by switching to the loop's side.  Code running on the loop (an
  async view's coroutine) cannot wait: the rest of an async view's
  request body is read before the request's first coroutine runs (see
  ``_Input.before_coroutine``), after its sync hooks.
- A request is watched for its client going away from WATCH_DELAY on
  (``_RequestState``, ``_pump``), whether its body was read or not.

The server's loop is the process's app loop from lifespan startup to
lifespan shutdown (``flaskasync.get_loop()`` returns it, background tasks
and ``spawn`` run on it).  At lifespan shutdown background tasks get
``FLASKASYNC_SHUTDOWN_TIMEOUT`` seconds, then are cancelled.
"""

from __future__ import annotations

import asyncio
import collections
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
from werkzeug.exceptions import ClientDisconnected as _BodyCutOff
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from . import _bridge, _core, _tasks
from ._flask import FlaskAsync
from ._core import _asgi_environ, _asgi_start, run

__all__ = ["ASGIApp"]

logger = logging.getLogger("flaskasync")

_Task = asyncio.Task
_CancelledError = asyncio.CancelledError
_get_running_loop = asyncio._get_running_loop
_has_request_context = flask.has_request_context

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


def _cut_off() -> _BodyCutOff:
    return _BodyCutOff("the client disconnected before the end of the request body")


_BODY_ON_LOOP = (
    "flaskasync ASGI mode: the request body cannot be read here: code running on the event "
    "loop (a coroutine) cannot wait for the client, and only the body up to the request's "
    "max_content_length was read before the request's first coroutine ran. Set "
    "request.max_content_length in a sync before_request hook, or read the body in sync code."
)
_SYNC_BODY_ON_LOOP = (
    "flaskasync ASGI mode: the body of a request for a sync view cannot be read from a "
    "coroutine (an async hook): code running on the event loop cannot wait for the client. "
    "Read it in sync code (the view, a sync hook)."
)


class _Input(io.RawIOBase):
    """``wsgi.input``: the request body, read from the client as the
    application reads it (never ahead of it, so that a 413 or a hook
    refusing the request does not make the server read it all).

    A read waits for the next chunk: from a pool thread by ``run()``, from a
    request's greenlet by switching to the loop's side.  Code running on
    the loop (an async view's coroutine) cannot wait: for an async view's
    request, :meth:`before_coroutine` reads the rest of the body (up to the
    request's ``max_content_length`` + 1 bytes) into memory or a temporary
    file before each coroutine the greenlet hands over.

    The body ends only where the client ended it: a client that goes away
    first gives werkzeug's ``ClientDisconnected`` (400, as a WSGI server's
    input gives on a short read), never an early EOF."""

    def __init__(self, state: "_RequestState", length: Optional[int], app) -> None:
        super().__init__()
        self._state = state
        self._length = length  # Content-Length; None for a chunked body
        self._app = app
        self._buf = b""
        self._pos = 0
        self._spool: Any = None  # read ahead of _buf by before_coroutine
        self._eof = False
        self._received = 0

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()
        super().close()

    def _next(self) -> bytes:
        """The next chunk from the client; b"" at the end of the body."""
        state = self._state
        if _get_running_loop() is not None:
            # A coroutine on the loop: it cannot wait.
            if state.disconnected:
                raise _cut_off()
            raise RuntimeError(_SYNC_BODY_ON_LOOP if state.task is None else _BODY_ON_LOOP)
        if _bridge.in_greenlet():
            data = _bridge.await_only(_next_chunk(state))
        else:
            coro = _next_chunk(state)
            try:
                data = run(coro)
            except RuntimeError:
                coro.close()  # run() refused it
                raise
        if data:
            self._received += len(data)
        else:
            self._eof = True
        return data

    def _fill(self) -> bool:
        """Get the next chunk into _buf; False at the end of the body."""
        spool = self._spool
        if spool is not None:
            data = spool.read(_SPOOL_READ)
            if data:
                self._buf = data
                self._pos = 0
                return True
            self._spool = None
            spool.close()
        while not self._eof:
            data = self._next()
            if data:
                self._buf = data
                self._pos = 0
                return True
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

    def _keep(self, data: bytes) -> None:
        """Keep a chunk read ahead, after what is not read yet."""
        spool = self._spool
        if spool is None:
            if self._pos >= len(self._buf):
                self._buf = data
                self._pos = 0
                return
            spool = self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MAX)
            spool.write(data)
            spool.seek(0)
        else:
            pos = spool.tell()
            spool.seek(0, 2)
            spool.write(data)
            spool.seek(pos)

    def before_coroutine(self) -> None:
        """In an async view's greenlet, before it hands a coroutine (a hook,
        the view) to the loop, where code cannot wait for the client: read
        the rest of the body, up to the request's max_content_length + 1
        bytes (a chunked body) or not at all (a Content-Length above it:
        werkzeug answers 413 from the header).  Sync code before (sync
        hooks) can refuse the request without the body being read."""
        if self._eof:
            _bridge.set_on_handover(None)
            return
        if _has_request_context():
            limit = flask.request.max_content_length
        else:
            limit = self._app.config.get("MAX_CONTENT_LENGTH")
        length = self._length
        if length is not None:
            if limit is not None and length > limit:
                return  # asked again before the next coroutine: the limit may change
            target = None
        else:
            target = None if limit is None else limit + 1
        try:
            while not self._eof and (target is None or self._received < target):
                data = self._next()
                if data:
                    self._keep(data)
        except _BodyCutOff:
            return  # reading on raises it again; the request is cancelled
        except _CancelledError:
            # The request was cancelled (its client left) while this waited:
            # the coroutine is handed over all the same, and cancelled at its
            # first await, as it would have been had it been running.
            if self._state.task is not None:
                self._state.task.cancel()
            return
        if self._eof:
            _bridge.set_on_handover(None)


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


def _body_kind(scope: dict):
    """(has a body, is chunked) from the request headers."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"0", b""), False
        if name == b"transfer-encoding":
            return True, True
    return False, False


def _content_length(environ: dict) -> Optional[int]:
    try:
        length = int(environ.get("CONTENT_LENGTH", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


_EMPTY = _Empty()

#: Bodies read ahead for an async view's coroutines larger than this go
#: to a temporary file.
_SPOOL_MAX = 1 << 20
_SPOOL_READ = 1 << 16

#: Bytes of a request body the receive pump reads ahead of the application.
READ_AHEAD = 1 << 16


class _Body:
    """The request body's side of a request's state (on the loop)."""

    __slots__ = ("chunks", "buffered", "eof", "reading", "want_pump", "waiter", "space")

    def __init__(self) -> None:
        self.chunks: collections.deque = collections.deque()
        self.buffered = 0  # bytes in chunks
        self.eof = False  # the client sent the end of the body
        self.reading = False  # a reader awaits receive() itself
        self.want_pump = False  # start the pump when that read returns
        self.waiter: Optional[asyncio.Future] = None  # a reader waiting for the pump
        self.space: Optional[asyncio.Future] = None  # the pump waiting for the reader

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            _set_result(waiter, None)


class _RequestState:
    """What the serving side knows about one request (used on the loop).

    ``receive`` has one caller at a time.  Until the request is watched,
    the application's reads call it (so a quick request never pays for a
    task); from WATCH_DELAY on, the pump does, for the whole request: it
    reads the body ahead of the application (at most READ_AHEAD bytes) and
    notices ``http.disconnect`` whenever it comes, cancelling an async
    view and failing the reads and sends of a sync one."""

    __slots__ = ("disconnected", "done", "task", "watcher", "receive", "loop", "timer", "body")

    def __init__(self, loop, receive, body: Optional[_Body]) -> None:
        self.loop = loop
        self.disconnected = False
        self.done = False
        self.task: Optional[asyncio.Task] = None
        self.watcher: Optional[asyncio.Task] = None  # the pump
        self.receive = receive
        self.timer: Optional[asyncio.TimerHandle] = None
        self.body = body  # None: no request body

    def watch(self) -> None:
        """Start the pump (at WATCH_DELAY; or when the application's own
        receive() in flight then returns)."""
        self.timer = None
        if self.watcher is None and not self.done:
            body = self.body
            if body is not None and body.reading:
                body.want_pump = True
            else:
                self.watcher = _Task(_pump(self), loop=self.loop)

    def watch_soon(self) -> None:
        """Watch for the client going away if the request is still running
        in WATCH_DELAY seconds.  Most requests are done by then and never
        pay for a watcher task; a disconnect is noticed that much later."""
        self.timer = self.loop.call_later(WATCH_DELAY, self.watch)

    def gone(self) -> None:
        """The client went away (on the loop)."""
        if self.done:
            return
        self.disconnected = True
        if self.body is not None:
            self.body.wake()
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    def finish(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        watcher = self.watcher
        if watcher is not None:
            # Dropped, not only cancelled: the cancelled pump keeps its
            # CancelledError, whose traceback holds the pump's frame and so
            # this state; keeping the task here would make that a cycle
            # only the cyclic GC frees (a full collection, by then).
            self.watcher = None
            if not watcher.done():
                watcher.cancel()
        if self.body is not None:
            self.body.wake()  # a read from a thread the app left behind


async def _pump(state: _RequestState) -> None:
    """The request's one caller of receive() once it is watched: body
    chunks go to state.body (read ahead up to READ_AHEAD bytes), and an
    http.disconnect at any time ends the request (state.gone)."""
    receive = state.receive
    body = state.body
    while not state.done:
        if body is not None and not body.eof and body.buffered >= READ_AHEAD:
            space = body.space = state.loop.create_future()
            try:
                await space
            finally:
                body.space = None
            continue
        msg = await receive()
        kind = msg.get("type")
        if kind == "http.disconnect":
            state.gone()
            return
        if kind == "http.request" and body is not None and not body.eof:
            data = msg.get("body", b"")
            if data:
                body.chunks.append(data)
                body.buffered += len(data)
            if not msg.get("more_body", False):
                body.eof = True
            body.wake()


async def _next_chunk(state: _RequestState) -> bytes:
    """On the loop: the request body's next chunk, b"" at its end; werkzeug's
    ClientDisconnected if the client went away before it."""
    body = state.body
    while True:
        chunks = body.chunks
        if chunks:
            data = chunks.popleft()
            body.buffered -= len(data)
            space = body.space
            if space is not None and body.buffered < READ_AHEAD:
                body.space = None
                _set_result(space, None)
            return data
        if body.eof:
            return b""
        if state.disconnected or state.done:
            raise _cut_off()
        pump = state.watcher
        if pump is None or pump.done():
            return await _read_direct(state)
        waiter = body.waiter = state.loop.create_future()
        try:
            await waiter
        finally:
            if body.waiter is waiter:
                body.waiter = None


async def _read_direct(state: _RequestState) -> bytes:
    """The next chunk, by calling receive() (no pump running)."""
    body = state.body
    body.reading = True
    try:
        while True:
            msg = await state.receive()
            kind = msg.get("type")
            if kind == "http.request":
                more = msg.get("more_body", False)
                data = msg.get("body", b"")
                if not more:
                    body.eof = True
                if data or not more:
                    return data
            elif kind == "http.disconnect":
                state.gone()
                raise _cut_off()
    finally:
        body.reading = False
        if body.want_pump:
            body.want_pump = False
            state.watch()


# --------------------------------------------------------------- response


async def _send_all(send, messages) -> None:
    for msg in messages:
        await send(msg)


def _serve_wsgi(wsgi_app, environ: dict, send, state: _RequestState):
    """Run the WSGI app (in a pool thread or a request's greenlet).

    Messages are sent as the body is produced, except the last ones, which
    are returned for the caller to send on the loop: a response whose body
    is one chunk (most) costs no extra trip to the loop.  As a WSGI server
    does, the body iterable is run to its end (code after a generator's
    last yield runs) even past a Content-Length, whose extra bytes are not
    sent, then closed."""
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
            # The whole body in one chunk: the rest of the iterable is run
            # (a buffered response's is empty) and discarded.
            for _ in it:
                if state.disconnected:
                    raise ClientDisconnected("the client disconnected")
            return [start, {"type": "http.response.body", "body": chunk[:length],
                            "more_body": False}]
        # A streamed body: each chunk is sent as it is produced.
        state_started[0] = True
        _send_sync(send, state, [start, {"type": "http.response.body", "body": chunk,
                                         "more_body": True}])
        if length is None:
            for chunk in it:
                if chunk:
                    _send_sync(send, state, [{"type": "http.response.body", "body": chunk,
                                              "more_body": True}])
        else:
            left = length - len(chunk)
            for chunk in it:
                if left > 0:
                    if chunk:
                        chunk = chunk[:left]
                        left -= len(chunk)
                        _send_sync(send, state, [{"type": "http.response.body", "body": chunk,
                                                  "more_body": True}])
                elif state.disconnected:
                    raise ClientDisconnected("the client disconnected")
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
    """Send from a pool thread or a request's greenlet (state.task set)."""
    if state.disconnected:
        raise ClientDisconnected("the client disconnected")
    if state.task is not None:
        _bridge.await_only(_send_all(send, messages))
    else:
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
        if has_body:
            state = _RequestState(self._loop, receive, _Body())
            body = environ["wsgi.input"] = _Input(
                state, None if chunked else _content_length(environ), self.app)
            if chunked:
                # uvicorn removes the chunked framing; the body ends at EOF.
                environ["wsgi.input_terminated"] = True
        else:
            state = _RequestState(self._loop, receive, None)
            body = None
        if body is None:
            if self._is_async_request(environ):
                await self._serve_async(environ, send, state, None)
            else:
                await self._serve_sync(environ, send, state)
            return
        try:
            if self._is_async_request(environ):
                await self._serve_async(environ, send, state, body.before_coroutine)
            else:
                await self._serve_sync(environ, send, state)
        finally:
            body.close()  # its temporary file, if it has one

    async def _serve_async(self, environ, send, state: _RequestState, on_handover) -> None:
        ctx = contextvars.copy_context()
        task = _Task(
            _bridge.run_in_greenlet(_serve_wsgi, ctx, self.app.wsgi_app, environ, send, state,
                                    on_handover=on_handover),
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
