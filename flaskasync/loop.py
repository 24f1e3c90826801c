"""flaskasync.Loop: the asyncio event loop whose core is written in C.

The hot paths (scheduling, the ready queue, timers, running, futures and
tasks, fd watching) live in :class:`flaskasync._core.CLoop`.  This module adds
the parts of :class:`asyncio.AbstractEventLoop` that are rare and
Python-shaped: the exception handler, the default executor, async generator
finalization and Unix signals.  DNS (getaddrinfo, getnameinfo), the sock_*
methods and the transports are in C; the per-connection set-up of streams,
servers, TLS, pipes and subprocesses is in ._net, UDP in ._udp.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import coroutines

from . import _core
from ._net import NetworkMixin
from ._udp import DatagramMixin

__all__ = ["Loop", "new_event_loop", "EventLoopPolicy"]

logger = logging.getLogger("asyncio")

# Stack depth recorded for coroutine origins in debug mode, as asyncio does.
_DEBUG_STACK_DEPTH = 10


def _sighandler_noop(signum, frame):
    """Signal handler installed for loop signals: the wakeup fd does the work."""


def _debug_mode() -> bool:
    return sys.flags.dev_mode or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    )


class Loop(NetworkMixin, DatagramMixin, _core.CLoop, asyncio.AbstractEventLoop):
    """An asyncio event loop implemented in C on libuv.

    Use it like any asyncio loop::

        with asyncio.Runner(loop_factory=flaskasync.new_event_loop) as runner:
            runner.run(main())

    Behaviour follows asyncio's documentation, plus two guarantees asyncio
    leaves open: timers with the same deadline run in the order they were
    scheduled, and a timer never runs before its deadline.
    """

    def __init__(self) -> None:
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens: weakref.WeakSet = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._signal_handlers: dict = {}
        self._child_pidfds: set = set()  # pidfds of subprocesses being watched
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        #: Callbacks slower than this (seconds) are logged in debug mode.
        self.slow_callback_duration = 0.1
        self.set_debug(_debug_mode())

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    # ------------------------------------------------------------ debug

    def set_debug(self, enabled: bool) -> None:
        """Enable or disable debug mode (slow callback warnings, tracebacks)."""
        self._set_debug_flag(enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, bool(enabled))

    def _set_coroutine_origin_tracking(self, enabled: bool) -> None:
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    def _check_debug_callback(self, callback, method: str) -> None:
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")

    def _log_slow_callback(self, handle, duration: float) -> None:
        logger.warning("Executing %r took %.3f seconds", handle, duration)

    def run_forever(self) -> None:
        """Run until stop() is called."""
        if self.get_debug():
            self._set_coroutine_origin_tracking(True)
        try:
            super().run_forever()
        finally:
            self._set_coroutine_origin_tracking(False)

    # ------------------------------------------------------------ close

    def close(self) -> None:
        """Close the loop: drop pending callbacks, release libuv resources,
        shut the default executor down without waiting.  Idempotent."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        self._remove_all_signal_handlers()
        self._close_child_watchers()
        self._close()
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # ------------------------------------------------- exception handling

    def get_exception_handler(self):
        """Return the current exception handler, or None for the default."""
        return self._exception_handler

    def set_exception_handler(self, handler) -> None:
        """Set handler(loop, context) as the exception handler (None: default)."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context: dict) -> None:
        """Log the context through the 'asyncio' logger, as asyncio does."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info = (type(exception), exception, exception.__traceback__) if exception else False
        lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key in ("source_traceback", "handle_traceback"):
                created = "".join(traceback.format_list(value)).rstrip()
                label = "Object" if key == "source_traceback" else "Handle"
                value = f"{label} created at (most recent call last):\n{created}"
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict) -> None:
        """Pass context to the exception handler; never raises except for
        KeyboardInterrupt and SystemExit."""
        handler = self._exception_handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an "
                    "unexpected error in custom exception handler",
                    exc_info=True,
                )

    # ---------------------------------------------------------- executor

    def run_in_executor(self, executor, func, *args):
        """Run func(*args) in executor (default: a ThreadPoolExecutor) and
        return an asyncio.Future for its result."""
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        if self.get_debug():
            self._check_debug_callback(func, "run_in_executor")
        if not callable(func):
            raise TypeError(f"a callable object was expected by run_in_executor(), got {func!r}")
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="flaskasync")
                self._default_executor = executor
        return asyncio.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor) -> None:
        """Use executor (a ThreadPoolExecutor) for run_in_executor(None, ...)."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None) -> None:
        """Wait for the default executor's threads to finish and shut it down."""
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        future = self.create_future()

        def shutdown():
            try:
                executor.shutdown(wait=True)
            except Exception as exc:  # reported to the awaiting coroutine
                if not self.is_closed():
                    self.call_soon_threadsafe(_set_exception_unless_done, future, exc)
            else:
                if not self.is_closed():
                    self.call_soon_threadsafe(_set_result_unless_done, future, None)

        thread = threading.Thread(target=shutdown, name="flaskasync-executor-shutdown")
        thread.start()
        try:
            if timeout is None:
                await future
            else:
                try:
                    await asyncio.wait_for(asyncio.shield(future), timeout)
                except asyncio.TimeoutError:
                    warnings.warn(
                        "The executor did not finish joining its threads within "
                        f"{timeout} seconds.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    executor.shutdown(wait=False)
        finally:
            thread.join(0 if timeout is not None and not future.done() else None)

    # ------------------------------------------------- async generators

    def _asyncgen_firstiter_hook(self, agen) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                "loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        """Close every async generator still open on this loop."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await asyncio.gather(*[ag.aclose() for ag in closing], return_exceptions=True)
        for result, agen in zip(results, closing):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": "an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # ------------------------------------------------------------ signals

    def _dispatch_signals(self, data: bytes) -> None:
        # Called by the C core with the signal numbers read from its pipe.
        for signum in data:
            handle = self._signal_handlers.get(signum)
            if handle is not None and not handle.cancelled():
                self.call_soon(handle._run)

    @staticmethod
    def _check_signal(sig) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig, callback, *args) -> None:
        """Call callback(*args) on the loop when signal sig arrives (main thread only)."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        try:
            signal.set_wakeup_fd(self._signal_fd(), warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        self._signal_handlers[sig] = asyncio.Handle(callback, args, self, None)
        self._set_signal_dispatch(True)
        try:
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._set_signal_dispatch(False)
                try:
                    signal.set_wakeup_fd(-1)
                except (ValueError, OSError) as nexc:
                    logger.info("set_wakeup_fd(-1) failed: %s", nexc)
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise

    def remove_signal_handler(self, sig) -> bool:
        """Remove the handler for sig; return True if one was installed."""
        self._check_signal(sig)
        try:
            handle = self._signal_handlers.pop(sig)
        except KeyError:
            return False
        handle.cancel()
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise
        if not self._signal_handlers:
            self._set_signal_dispatch(False)
            try:
                signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                logger.info("set_wakeup_fd(-1) failed: %s", exc)
        return True

    def _remove_all_signal_handlers(self) -> None:
        if self._signal_handlers and not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                try:
                    self.remove_signal_handler(sig)
                except (RuntimeError, ValueError):
                    self._signal_handlers.pop(sig, None)
        self._signal_handlers.clear()
        self._set_signal_dispatch(False)


def _set_result_unless_done(fut, value):
    if not fut.done():
        fut.set_result(value)


def _set_exception_unless_done(fut, exc):
    if not fut.done():
        fut.set_exception(exc)


_core._set_loop_class(Loop)


def new_event_loop() -> Loop:
    """Return a new flaskasync.Loop (for asyncio.Runner(loop_factory=...))."""
    return Loop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An asyncio policy whose new_event_loop() returns flaskasync.Loop."""

    def new_event_loop(self):
        return Loop()
