"""Running and stopping the loop, closing it, futures and tasks, task
factories, asyncio.Runner."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import signal
import sys
import threading
import time

import pytest

import flaskasync

LOOP_KINDS = {"flaskasync": flaskasync.new_event_loop, "asyncio": asyncio.new_event_loop}


# Defined here, not imported from conftest: another conftest.py in a
# subdirectory would shadow the module name "conftest".
def run_once(loop):
    """Run exactly one iteration of the loop: the callbacks ready now."""
    loop.call_soon(loop.stop)
    loop.run_forever()

var = contextvars.ContextVar("var", default="unset")


async def _value(v, yields=0):
    for _ in range(yields):
        await asyncio.sleep(0)
    return v


def test_is_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)


# --------------------------------------------------- run_until_complete


def test_run_until_complete_coroutine(loop):
    assert loop.run_until_complete(_value(42, yields=3)) == 42


def test_run_until_complete_coroutine_exception(loop):
    async def boom():
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(boom())


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "fut result")
    assert loop.run_until_complete(fut) == "fut result"


def test_run_until_complete_future_exception(loop):
    fut = loop.create_future()
    loop.call_later(0.001, fut.set_exception, KeyError("k"))
    with pytest.raises(KeyError):
        loop.run_until_complete(fut)


def test_run_until_complete_task(loop):
    task = loop.create_task(_value("task result", yields=2))
    assert loop.run_until_complete(task) == "task result"
    assert task.done()


def test_run_until_complete_awaitable_object(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_not_awaitable(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete(42)


def test_run_until_complete_future_of_other_loop(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_run_until_complete_stopped_before_done(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(fut)
    assert not fut.done()


def test_run_until_complete_own_task_is_not_reported_destroyed(loop, caplog):
    """The task run_until_complete() made for a coroutine belongs to it: if
    the loop stopped first and the task is collected pending, asyncio does
    not log "Task was destroyed but it is pending!" for it."""

    async def main():
        loop.stop()
        await loop.create_future()  # only the task and this future hold each other

    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(main())
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert [r.getMessage() for r in caplog.records
            if "destroyed but it is pending" in r.getMessage()] == []


def test_run_until_complete_leaves_no_running_loop(loop):
    loop.run_until_complete(_value(1))
    assert asyncio._get_running_loop() is None
    assert not loop.is_running()

    async def boom():
        raise ValueError

    with pytest.raises(ValueError):
        loop.run_until_complete(boom())
    assert asyncio._get_running_loop() is None
    assert not loop.is_running()


def test_run_until_complete_restores_asyncgen_hooks(loop):
    before = sys.get_asyncgen_hooks()
    inside = []

    async def main():
        inside.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    assert sys.get_asyncgen_hooks() == before
    assert inside[0].firstiter is not None
    assert inside[0] != before


def test_pending_callbacks_survive_between_runs(loop):
    got = []

    async def main():
        loop.call_later(0.02, got.append, "later")
        return "done"

    assert loop.run_until_complete(main()) == "done"
    assert got == []
    loop.run_until_complete(asyncio.sleep(0.04))
    assert got == ["later"]


# ------------------------------------------------- run_forever and stop


def test_stop_before_run_forever_runs_one_iteration(loop):
    order = []

    def first():
        order.append("first")
        loop.call_soon(order.append, "next iteration")

    loop.call_soon(first)
    loop.stop()
    loop.run_forever()
    assert order == ["first"]
    loop.stop()
    loop.run_forever()
    assert order == ["first", "next iteration"]


def test_stop_before_run_forever_with_nothing_scheduled_returns_at_once(loop):
    # Nothing ready, no timer, no fd: the stopped loop must not block in its
    # poll (it would wait forever).  A thread unblocks a regression after
    # 2 seconds, so it fails rather than hangs.
    rescue = threading.Timer(2.0, lambda: loop.call_soon_threadsafe(loop.stop))
    rescue.start()
    try:
        for _ in range(3):
            t0 = time.monotonic()
            loop.stop()
            loop.run_forever()
            assert time.monotonic() - t0 < 1.0
            assert not loop.is_running()
    finally:
        rescue.cancel()
        rescue.join()


def test_stop_inside_callback_finishes_current_batch(loop):
    order = []

    def stopper():
        order.append("stopper")
        loop.stop()
        loop.call_soon(order.append, "scheduled after stop")

    loop.call_soon(order.append, "before")
    loop.call_soon(stopper)
    loop.call_soon(order.append, "same batch")
    loop.run_forever()
    assert order == ["before", "stopper", "same batch"]
    run_once(loop)
    assert order[-1] == "scheduled after stop"


def test_run_forever_until_stop_from_timer(loop):
    got = []
    loop.call_later(0.01, got.append, "t")
    loop.call_later(0.02, loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert got == ["t"]
    assert time.monotonic() - t0 >= 0.019


def test_stop_from_other_thread(loop):
    t = threading.Timer(0.05, lambda: loop.call_soon_threadsafe(loop.stop))
    failsafe = loop.call_later(5, loop.stop)
    t0 = time.monotonic()
    t.start()
    loop.run_forever()
    failsafe.cancel()
    t.join()
    assert time.monotonic() - t0 < 1.0


def test_is_running(loop):
    seen = []
    assert not loop.is_running()
    loop.call_soon(lambda: seen.append(loop.is_running()))
    run_once(loop)
    assert seen == [True]
    assert not loop.is_running()


def test_already_running_run_forever(loop):
    errs = []

    def cb():
        try:
            loop.run_forever()
        except RuntimeError as e:
            errs.append(str(e))

    loop.call_soon(cb)
    run_once(loop)
    assert errs == ["This event loop is already running"]


def test_already_running_run_until_complete(loop):
    errs = []

    def cb():
        fut = loop.create_future()
        try:
            loop.run_until_complete(fut)
        except RuntimeError as e:
            errs.append(str(e))

    loop.call_soon(cb)
    run_once(loop)
    assert errs == ["This event loop is already running"]


@pytest.mark.parametrize("other_kind", list(LOOP_KINDS))
def test_cannot_run_while_another_loop_runs(loop, other_kind):
    other = LOOP_KINDS[other_kind]()
    errs = []

    def cb():
        fut = other.create_future()
        try:
            other.run_until_complete(fut)
        except RuntimeError as e:
            errs.append(str(e))
        try:
            other.run_forever()
        except RuntimeError as e:
            errs.append(str(e))

    try:
        loop.call_soon(cb)
        run_once(loop)
    finally:
        other.close()
    assert errs == ["Cannot run the event loop while another loop is running"] * 2


def test_loops_in_two_threads(loop, loop_factory):
    # Each thread runs its own loop; a loop blocked in its poll must not hold
    # the GIL (otherwise the main thread cannot stop it).
    other = loop_factory()
    started = threading.Event()
    result = []

    def thread_main():
        # Fail-safe: the main thread stops us long before this.
        other.call_later(3, other.stop)
        other.run_forever()
        result.append(time.monotonic())

    t = threading.Thread(target=thread_main)
    t.start()
    other.call_soon_threadsafe(lambda: started.set())
    assert started.wait(5)
    time.sleep(0.05)
    t0 = time.monotonic()
    # Needs the GIL while the other thread's loop is waiting.
    loop.run_until_complete(asyncio.sleep(0.01))
    other.call_soon_threadsafe(other.stop)
    t.join(5)
    assert not t.is_alive()
    assert result[0] - t0 < 1.0
    other.close()


# ------------------------------------------------------------- closing


def test_close_and_is_closed(loop):
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()  # idempotent
    assert loop.is_closed()


def test_close_while_running_raises(loop):
    errs = []

    def cb():
        try:
            loop.close()
        except RuntimeError as e:
            errs.append(str(e))

    loop.call_soon(cb)
    run_once(loop)
    assert errs == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_close_drops_pending_callbacks(loop):
    called = []
    loop.call_soon(called.append, 1)
    loop.call_later(0.001, called.append, 2)
    loop.close()
    assert called == []


def test_close_releases_pending_callbacks(loop):
    # asyncio's close() clears its ready queue and its timers: what the
    # pending callbacks hold is released at once, not when the loop goes.
    import weakref

    class Arg:
        pass

    soon, later = Arg(), Arg()
    refs = weakref.ref(soon), weakref.ref(later)
    loop.call_soon(id, soon)
    loop.call_later(10, id, later)
    del soon, later
    assert [r() is None for r in refs] == [False, False]
    loop.close()
    assert [r() is None for r in refs] == [True, True]


CLOSED_CALLS = {
    "call_soon": lambda lp: lp.call_soon(lambda: None),
    "call_soon_threadsafe": lambda lp: lp.call_soon_threadsafe(lambda: None),
    "call_later": lambda lp: lp.call_later(1, lambda: None),
    "call_at": lambda lp: lp.call_at(lp.time() + 1, lambda: None),
    "run_forever": lambda lp: lp.run_forever(),
    "run_until_complete": lambda lp: lp.run_until_complete(lp.create_future()),
    "run_in_executor": lambda lp: lp.run_in_executor(None, lambda: None),
}


@pytest.mark.parametrize("method", list(CLOSED_CALLS))
def test_closed_loop_raises(loop, method):
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        CLOSED_CALLS[method](loop)


def test_closed_loop_create_task_raises(loop):
    loop.close()
    coro = _value(1)
    try:
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            loop.create_task(coro)
    finally:
        coro.close()


def test_closed_loop_run_until_complete_coroutine(loop):
    loop.close()
    coro = _value(1)
    try:
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            loop.run_until_complete(coro)
    finally:
        coro.close()


# ------------------------------------------------- inside a running loop


def test_running_loop_current_task_all_tasks(loop):
    seen = {}

    async def main():
        seen["running"] = asyncio.get_running_loop()
        seen["event_loop"] = asyncio.get_event_loop()
        seen["current"] = asyncio.current_task()
        seen["all"] = asyncio.all_tasks()
        other = asyncio.create_task(asyncio.sleep(0))
        seen["all2"] = asyncio.all_tasks()
        await other

    task = loop.create_task(main())
    loop.run_until_complete(task)
    assert seen["running"] is loop
    assert seen["event_loop"] is loop
    assert seen["current"] is task
    assert task in seen["all"]
    assert len(seen["all2"]) == 2
    assert asyncio.all_tasks(loop) == set()


def test_current_task_none_in_plain_callback(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.current_task(loop)))
    run_once(loop)
    assert seen == [None]


# ----------------------------------------------------- futures and tasks


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.cancel()


def test_future_callbacks_run_on_loop(loop):
    fut = loop.create_future()
    got = []
    fut.add_done_callback(lambda f: got.append(f.result()))
    fut.set_result(3)
    assert got == []  # scheduled, not called synchronously
    run_once(loop)
    assert got == [3]


def test_create_task_basic(loop):
    task = loop.create_task(_value("r"))
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is loop
    assert task.get_name().startswith("Task-")
    assert loop.run_until_complete(task) == "r"


def test_create_task_name(loop):
    task = loop.create_task(_value(1), name="my-task")
    assert task.get_name() == "my-task"
    loop.run_until_complete(task)


def test_create_task_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "task ctx")

    async def read():
        return var.get()

    task = loop.create_task(read(), context=ctx)
    assert loop.run_until_complete(task) == "task ctx"
    assert var.get() == "unset"


def test_create_task_copies_current_context(loop):
    async def read():
        return var.get()

    def make():
        var.set("copied")
        return loop.create_task(read())

    task = contextvars.copy_context().run(make)
    assert loop.run_until_complete(task) == "copied"


def test_create_task_rejects_non_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(lambda: None)


def test_task_cancel(loop):
    seen = []

    async def sleeper():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = loop.create_task(sleeper())
    run_once(loop)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert task.cancelled()
    assert seen == ["cancelled"]


def test_task_factory(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    t1 = loop.create_task(_value(1), name="named")
    assert calls[-1] == (loop, {})
    assert t1.get_name() == "named"

    ctx = contextvars.copy_context()
    t2 = loop.create_task(_value(2), context=ctx)
    assert calls[-1] == (loop, {"context": ctx})

    async def inner():
        return await asyncio.create_task(_value(3))

    assert loop.run_until_complete(inner()) == 3
    assert loop.run_until_complete(asyncio.gather(t1, t2)) == [1, 2]
    # run_until_complete(coro) + asyncio.create_task went through it too.
    assert len(calls) == 4

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    t3 = loop.create_task(_value(3))
    assert len(calls) == 4
    loop.run_until_complete(t3)


@pytest.mark.parametrize("bad", [1, "factory", object()])
def test_task_factory_not_callable(loop, bad):
    with pytest.raises(TypeError):
        loop.set_task_factory(bad)
    assert loop.get_task_factory() is None


# -------------------------------------------------------- asyncio.Runner


def test_asyncio_runner_with_loop_factory(loop_factory, loop_kind):
    async def main(v):
        await asyncio.sleep(0.001)
        await asyncio.to_thread(lambda: None)
        return asyncio.get_running_loop(), v

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        lp, v = runner.run(main(1))
        assert lp is runner.get_loop()
        assert runner.run(main(2))[1] == 2
    assert lp.is_closed()
    if loop_kind == "flaskasync":
        assert isinstance(lp, flaskasync.Loop)


def test_asyncio_runner_flaskasync_loop():
    # The documented way to use the C loop as a general asyncio loop.
    with asyncio.Runner(loop_factory=flaskasync.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), flaskasync.Loop)
        assert runner.run(_value("ok", yields=2)) == "ok"


def test_asyncio_runner_ctrl_c_while_idle(loop_factory):
    # asyncio.Runner turns Ctrl-C into cancelling the main task, then
    # KeyboardInterrupt.  The SIGINT arrives while the loop waits in its
    # poll for a timer: it must be handled promptly, not when the timer fires.
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT handler is not Python's default")
    sent = []

    async def main():
        def kill():
            sent.append(time.monotonic())
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

        threading.Timer(0.05, kill).start()
        await asyncio.sleep(1.0)

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            with pytest.raises(KeyboardInterrupt):
                runner.run(main())
            got = time.monotonic()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert got - sent[0] < 0.5, f"SIGINT handled {got - sent[0]:.3f}s after it arrived"


def test_signal_module_handler_runs_while_loop_idle(loop):
    # A plain signal.signal() handler must run promptly while the loop waits
    # (asyncio's poll returns on EINTR so Python can run it).
    ran = []
    old = signal.signal(signal.SIGUSR2, lambda *a: ran.append(time.monotonic()))
    sent = []

    def kill():
        sent.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR2)

    try:
        t = threading.Timer(0.05, kill)
        t.start()
        loop.run_until_complete(asyncio.sleep(0.6))
        t.join()
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert ran, "signal handler never ran"
    assert ran[0] - sent[0] < 0.3, f"handler ran {ran[0] - sent[0]:.3f}s after the signal"
