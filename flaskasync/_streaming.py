"""WSGI streaming of async iterables: a response body a WSGI server iterates.

Nothing here imports Flask.  The Flask glue (``_flask``) wraps the async
iterable a view returns in an :class:`AsyncStream`; the WSGI server then
iterates it from its worker thread, one ``flaskasync.run`` per chunk.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, AsyncIterable, Optional

from . import _tasks
from ._core import run

_Task = asyncio.Task
_get_running_loop = asyncio._get_running_loop


async def _anext(aiterator):
    return await aiterator.__anext__()


class AsyncStream:
    """A WSGI response iterable over an async iterator.

    Each ``next()`` runs one step of the async iterator on the app loop,
    ``flaskasync.run(..., context=)`` always in the same
    :class:`contextvars.Context`, copied when the response was made: the
    request context is available, a context variable set in one step can be
    reset in another, and nothing is copied back to the server's thread.
    The tasks the iterator creates belong to the stream's task scope, which
    closes with the stream.  ``close()`` (called by every WSGI server when
    the response ends or the client goes away) closes the async generator
    with ``aclose()``.

    owner: whose logger reports errors (a Flask app, or None).
    where: what the stream answers ("GET /path"), for messages.
    cancel_leftovers: cancel the tasks the iterator left running when the
    stream closes, instead of letting them run on.
    """

    __slots__ = ("_owner", "_aiter", "_ctx", "_scope", "_where", "_name", "_finished",
                 "_closed")

    def __init__(self, owner: Any, aiterable: AsyncIterable, where: Optional[str] = None,
                 cancel_leftovers: bool = False) -> None:
        _tasks.app_loop()  # supervise the tasks the iterator creates
        self._owner = owner
        self._aiter = type(aiterable).__aiter__(aiterable)
        self._finished = False
        self._closed = False
        if where is None:
            where = repr(self._aiter)
        self._where = where
        self._name = f"flaskasync stream for {where}"
        scope = _tasks.Scope(owner, cancel_leftovers=cancel_leftovers,
                             what=f"the response stream for {where}")
        ctx = contextvars.copy_context()
        ctx.run(_tasks.scope_var.set, scope)
        scope.driver_context = ctx
        self._scope = scope
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
            return run(_anext(self._aiter), name=self._name, context=self._ctx)
        except StopAsyncIteration:
            self._finished = True
            raise StopIteration from None
        except BaseException as exc:
            self._finished = True
            if isinstance(exc, Exception):
                _tasks.logger_for(self._owner).error(
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
                if running is not _tasks.supervised_loop():
                    raise RuntimeError("close() called from a foreign event loop")
                # Called from async code on the app loop: close in a task.
                _tasks.track(_Task(_close(self), loop=running, context=self._ctx), self._owner)
            else:
                run(_close(self), name=self._name, context=self._ctx)
        except Exception as exc:
            _tasks.logger_for(self._owner).error(
                "flaskasync: exception while closing the streamed response to %s",
                self._where,
                exc_info=(type(exc), exc, exc.__traceback__),
            )


async def _close(stream: AsyncStream) -> None:
    try:
        aclose = getattr(stream._aiter, "aclose", None)
        if aclose is not None and not stream._finished:
            stream._finished = True
            await aclose()
    finally:
        stream._finished = True
        if stream._scope.cancel_leftovers:
            await stream._scope.cancel_children()
        else:
            stream._scope.close()
