"""Exception handlers, logging, debug mode, KeyboardInterrupt, bad input."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
import time

import pytest

import flaskasync


# Helpers are defined here, not imported from conftest: another conftest.py
# in a subdirectory would shadow the module name "conftest".
def run_once(loop):
    """Run exactly one iteration of the loop: the callbacks ready now."""
    loop.call_soon(loop.stop)
    loop.run_forever()


def run_briefly(loop, n=5):
    for _ in range(n):
        run_once(loop)


def _asyncio_errors(caplog):
    return [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


# ------------------------------------------------ exception in callback


def test_callback_exception_goes_to_handler_and_loop_continues(loop, errors):
    order = []
    exc = ValueError("in callback")

    def bad():
        order.append("bad")
        raise exc

    h = loop.call_soon(bad)
    loop.call_soon(order.append, "after")
    run_once(loop)
    assert order == ["bad", "after"]
    assert len(errors.contexts) == 1
    ctx = errors.contexts[0]
    assert ctx["message"].startswith("Exception in callback")
    assert "bad" in ctx["message"]
    assert ctx["exception"] is exc
    assert ctx["handle"] is h
    assert exc.__traceback__ is not None
    # The loop keeps working.
    assert loop.run_until_complete(asyncio.sleep(0, "still alive")) == "still alive"


def test_timer_callback_exception_goes_to_handler(loop, errors):
    def bad():
        raise KeyError("timer")

    loop.call_later(0.001, bad)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert len(errors.contexts) == 1
    assert isinstance(errors.contexts[0]["exception"], KeyError)


def test_callback_exception_default_handler_logs(loop, caplog):
    def bad():
        raise ValueError("logged")

    loop.call_soon(bad)
    run_once(loop)
    recs = _asyncio_errors(caplog)
    assert len(recs) == 1
    assert "Exception in callback" in recs[0].getMessage()
    assert recs[0].exc_info is not None
    assert isinstance(recs[0].exc_info[1], ValueError)


def test_exception_handler_get_set(loop):
    assert loop.get_exception_handler() is None

    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_exception_handler_not_callable(loop):
    with pytest.raises(TypeError):
        loop.set_exception_handler("not callable")
    assert loop.get_exception_handler() is None


def test_call_exception_handler_custom(loop):
    got = []
    loop.set_exception_handler(lambda lp, ctx: got.append((lp, ctx)))
    ctx = {"message": "hello", "extra": 1}
    loop.call_exception_handler(ctx)
    assert got == [(loop, ctx)]


def test_call_exception_handler_default_logs(loop, caplog):
    exc = RuntimeError("ctx exception")
    try:
        raise exc
    except RuntimeError:
        pass
    loop.call_exception_handler({"message": "custom message", "exception": exc, "foo": "bar"})
    recs = _asyncio_errors(caplog)
    assert len(recs) == 1
    text = recs[0].getMessage()
    assert "custom message" in text
    assert "foo: 'bar'" in text
    assert recs[0].exc_info[1] is exc


def test_default_exception_handler_direct(loop, caplog):
    loop.default_exception_handler({"message": "direct call"})
    recs = _asyncio_errors(caplog)
    assert len(recs) == 1
    assert "direct call" in recs[0].getMessage()
    assert not recs[0].exc_info


def test_default_exception_handler_without_message(loop, caplog):
    loop.default_exception_handler({"exception": ValueError("x")})
    recs = _asyncio_errors(caplog)
    assert len(recs) == 1
    assert "Unhandled exception in event loop" in recs[0].getMessage()


def test_custom_handler_can_delegate_to_default(loop, caplog):
    def handler(lp, ctx):
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    loop.call_soon(lambda: 1 / 0)
    run_once(loop)
    recs = _asyncio_errors(caplog)
    assert len(recs) == 1
    assert isinstance(recs[0].exc_info[1], ZeroDivisionError)


def test_failing_custom_exception_handler(loop, caplog):
    handler_exc = KeyError("handler broke")

    def handler(lp, ctx):
        raise handler_exc

    loop.set_exception_handler(handler)
    order = []
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(order.append, "after")
    run_once(loop)
    assert order == ["after"]
    recs = _asyncio_errors(caplog)
    assert len(recs) == 1
    assert "Unhandled error in exception handler" in recs[0].getMessage()
    assert recs[0].exc_info[1] is handler_exc
    # Direct calls do not raise either.
    loop.call_exception_handler({"message": "direct"})
    assert len(_asyncio_errors(caplog)) == 2


# -------------------------------------- destroyed / never-retrieved logs


def test_task_destroyed_but_pending_logged(loop, caplog):
    async def forever():
        await loop.create_future()

    task = loop.create_task(forever())
    run_once(loop)
    assert not task.done()
    del task
    gc.collect()
    msgs = [r.getMessage() for r in _asyncio_errors(caplog)]
    assert any("Task was destroyed but it is pending!" in m for m in msgs), msgs


def test_task_exception_never_retrieved_logged(loop, caplog):
    async def fail():
        raise ValueError("nobody looked")

    task = loop.create_task(fail())
    run_briefly(loop, 2)
    assert task.done()
    del task
    gc.collect()
    recs = _asyncio_errors(caplog)
    assert len(recs) == 1
    assert "Task exception was never retrieved" in recs[0].getMessage()
    assert isinstance(recs[0].exc_info[1], ValueError)


def test_future_exception_never_retrieved_logged(loop, caplog):
    fut = loop.create_future()
    fut.set_exception(KeyError("lost"))
    del fut
    gc.collect()
    msgs = [r.getMessage() for r in _asyncio_errors(caplog)]
    assert len(msgs) == 1
    assert "Future exception was never retrieved" in msgs[0]


def test_retrieved_exception_not_logged(loop, caplog):
    async def fail():
        raise ValueError

    task = loop.create_task(fail())
    with pytest.raises(ValueError):
        loop.run_until_complete(task)
    del task
    gc.collect()
    assert _asyncio_errors(caplog) == []


def test_run_until_complete_coroutine_exception_not_logged(loop, caplog):
    async def fail():
        raise ValueError

    with pytest.raises(ValueError):
        loop.run_until_complete(fail())
    gc.collect()
    assert _asyncio_errors(caplog) == []


# ----------------------------------------------------------- debug mode


def test_debug_default_follows_environment(loop):
    expected = sys.flags.dev_mode or bool(os.environ.get("PYTHONASYNCIODEBUG"))
    assert loop.get_debug() == expected


def test_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_warning_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_one():
        time.sleep(0.03)

    def fast_one():
        pass

    loop.call_soon(slow_one)
    loop.call_soon(fast_one)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_once(loop)
    warns = [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.levelno == logging.WARNING and "Executing" in r.getMessage()
    ]
    assert len(warns) == 1, warns
    assert "slow_one" in warns[0]
    assert "took" in warns[0]
    took = float(warns[0].rsplit("took", 1)[1].split()[0])
    assert took >= 0.03


def test_slow_task_step_logged_as_asyncio_logs_it(loop, caplog):
    # asyncio names a task's step by the task's repr ("Executing <Task
    # pending name='slow' coro=<...>> took 0.150 seconds"), through the
    # "asyncio" logger, with the format and the arguments kept apart.
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    async def slow():
        time.sleep(0.06)
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        task = loop.create_task(slow(), name="slow")
        loop.run_until_complete(task)
    records = [r for r in caplog.records if r.name == "asyncio" and "Executing" in r.msg]
    assert len(records) == 1, [r.getMessage() for r in records]
    rec = records[0]
    assert rec.levelno == logging.WARNING
    assert rec.msg == "Executing %s took %.3f seconds"
    what, took = rec.args
    assert isinstance(what, str) and isinstance(took, float)
    assert what.startswith("<Task pending name='slow' coro=<")
    assert 0.06 <= took < 5
    assert rec.getMessage() == f"Executing {what} took {took:.3f} seconds"


def test_no_slow_callback_warning_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.001
    loop.call_soon(time.sleep, 0.01)
    run_once(loop)
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


def test_debug_non_threadsafe_call_soon_from_other_thread(loop):
    loop.set_debug(True)
    fut = loop.create_future()

    def worker():
        try:
            loop.call_soon(lambda: None)
        except RuntimeError as e:
            loop.call_soon_threadsafe(fut.set_result, str(e))
        else:
            loop.call_soon_threadsafe(fut.set_result, None)

    loop.call_soon(lambda: threading.Thread(target=worker).start())
    loop.call_later(5, loop.stop)
    msg = loop.run_until_complete(fut)
    assert msg is not None and "Non-thread-safe operation" in msg


# --------------------------------------------- KeyboardInterrupt etc.


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_fatal_exception_in_callback_propagates(loop, errors, exc_type):
    fut = loop.create_future()

    def bad():
        raise exc_type()

    loop.call_soon(bad)
    loop.call_later(0.01, fut.set_result, "after")
    with pytest.raises(exc_type):
        loop.run_until_complete(fut)
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    assert errors.contexts == []  # not routed to the exception handler
    # The loop can run again afterwards.
    assert loop.run_until_complete(fut) == "after"


def test_keyboard_interrupt_in_coroutine_propagates(loop):
    async def main():
        await asyncio.sleep(0.001)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(main())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, 1)) == 1


def test_keyboard_interrupt_in_timer_propagates(loop):
    def bad():
        raise KeyboardInterrupt

    loop.call_later(0.001, bad)
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(asyncio.sleep(0.05))
    assert not loop.is_running()


# ----------------------------------------------------------- bad input


NOT_CALLABLE = [None, 1, "string", object()]


@pytest.mark.parametrize("bad", NOT_CALLABLE, ids=["None", "int", "str", "object"])
@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_non_callable_debug_mode(loop, method, bad):
    # asyncio checks callbacks only in debug mode: compare both in debug mode.
    loop.set_debug(True)
    args = {"call_soon": (), "call_soon_threadsafe": (), "call_later": (1,), "call_at": (loop.time() + 1,)}
    with pytest.raises(TypeError):
        getattr(loop, method)(*args[method], bad)


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_coroutine_as_callback_debug_mode(loop, method):
    loop.set_debug(True)
    args = {"call_soon": (), "call_soon_threadsafe": (), "call_later": (1,), "call_at": (loop.time() + 1,)}

    async def coro_fn():
        pass

    coro = coro_fn()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used"):
            getattr(loop, method)(*args[method], coro)
        with pytest.raises(TypeError, match="coroutines cannot be used"):
            getattr(loop, method)(*args[method], coro_fn)
    finally:
        coro.close()


@pytest.mark.parametrize("bad", NOT_CALLABLE, ids=["None", "int", "str", "object"])
def test_non_callable_rejected_at_once_flaskasync(fa_loop, bad):
    # flaskasync checks at schedule time even without debug mode (asyncio
    # only in debug mode, and otherwise fails later in the loop).
    fa_loop.set_debug(False)
    with pytest.raises(TypeError):
        fa_loop.call_soon(bad)
    with pytest.raises(TypeError):
        fa_loop.call_later(0, bad)
    assert fa_loop._ready_count == 0
    assert fa_loop._timer_count == 0


def test_coroutine_rejected_at_once_flaskasync(fa_loop):
    fa_loop.set_debug(False)

    async def coro_fn():
        pass

    coro = coro_fn()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used with call_soon"):
            fa_loop.call_soon(coro)
    finally:
        coro.close()


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_timer_none_deadline(loop, method):
    with pytest.raises(TypeError):
        getattr(loop, method)(None, lambda: None)


def test_call_later_string_delay(loop):
    with pytest.raises(TypeError):
        loop.call_later("1", lambda: None)


def test_bad_input_does_not_break_loop(loop):
    loop.set_debug(True)
    for bad in NOT_CALLABLE:
        with pytest.raises(TypeError):
            loop.call_soon(bad)
    loop.set_debug(False)
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
