"""flaskasync.Loop: the asyncio event loop whose core is written in C.

The hot paths (scheduling, the ready queue, timers, running, futures and
tasks, fd watching, DNS, the ``sock_*`` methods and the transports) live in
:class:`flaskasync._core.CLoop`.

Everything else comes from the running interpreter's own asyncio:
:class:`Loop` derives from ``asyncio.SelectorEventLoop`` behind the C core,
so the exception handler, the default executor, async generator
finalization, signal handlers, ``create_connection`` / ``create_server`` /
``Server``, Unix sockets, TLS, ``start_tls``, ``sendfile``, pipes,
``create_datagram_endpoint`` and subprocesses behave as that Python
version's asyncio does, new arguments and changed messages included.  The
selector loop reaches its transports and fds through a few hooks
(``_make_socket_transport``, ``_add_reader``, ...): the C core answers
them (see ._net).  The selector loop's own machinery (its selector, its
self-pipe, its Python ready queue) is never used; the internals of it that
are left raise NotImplementedError naming themselves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import warnings
from asyncio import base_events

from . import _core
from ._net import TransportHooks

__all__ = ["Loop", "new_event_loop", "EventLoopPolicy"]

logger = logging.getLogger("asyncio")


class _InitProbe:
    """Receives what the interpreter's BaseEventLoop.__init__ sets."""

    def set_debug(self, enabled):
        self._debug = enabled


# State of BaseEventLoop.__init__ that the C core keeps instead (as C
# fields, or not at all: there is no Python ready queue or timer list).
_C_OWNED = frozenset({
    "_closed", "_stopping", "_thread_id", "_debug", "_task_factory", "_current_handle",
    "_ready", "_scheduled", "_timer_cancelled_count", "_clock_resolution", "_internal_fds",
})


def _asyncio_state() -> dict:
    """The attributes the running interpreter's BaseEventLoop.__init__ sets
    (executor, exception handler, async generator bookkeeping, ...), fresh
    for one loop: a new Python version's additions come along."""
    probe = _InitProbe()
    base_events.BaseEventLoop.__init__(probe)
    return vars(probe)


class _SignalPipe:
    """What asyncio's add_signal_handler takes for the loop's self-pipe
    socket: the write end of the C core's signal pipe, whose bytes the core
    hands to ``_process_self_data``."""

    __slots__ = ("_loop",)

    def __init__(self, loop):
        self._loop = loop

    def fileno(self) -> int:
        return self._loop._signal_fd()


class Loop(TransportHooks, _core.CLoop, asyncio.SelectorEventLoop):
    """An asyncio event loop implemented in C on libuv.

    Use it like any asyncio loop::

        asyncio.run(main(), loop_factory=flaskasync.new_event_loop)   # 3.12+

        with asyncio.Runner(loop_factory=flaskasync.new_event_loop) as runner:
            runner.run(main())

    Behaviour follows the running Python's asyncio, plus two guarantees
    asyncio leaves open: timers with the same deadline run in the order they
    were scheduled, and a timer never runs before its deadline.
    """

    def __init__(self) -> None:
        state = _asyncio_state()
        debug = state.pop("_debug", False)
        for name in _C_OWNED:
            state.pop(name, None)
        self.__dict__.update(state)
        # _UnixSelectorEventLoop's own state (signals; Unix server sockets
        # to unlink on close, 3.13+).
        self._signal_handlers = {}
        self._unix_server_sockets = {}
        self._child_pidfds = {}  # pidfd -> (pid, transport) of subprocesses being watched
        self.set_debug(debug)

    # ------------------------------------------------------------ running

    def run_forever(self) -> None:
        """Run until stop() is called."""
        self._set_coroutine_origin_tracking(self._debug)
        try:
            super().run_forever()
        finally:
            self._set_coroutine_origin_tracking(False)

    def _log_slow_callback(self, handle, duration: float) -> None:
        # Called by the C core in debug mode, as BaseEventLoop._run_once logs.
        logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle),
                       duration)

    # ------------------------------------------------------------ close

    def close(self) -> None:
        """Close the loop: drop pending callbacks, release libuv resources,
        shut the default executor down without waiting.  Idempotent."""
        # BaseEventLoop.close and _UnixSelectorEventLoop.close, with the C
        # core in place of the Python queues and the selector.
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self._debug:
            logger.debug("Close %r", self)
        # Signal handlers first (as _UnixSelectorEventLoop.close does, but
        # before the signal pipe is closed, so that the wakeup fd never
        # points at a closed pipe).
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            self._signal_handlers.clear()
            self._set_signal_dispatch(False)
        self._close_child_watchers()
        self._close()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # ------------------------------------------------------------ signals
    #
    # asyncio's own add_signal_handler/remove_signal_handler, with the C
    # core's signal pipe as the self-pipe: the core reads the signal numbers
    # and passes them to _process_self_data, which schedules the handlers.

    @property
    def _csock(self):
        return _SignalPipe(self)

    def add_signal_handler(self, sig, callback, *args) -> None:
        """Call callback(*args) on the loop when signal sig arrives (main thread only)."""
        super().add_signal_handler(sig, callback, *args)
        self._set_signal_dispatch(True)

    def remove_signal_handler(self, sig) -> bool:
        """Remove the handler for sig; return True if one was installed."""
        try:
            return super().remove_signal_handler(sig)
        finally:
            if not self._signal_handlers:
                self._set_signal_dispatch(False)

    def _add_callback_signalsafe(self, handle) -> None:
        # A signal handler's asyncio.Handle, from _handle_signal.
        self.call_soon(handle._run)


