"""flaskasync.run, the app loop, async_to_sync.

These tests are flaskasync-only: asyncio has no process-wide app loop driven
from synchronous code (asyncio.run makes a new loop per call)."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import signal
import socket
import sys
import threading
import time
import traceback

import pytest

import flaskasync

var = contextvars.ContextVar("runner_var", default="unset")


async def trivial(v=None):
    return v


async def boom_after_sleep():
    await asyncio.sleep(0.005)
    raise ValueError("boom after sleep")


async def boom_now():
    raise ValueError("boom now")


# ------------------------------------------------------------- results


def test_result():
    assert flaskasync.run(trivial(42)) == 42


def test_result_after_sleep_and_gather():
    async def main():
        await asyncio.sleep(0.005)
        return await asyncio.gather(asyncio.sleep(0.002, "a"), trivial("b"))

    assert flaskasync.run(main()) == ["a", "b"]


@pytest.mark.parametrize("fn", [boom_now, boom_after_sleep])
def test_exception_with_traceback(fn):
    with pytest.raises(ValueError) as ei:
        flaskasync.run(fn())
    names = [f.name for f in traceback.extract_tb(ei.value.__traceback__)]
    assert fn.__name__ in names


def test_exception_identity():
    raised = []

    async def main():
        await asyncio.sleep(0)
        e = KeyError("same")
        raised.append(e)
        raise e

    with pytest.raises(KeyError) as ei:
        flaskasync.run(main())
    assert ei.value is raised[0]


def test_cancelled_inside_raises_cancelled_error():
    async def main():
        asyncio.current_task().cancel()
        await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        flaskasync.run(main())


# ------------------------------------------------------------- timeout


def test_timeout_raises_and_cancels_coroutine():
    seen = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        flaskasync.run(slow(), timeout=0.05)
    dt = time.monotonic() - t0
    assert 0.049 <= dt < 1.0
    assert seen == ["cancelled"]


@pytest.mark.parametrize("timeout", [0.02, 0, 1e-3])
def test_timeout_message(timeout):
    # The message names the seconds as repr(float(timeout)) (3.11 printed
    # a literal "%.3g", 3.12+ raised SystemError instead of TimeoutError),
    # and the TimeoutError comes from the task's CancelledError.
    async def slow():
        await asyncio.sleep(10)

    with pytest.raises(TimeoutError) as info:
        flaskasync.run(slow(), timeout=timeout)
    assert str(info.value) == f"flaskasync.run() timed out after {float(timeout)!r} seconds"
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert info.value.__suppress_context__


def test_timeout_not_reached():
    assert flaskasync.run(asyncio.sleep(0.005, "in time"), timeout=1.0) == "in time"
    # The cancelled timeout must not fire into a later run.
    assert flaskasync.run(asyncio.sleep(0.02, "later"), timeout=None) == "later"


class _Result:
    pass


async def _make_result():
    return _Result()


def test_timeout_disarmed_when_run_finishes_inline():
    # The timeout's timer must go with the run: armed, it would keep the
    # task and its result alive for the whole timeout.
    import gc
    import weakref

    r = flaskasync.run(_make_result(), timeout=60)
    ref = weakref.ref(r)
    del r
    gc.collect()
    assert ref() is None


def test_timeout_disarmed_when_run_finishes_in_another_thread():
    # A run submitted while another thread drives the loop finishes there:
    # its timeout goes too, as above.
    import gc
    import weakref

    driving = threading.Event()
    box = []

    async def drive():
        driving.set()
        time.sleep(0.2)  # holds the loop while the other thread submits
        for _ in range(20):
            await asyncio.sleep(0.005)
            if box:
                break

    def submitter():
        assert driving.wait(5)
        box.append(weakref.ref(flaskasync.run(_make_result(), timeout=60)))

    t = threading.Thread(target=submitter, daemon=True)
    t.start()
    flaskasync.run(drive())
    t.join(5)
    assert len(box) == 1
    gc.collect()
    assert box[0]() is None


def test_timeout_zero_times_out_like_wait_for_zero():
    # run(coro, timeout=0) is accepted and behaves as asyncio.wait_for(coro, 0)
    # for a coroutine that suspends: cancelled, TimeoutError from the
    # CancelledError.
    def make(log):
        async def slow():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                log.append("cancelled")
                raise

        return slow()

    ref_log, log = [], []
    with pytest.raises(TimeoutError) as ref:
        asyncio.run(asyncio.wait_for(make(ref_log), 0))
    with pytest.raises(TimeoutError) as got:
        flaskasync.run(make(log), timeout=0)
    assert type(got.value) is type(ref.value)
    assert type(got.value.__cause__) is type(ref.value.__cause__)
    assert str(got.value) == "flaskasync.run() timed out after 0.0 seconds"
    # asyncio.wait_for(, 0) cancels a coroutine before it starts on 3.11,
    # and at its first suspension from 3.12; run() starts it first.
    assert ref_log in ([], ["cancelled"])
    assert log == ["cancelled"]


def test_timeout_ignored_by_coroutine():
    # The coroutine swallows the cancellation and finishes later: run() must
    # not return before it finished, and its outcome must match
    # asyncio.wait_for's (the reference for "cancel on timeout").
    def make(log):
        async def stubborn():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                log.append("cancel seen")
            await asyncio.sleep(0.03)
            log.append("finished")
            return "late"

        return stubborn

    def outcome(fn):
        try:
            return ("result", fn())
        except BaseException as e:  # noqa: BLE001
            return ("raised", type(e))

    ref_log = []
    reference = outcome(lambda: asyncio.run(asyncio.wait_for(make(ref_log)(), 0.02)))
    log = []
    got = outcome(lambda: flaskasync.run(make(log)(), timeout=0.02))
    assert log == ["cancel seen", "finished"]  # finished before run() returned
    assert got == reference


def test_timeout_bad_values():
    c = trivial()
    with pytest.raises((TypeError, ValueError)):
        flaskasync.run(c, timeout="soon")
    with pytest.raises(ValueError):
        flaskasync.run(c, timeout=-1)
    c.close()


# ---------------------------------------------------------- bad usage


@pytest.mark.parametrize(
    "arg",
    [None, 1, trivial, lambda: None, "coro"],
    ids=["None", "int", "async-fn-not-called", "lambda", "str"],
)
def test_type_error_for_non_coroutine(arg):
    with pytest.raises(TypeError):
        flaskasync.run(arg)


def test_type_error_for_future():
    fut = flaskasync.get_loop().create_future()
    with pytest.raises(TypeError):
        flaskasync.run(fut)


def test_runtime_error_inside_running_loop(loop):
    async def main():
        c = trivial()
        try:
            flaskasync.run(c)
        finally:
            c.close()

    with pytest.raises(RuntimeError):
        loop.run_until_complete(main())


def test_runtime_error_inside_app_loop():
    # A nested run() from a coroutine on the app loop must fail, not deadlock.
    async def outer():
        c = trivial()
        try:
            flaskasync.run(c)
        except RuntimeError:
            return "refused"
        finally:
            c.close()
        return "ran nested"

    assert flaskasync.run(outer()) == "refused"


def test_app_loop_cannot_be_run_directly():
    lp = flaskasync.get_loop()
    fut = lp.create_future()
    with pytest.raises(RuntimeError):
        lp.run_until_complete(fut)
    fut.cancel()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("after_sleep", [False, True], ids=["now", "after-sleep"])
def test_fatal_exceptions_propagate(exc_type, after_sleep):
    async def main():
        if after_sleep:
            await asyncio.sleep(0.005)
        raise exc_type()

    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(
        f"{u.exc_type.__name__} ignored in {u.object!r}"
    )
    try:
        with pytest.raises(exc_type):
            flaskasync.run(main())
        # The app loop still works.
        assert flaskasync.run(asyncio.sleep(0.001, "ok")) == "ok"
    finally:
        sys.unraisablehook = old_hook
    # The caller received the exception: it must not also be reported as
    # "Exception ignored" by whichever thread drove the loop.
    assert unraisable == []


# ----------------------------------------------------------- contextvars


def test_contextvars_in_and_back():
    def body():
        var.set("outside")

        async def main():
            seen = var.get()
            await asyncio.sleep(0.001)
            var.set("set inside")
            return seen

        assert flaskasync.run(main()) == "outside"
        return var.get()

    assert contextvars.copy_context().run(body) == "set inside"
    assert var.get() == "unset"


def test_contextvars_copied_back_on_exception():
    def body():
        async def main():
            var.set("before raise")
            raise ValueError

        with pytest.raises(ValueError):
            flaskasync.run(main())
        return var.get()

    assert contextvars.copy_context().run(body) == "before raise"


def test_contextvars_isolated_between_threads():
    results = {}

    def worker(i):
        def body():
            var.set(f"t{i}")

            async def main():
                await asyncio.sleep(0.002)
                v = var.get()
                var.set(f"t{i}-inside")
                return v

            seen = flaskasync.run(main())
            results[i] = (seen, var.get())

        contextvars.copy_context().run(body)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: (f"t{i}", f"t{i}-inside") for i in range(8)}


# ------------------------------------------------- run(name=, context=)


async def task_name():
    return asyncio.current_task().get_name()


def test_name_names_the_task():
    assert flaskasync.run(task_name(), name="job-1") == "job-1"
    # Without it, the task is named after the coroutine.
    assert flaskasync.run(task_name()) == "task_name"
    assert flaskasync.run(task_name(), name=None) == "task_name"


def test_name_with_a_task_factory():
    lp = flaskasync.get_loop()
    made = []

    def factory(loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    old = lp.get_task_factory()
    lp.set_task_factory(factory)
    try:
        assert flaskasync.run(task_name(), name="through-factory") == "through-factory"
    finally:
        lp.set_task_factory(old)
    assert len(made) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": 5}, "name must be a str or None, got 5"),
        ({"name": b"x"}, "name must be a str or None"),
        ({"context": {}}, r"context must be a contextvars.Context or None, got \{\}"),
        ({"context": contextvars.ContextVar("v")}, "context must be a contextvars.Context"),
        ({"nme": "x"}, "unexpected keyword argument 'nme'"),
    ],
)
def test_name_and_context_bad_types(kwargs, message):
    c = trivial()
    with pytest.raises(TypeError, match=message):
        flaskasync.run(c, **kwargs)
    # The coroutine was not started: the caller still owns it.
    assert inspect.getcoroutinestate(c) == inspect.CORO_CREATED
    c.close()


def _context_outcome(run):
    """What a coroutine run by run(coro, context=ctx) sees and leaves behind."""

    def body():
        var.set("caller")
        ctx = contextvars.copy_context()
        ctx.run(var.set, "given")

        async def child():
            return var.get()

        async def main():
            seen = var.get()
            await asyncio.sleep(0.001)
            var.set("set inside")
            in_task = await asyncio.create_task(child())
            return seen, in_task

        result = run(main(), ctx)
        return result, ctx[var], var.get()

    return contextvars.copy_context().run(body)


def test_context_runs_in_it_and_copies_nothing_back():
    got = _context_outcome(lambda coro, ctx: flaskasync.run(coro, context=ctx))
    assert got == (("given", "set inside"), "set inside", "caller")
    # asyncio.Runner.run(context=) does the same.
    with asyncio.Runner() as runner:
        reference = _context_outcome(lambda coro, ctx: runner.run(coro, context=ctx))
    assert got == reference


def test_context_on_exception_copies_nothing_back():
    def body():
        ctx = contextvars.copy_context()

        async def main():
            var.set("before raise")
            raise ValueError("in the given context")

        with pytest.raises(ValueError, match="in the given context"):
            flaskasync.run(main(), context=ctx)
        return ctx[var], var.get()

    assert contextvars.copy_context().run(body) == ("before raise", "unset")


def test_context_shared_by_successive_runs():
    # One Context for several run() calls (as a streamed response uses it):
    # a variable set in one is seen, and its token reset, in the next.
    ctx = contextvars.copy_context()

    async def set_it():
        return var.set("first")

    async def reset_it(token):
        seen = var.get()
        var.reset(token)
        return seen, var.get()

    token = flaskasync.run(set_it(), context=ctx, name="set")
    assert flaskasync.run(reset_it(token), context=ctx) == ("first", "unset")
    assert var.get() == "unset"


def test_context_with_timeout():
    ctx = contextvars.copy_context()

    async def slow():
        var.set("started")
        await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        flaskasync.run(slow(), timeout=0.01, context=ctx, name="slow")
    assert ctx[var] == "started"


# ------------------------------------------------------------ app loop


def test_same_loop_across_calls_and_threads():
    lp = flaskasync.get_loop()
    assert flaskasync.get_loop() is lp
    assert isinstance(lp, flaskasync.Loop)

    async def running():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    assert flaskasync.run(running()) is lp
    seen = []

    def worker():
        seen.append(flaskasync.get_loop())
        seen.append(flaskasync.run(running()))

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert seen == [lp, lp]


def test_objects_shared_across_runs_and_threads():
    async def make():
        return asyncio.Lock(), asyncio.Queue(), asyncio.get_running_loop().create_future()

    lock, queue, fut = flaskasync.run(make())

    # Queue: put in another thread, get here.
    t = threading.Thread(target=lambda: flaskasync.run(queue.put("from thread")))
    t.start()
    t.join(10)
    assert flaskasync.run(queue.get()) == "from thread"

    # Lock: held across runs; another thread cannot take it until released.
    flaskasync.run(lock.acquire())
    assert lock.locked()
    got = []

    def try_lock():
        try:
            flaskasync.run(asyncio.wait_for(lock.acquire(), 0.05))
            got.append("acquired")
        except asyncio.TimeoutError:
            got.append("timeout")

    t = threading.Thread(target=try_lock)
    t.start()
    t.join(10)
    assert got == ["timeout"]

    async def release():
        lock.release()

    flaskasync.run(release())

    async def acquire_release():
        async with lock:
            return "locked and released"

    t_res = []
    t = threading.Thread(target=lambda: t_res.append(flaskasync.run(acquire_release())))
    t.start()
    t.join(10)
    assert t_res == ["locked and released"]

    # Future: awaited here, resolved from another thread's run().
    def resolver():
        time.sleep(0.03)

        async def setit():
            fut.set_result("resolved")

        flaskasync.run(setit())

    t = threading.Thread(target=resolver)
    t.start()
    assert flaskasync.run(asyncio.wait_for(asyncio.shield(fut), 5)) == "resolved"
    t.join(10)


def test_background_task_survives_run_checked_by_later_run():
    events = []
    holder = []

    async def bg():
        await asyncio.sleep(0.02)
        events.append("bg done")
        return "bg result"

    async def view():
        holder.append(asyncio.create_task(bg()))
        return "response"

    assert flaskasync.run(view()) == "response"
    assert events == []
    assert not holder[0].done()

    async def later():
        await asyncio.sleep(0.05)
        return await holder[0]

    assert flaskasync.run(later()) == "bg result"
    assert events == ["bg done"]
    assert not holder[0].cancelled()


def test_background_task_serviced_without_any_run():
    # The home thread runs the loop when nobody calls run().
    events = []
    holder = []

    async def bg():
        for i in range(3):
            await asyncio.sleep(0.01)
            events.append(i)

    async def view():
        holder.append(asyncio.create_task(bg()))

    flaskasync.run(view())
    deadline = time.monotonic() + 2.0
    while len(events) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert events == [0, 1, 2]
    assert holder[0].done()


def test_call_soon_threadsafe_on_app_loop_runs_without_run():
    lp = flaskasync.get_loop()
    done = threading.Event()
    lp.call_soon_threadsafe(done.set)
    assert done.wait(2.0)


def test_call_later_on_app_loop_runs_without_run():
    lp = flaskasync.get_loop()
    done = threading.Event()
    fired = []

    def cb():
        fired.append(time.monotonic())
        done.set()

    async def schedule():
        return lp.call_later(0.02, cb)

    h = flaskasync.run(schedule())
    assert done.wait(2.0)
    assert fired[0] >= h.when()


def test_run_woken_by_plain_thread_call_soon_threadsafe():
    lp = flaskasync.get_loop()

    async def make():
        return asyncio.get_running_loop().create_future()

    fut = flaskasync.run(make())
    t = threading.Timer(0.02, lambda: lp.call_soon_threadsafe(fut.set_result, "from thread"))
    t0 = time.monotonic()
    t.start()
    assert flaskasync.run(asyncio.wait_for(fut, 2), timeout=3) == "from thread"
    assert time.monotonic() - t0 < 1.0
    t.join()


def test_run_to_thread():
    async def main():
        return await asyncio.to_thread(lambda: threading.get_ident())

    t0 = time.monotonic()
    assert flaskasync.run(main(), timeout=3) != threading.get_ident()
    assert time.monotonic() - t0 < 1.0


def test_run_with_reader_on_app_loop():
    # A watcher added by a run() must be polled by whoever services the loop
    # next (the home thread here), so the data sent later wakes it.
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        async def main():
            lp = asyncio.get_running_loop()
            fut = lp.create_future()

            def on_read():
                lp.remove_reader(a.fileno())
                fut.set_result(a.recv(100))

            lp.add_reader(a.fileno(), on_read)
            return await fut

        threading.Timer(0.02, b.send, (b"ping",)).start()
        t0 = time.monotonic()
        assert flaskasync.run(main(), timeout=3) == b"ping"
        assert time.monotonic() - t0 < 1.0
    finally:
        a.close()
        b.close()


def test_sequential_runs_with_timers_are_prompt():
    # Each run waits for a 2 ms timer, serviced through the baton hand-off
    # and the home thread: no run should take much longer than its timer.
    durations = []
    for _ in range(50):
        t0 = time.monotonic()
        flaskasync.run(asyncio.sleep(0.002))
        durations.append(time.monotonic() - t0)
    durations.sort()
    assert durations[0] >= 0.002
    assert durations[len(durations) // 2] < 0.005, durations
    assert durations[-1] < 0.1, durations


def test_threads_calling_run_at_once():
    n_threads, per_thread = 32, 5
    barrier = threading.Barrier(n_threads)
    results = {}
    errors = []

    async def work(i, k):
        await asyncio.sleep(0.001 * (i % 3))
        vals = await asyncio.gather(*[asyncio.sleep(0.001, j) for j in range(5)])
        await asyncio.sleep(0)
        return i * 100 + k + sum(vals)

    def worker(i):
        try:
            barrier.wait(10)
            results[i] = [flaskasync.run(work(i, k)) for k in range(per_thread)]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_threads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not [t for t in threads if t.is_alive()], "run() deadlocked"
    assert errors == []
    assert results == {i: [i * 100 + k + 10 for k in range(per_thread)] for i in range(n_threads)}
    assert time.monotonic() - t0 < 10


def test_threads_mixed_fast_and_slow():
    # Fast runs in some threads must not wait for slow runs in others.
    slow_started = threading.Event()
    fast_times = []

    def slow():
        async def s():
            slow_started.set()
            await asyncio.sleep(0.3)

        flaskasync.run(s())

    def fast():
        for _ in range(20):
            t0 = time.monotonic()
            flaskasync.run(trivial())
            fast_times.append(time.monotonic() - t0)

    ts = threading.Thread(target=slow)
    ts.start()
    assert slow_started.wait(2)
    tf = threading.Thread(target=fast)
    tf.start()
    tf.join(5)
    ts.join(5)
    assert len(fast_times) == 20
    assert max(fast_times) < 0.1


def test_run_from_executor_thread_inside_run():
    # sync -> async -> sync (executor) -> async, the asgiref pattern.
    def sync_part(x):
        return flaskasync.run(asyncio.sleep(0.001, x * 2))

    async def main():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*[loop.run_in_executor(None, sync_part, i) for i in range(4)])

    assert flaskasync.run(main(), timeout=5) == [0, 2, 4, 6]


def test_keyboard_interrupt_while_waiting_cancels_coroutine():
    # Ctrl-C in the thread blocked in run() interrupts it promptly, and the
    # coroutine does not go on running unattended.
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT handler is not Python's default")
    seen = []

    async def slow():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    t = threading.Timer(
        0.05, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
    )
    t0 = time.monotonic()
    t.start()
    with pytest.raises(KeyboardInterrupt):
        flaskasync.run(slow())
    assert time.monotonic() - t0 < 1.0
    t.join()
    deadline = time.monotonic() + 2
    while not seen and time.monotonic() < deadline:
        time.sleep(0.005)
    assert seen == ["cancelled"]


def test_keyboard_interrupt_before_a_submitted_coroutine_started_drops_it():
    # The caller found the loop driven by another thread and submitted its
    # coroutine; Ctrl-C arrives before the loop got to start it: the
    # coroutine is closed unstarted, never run unattended.
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT handler is not Python's default")
    driving = threading.Event()
    ran = []

    async def hold_the_loop():
        driving.set()
        time.sleep(0.3)  # the loop is busy: main's run() must submit
        await asyncio.sleep(0.05)

    async def never():
        ran.append("started")

    driver = threading.Thread(target=flaskasync.run, args=(hold_the_loop(),), daemon=True)
    driver.start()
    assert driving.wait(5)
    t = threading.Timer(
        0.05, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
    )
    t.start()
    with pytest.raises(KeyboardInterrupt):
        flaskasync.run(never())
    t.join()
    driver.join(5)
    assert flaskasync.run(asyncio.sleep(0.02, "after")) == "after"
    assert ran == []


def test_closed_app_loop_is_replaced():
    old = flaskasync.get_loop()
    assert flaskasync.run(trivial(1)) == 1
    old.close()
    assert old.is_closed()
    new = flaskasync.get_loop()
    assert new is not old and not new.is_closed()

    async def where():
        await asyncio.sleep(0.001)
        return asyncio.get_running_loop()

    assert flaskasync.run(where()) is new


def test_closing_app_loop_fails_a_waiting_run_with_runtime_error():
    # A thread waits in run() for a coroutine that will never finish; the
    # app loop is closed under it: it gets a clear RuntimeError (not the
    # task's InvalidStateError, "Result is not set."), and at once.
    loop = flaskasync.get_loop()
    started = threading.Event()
    outcome = []

    async def forever():
        asyncio.current_task()._log_destroy_pending = False  # closed under it
        started.set()
        await asyncio.sleep(60)

    def waiter():
        try:
            outcome.append(flaskasync.run(forever()))
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert started.wait(5)
    deadline = time.monotonic() + 5
    while True:
        try:
            loop.close()
            break
        except RuntimeError as e:
            # The waiter (or the home thread) is driving it at this instant.
            assert str(e) == "Cannot close a running event loop"
            assert time.monotonic() < deadline
            time.sleep(0.001)
    t.join(5)
    assert not t.is_alive()
    assert len(outcome) == 1
    assert type(outcome[0]) is RuntimeError
    assert str(outcome[0]) == "the flaskasync app loop was closed while this coroutine was running"
    assert flaskasync.get_loop() is not loop


# -------------------------------------------------------- async_to_sync


def test_async_to_sync_wraps():
    async def coro_fn(a, b=2):
        """Add two numbers."""
        await asyncio.sleep(0)
        return a + b

    f = flaskasync.async_to_sync(coro_fn)
    assert f.__name__ == "coro_fn"
    assert f.__doc__ == "Add two numbers."
    assert f.__wrapped__ is coro_fn
    assert f(1, b=3) == 4
    assert f(5) == 7


def test_async_to_sync_exception():
    f = flaskasync.async_to_sync(boom_after_sleep)
    with pytest.raises(ValueError, match="boom after sleep"):
        f()


def test_async_to_sync_not_callable():
    with pytest.raises(TypeError):
        flaskasync.async_to_sync(42)


def test_async_to_sync_from_threads():
    f = flaskasync.async_to_sync(trivial)
    out = []
    threads = [threading.Thread(target=lambda i=i: out.append(f(i))) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(out) == list(range(10))


# ------------------------------------------------------------------ fork


# The app loop's home thread exists when we fork, which is the point: 3.12+
# warn about forking a multi-threaded process (the child re-creates the loop).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_gets_new_working_loop():
    parent_loop = flaskasync.get_loop()
    assert flaskasync.run(asyncio.sleep(0.001, "parent")) == "parent"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            signal.alarm(10)  # a hang in the child must not hang the test

            async def work():
                await asyncio.sleep(0.005)
                vals = await asyncio.gather(asyncio.sleep(0.001, 1), trivial(2))
                return asyncio.get_running_loop(), vals

            child_loop = flaskasync.get_loop()
            running, vals = flaskasync.run(work())
            checks = {
                "new loop": child_loop is not parent_loop,
                "not closed": not child_loop.is_closed(),
                "ran on it": running is child_loop,
                "results": vals == [1, 2],
                "stable": flaskasync.get_loop() is child_loop,
            }
            os.write(w, repr(checks).encode())
            code = 0 if all(checks.values()) else 3
        except BaseException:  # noqa: BLE001
            try:
                os.write(w, traceback.format_exc().encode())
            except BaseException:  # noqa: BLE001
                pass
            code = 2
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, report
    # The parent's app loop is untouched.
    assert flaskasync.get_loop() is parent_loop
    assert flaskasync.run(asyncio.sleep(0.001, "parent again")) == "parent again"


# The app loop's home thread exists when we fork, which is the point: 3.12+
# warn about forking a multi-threaded process (the child re-creates the loop).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_home_thread_services_background_tasks():
    # The child calls run() many times, with a background task: the child's
    # home thread must exist too.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            signal.alarm(10)
            done = threading.Event()
            keep = []

            async def spawn_bg():
                async def bg():
                    await asyncio.sleep(0.01)
                    done.set()

                keep.append(asyncio.create_task(bg()))

            results = [flaskasync.run(trivial(i)) for i in range(50)]
            flaskasync.run(spawn_bg())
            ok = results == list(range(50)) and done.wait(2)
            os.write(w, f"results ok={results == list(range(50))} bg={done.is_set()}".encode())
            code = 0 if ok else 3
        except BaseException:  # noqa: BLE001
            try:
                os.write(w, traceback.format_exc().encode())
            except BaseException:  # noqa: BLE001
                pass
            code = 2
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, report
