"""Reference, object and fd leak tests (flaskasync only: they count objects
and Handles of the C extension)."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import tracemalloc
import warnings

import pytest

import flaskasync
from flaskasync import _core

N = 10_000
WARMUP = 1_000
# Growth allowed whatever the iteration count (caches, interned strings, the
# measuring itself).  A leak of one object per iteration is 10,000.
MAX_OBJECT_GROWTH = 100


def _counts():
    gc.collect()
    gc.collect()
    return len(gc.get_objects()), _core._live_handles()


# Memory growth allowed (bytes, traced by tracemalloc) whatever the iteration
# count; catches leaked objects that the GC does not track (floats, str,
# tuples of atoms), which len(gc.get_objects()) cannot see.  A leak of one
# small object per iteration is >= 10,000 * 16 bytes.
MAX_MEMORY_GROWTH = 64 * 1024


def check_no_leak(step, n=N, warmup=WARMUP):
    """Run step(k) for a warm-up, then for n iterations, and compare the
    number of GC objects, live Handles and traced memory before and after."""
    step(warmup)
    objs0, handles0 = _counts()
    step(n)
    objs1, handles1 = _counts()
    assert handles1 - handles0 <= 0, f"{handles1 - handles0} Handles leaked over {n} iterations"
    assert objs1 - objs0 < MAX_OBJECT_GROWTH, (
        f"{objs1 - objs0} objects more after {n} iterations"
    )
    # Second pass under tracemalloc (slower, so separate from the counts).
    tracemalloc.start()
    try:
        step(warmup)
        gc.collect()
        mem0 = tracemalloc.get_traced_memory()[0]
        step(n)
        gc.collect()
        mem1 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert mem1 - mem0 < MAX_MEMORY_GROWTH, f"memory grew by {mem1 - mem0} bytes over {n} iterations"


def _noop(*args):
    pass


async def _trivial():
    return None


def _fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def lp():
    loop = flaskasync.new_event_loop()
    # Debug mode (PYTHONASYNCIODEBUG=1) records a stack per handle: far too
    # slow for 10,000 iterations, and not what these tests measure.
    loop.set_debug(False)
    yield loop
    loop.close()


@pytest.fixture
def app_loop():
    """The app loop with debug mode off for the duration of the test."""
    loop = flaskasync.get_loop()
    was = loop.get_debug()
    loop.set_debug(False)
    yield loop
    loop.set_debug(was)


def _run_once(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_leak_call_soon_and_run(lp):
    def step(n):
        for i in range(n):
            lp.call_soon(_noop, i)
            _run_once(lp)

    check_no_leak(step)


def test_leak_call_later_and_cancel(lp):
    def step(n):
        for i in range(n):
            h = lp.call_later(10, _noop, i)
            h.cancel()
        _run_once(lp)

    check_no_leak(step)
    assert lp._timer_count == 0


def test_leak_timers_that_fire(lp):
    def step(n):
        for i in range(n):
            lp.call_later(0, _noop, i)
        lp.run_until_complete(asyncio.sleep(0.001))

    check_no_leak(step)


def test_leak_create_task(lp):
    def step(n):
        for _ in range(n):
            lp.run_until_complete(lp.create_task(_trivial()))

    check_no_leak(step)


def test_leak_failing_tasks(lp):
    async def fail():
        raise ValueError

    async def main(n):
        for _ in range(n):
            try:
                await lp.create_task(fail())
            except ValueError:
                pass

    check_no_leak(lambda n: lp.run_until_complete(main(n)))


def test_leak_flaskasync_run(app_loop):
    def step(n):
        for _ in range(n):
            flaskasync.run(_trivial())

    check_no_leak(step)


def test_leak_flaskasync_run_with_sleep(app_loop):
    async def main():
        await asyncio.sleep(0)

    def step(n):
        for _ in range(n // 10):
            flaskasync.run(main(), timeout=5)

    check_no_leak(step)


def test_leak_flaskasync_run_exception(app_loop):
    async def fail():
        raise KeyError

    def step(n):
        for _ in range(n):
            try:
                flaskasync.run(fail())
            except KeyError:
                pass

    check_no_leak(step)


def test_leak_flaskasync_run_timeout(app_loop):
    async def forever():
        await asyncio.sleep(10)

    def step(n):
        for _ in range(n // 10):
            try:
                flaskasync.run(forever(), timeout=0)
            except TimeoutError:
                pass

    check_no_leak(step)


def test_leak_call_soon_threadsafe(lp):
    def step(n):
        for i in range(n):
            lp.call_soon_threadsafe(_noop, i)
        _run_once(lp)

    check_no_leak(step)


def test_leak_callback_exceptions(lp):
    def bad(i):
        raise ValueError(i)

    lp.set_exception_handler(lambda loop, ctx: None)

    def step(n):
        for i in range(n):
            lp.call_soon(bad, i)
            if i % 100 == 0:
                _run_once(lp)
        _run_once(lp)

    check_no_leak(step)


def test_leak_debug_mode_handles(lp):
    lp.set_debug(True)

    def step(n):
        for i in range(n // 10):
            lp.call_soon(_noop, i)
            lp.call_later(10, _noop).cancel()
        _run_once(lp)

    check_no_leak(step)


def test_leak_gather(lp):
    async def main(n):
        for _ in range(n):
            await flaskasync.gather(*[_trivial() for _ in range(10)])

    check_no_leak(lambda n: lp.run_until_complete(main(n)))


def test_leak_gather_exceptions(lp):
    async def fail():
        raise ValueError

    async def main(n):
        for _ in range(n // 10):
            await flaskasync.gather(_trivial(), fail(), return_exceptions=True)
            try:
                await flaskasync.gather(_trivial(), fail(), fail())
            except ValueError:
                pass
            await asyncio.sleep(0)

    check_no_leak(lambda n: lp.run_until_complete(main(n)))


def test_leak_gather_cancel(lp):
    async def main(n):
        for _ in range(n // 10):
            g = flaskasync.gather(asyncio.sleep(1), asyncio.sleep(1))
            await asyncio.sleep(0)
            g.cancel()
            try:
                await g
            except asyncio.CancelledError:
                pass

    check_no_leak(lambda n: lp.run_until_complete(main(n)))


def test_leak_add_remove_reader(lp):
    a, b = socket.socketpair()
    try:
        fds_before = _fds()

        def step(n):
            for i in range(n):
                lp.add_reader(a.fileno(), _noop, i)
                lp.remove_reader(a.fileno())
                _run_once(lp)

        check_no_leak(step)
        assert _fds() == fds_before
    finally:
        a.close()
        b.close()


def test_leak_reader_fires(lp):
    a, b = socket.socketpair()
    a.setblocking(False)
    try:

        def on_read():
            a.recv(10)

        def step(n):
            lp.add_reader(a.fileno(), on_read)
            for _ in range(n // 10):
                b.send(b"x")
                _run_once(lp)
            lp.remove_reader(a.fileno())
            _run_once(lp)

        check_no_leak(step)
    finally:
        a.close()
        b.close()


def test_loop_create_close_does_not_leak_fds():
    def step(n):
        for _ in range(n):
            loop = flaskasync.new_event_loop()
            loop.close()

    step(10)
    fds0 = _fds()
    step(1000)
    gc.collect()
    assert _fds() - fds0 <= 0


def test_loop_with_watchers_and_timers_close_does_not_leak_fds():
    a, b = socket.socketpair()
    try:
        fds0 = _fds()
        for _ in range(300):
            loop = flaskasync.new_event_loop()
            loop.add_reader(a.fileno(), _noop)
            loop.add_writer(b.fileno(), _noop)
            loop.call_later(10, _noop)
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()
        gc.collect()
        assert _fds() - fds0 <= 0
    finally:
        a.close()
        b.close()


def test_unclosed_loop_collected_does_not_leak_fds():
    fds0 = _fds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(300):
            loop = flaskasync.new_event_loop()
            loop.call_soon(_noop)
            del loop
        gc.collect()
    assert _fds() - fds0 <= 0


def test_loops_do_not_accumulate():
    # Closed loops and their handles are freed (no cycle kept alive by the C
    # core).
    import weakref

    refs = []
    for _ in range(50):
        loop = flaskasync.new_event_loop()
        loop.call_soon(_noop)
        loop.call_later(1, _noop)
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        refs.append(weakref.ref(loop))
        del loop
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