def _not_implemented(owner: str, name: str):
    def method(self, *args, **kwargs):
        raise NotImplementedError(
            f"flaskasync.Loop does not implement {owner}.{name}: it is an internal of "
            "asyncio's selector event loop, whose machinery the C core replaces"
        )

    method.__name__ = name
    method.__qualname__ = f"Loop.{name}"
    return method


#: Internals of asyncio's selector loop that work on its selector, its
#: self-pipe or its Python queues.  Inherited, they would fail obscurely
#: (AttributeError on a missing _selector or _ready); they raise
#: NotImplementedError naming themselves instead.
SELECTOR_INTERNALS = (
    "_run_once", "_add_callback", "_call_soon", "_timer_handle_cancelled", "_process_events",
    "_make_self_pipe", "_close_self_pipe", "_read_from_self", "_write_to_self",
    "_run_forever_setup", "_run_forever_cleanup", "_sock_recv", "_sock_recv_into",
    "_sock_recvfrom", "_sock_recvfrom_into", "_sock_sendall", "_sock_sendto",
    "_sock_connect", "_sock_connect_cb", "_sock_accept", "_sock_read_done",
    "_sock_write_done", "_sock_sendfile_native", "_sock_sendfile_native_impl",
    "_sock_add_cancellation_callback", "_sock_sendfile_update_filepos",
    "_sock_sendfile_fallback", "_child_watcher_callback", "_getaddrinfo_debug",
)

for _name in SELECTOR_INTERNALS:
    for _cls in Loop.__mro__[1:]:
        if _name in vars(_cls):
            if _cls.__module__.startswith("asyncio"):
                setattr(Loop, _name, _not_implemented(_cls.__name__, _name))
            break
del _name, _cls

_core._set_loop_class(Loop)


def new_event_loop() -> Loop:
    """Return a new flaskasync.Loop (for ``asyncio.run(..., loop_factory=)``
    and ``asyncio.Runner(loop_factory=...)``)."""
    return Loop()


def _make_policy_class():
    with warnings.catch_warnings():
        # Deprecated from Python 3.14 on; the warning is flaskasync's own.
        warnings.simplefilter("ignore", DeprecationWarning)
        base = asyncio.DefaultEventLoopPolicy

    class EventLoopPolicy(base):
        """An asyncio policy whose new_event_loop() returns flaskasync.Loop."""

        def new_event_loop(self):
            return Loop()

    EventLoopPolicy.__module__ = __name__
    return EventLoopPolicy


_policy_class = None


def __getattr__(name):
    # asyncio's event loop policies are deprecated from Python 3.14 on: the
    # policy class is built only when somebody asks for it, so that
    # importing flaskasync never touches a deprecated name.
    if name == "EventLoopPolicy":
        global _policy_class
        if sys.version_info >= (3, 14):
            warnings.warn(
                "flaskasync.EventLoopPolicy is deprecated, as asyncio's event loop "
                "policies are from Python 3.14 on; use asyncio.run(main(), "
                "loop_factory=flaskasync.new_event_loop) instead",
                DeprecationWarning,
                stacklevel=2,
            )
        if _policy_class is None:
            _policy_class = _make_policy_class()
        return _policy_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
