"""asyncio's high-level primitives running on the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest


def test_sleep_duration_and_result(loop):
    async def main():
        t0 = time.monotonic()
        r = await asyncio.sleep(0.02, result="slept")
        return r, time.monotonic() - t0

    r, dt = loop.run_until_complete(main())
    assert r == "slept"
    assert 0.0195 <= dt < 0.5


def test_sleep_zero_yields(loop):
    order = []

    async def a():
        order.append("a1")
        await asyncio.sleep(0)
        order.append("a2")

    async def b():
        order.append("b1")
        await asyncio.sleep(0)
        order.append("b2")

    async def main():
        await asyncio.gather(a(), b())

    loop.run_until_complete(main())
    assert order == ["a1", "b1", "a2", "b2"]


def test_concurrent_sleeps_overlap(loop):
    async def main():
        t0 = time.monotonic()
        await asyncio.gather(*[asyncio.sleep(0.05) for _ in range(100)])
        return time.monotonic() - t0

    assert loop.run_until_complete(main()) < 0.5


def test_wait_for_timeout(loop):
    seen = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow(), 0.02)

    t0 = time.monotonic()
    loop.run_until_complete(main())
    assert time.monotonic() - t0 < 1.0
    assert seen == ["cancelled"]


def test_wait_for_in_time(loop):
    async def main():
        return await asyncio.wait_for(asyncio.sleep(0.001, "fast"), 1.0)

    assert loop.run_until_complete(main()) == "fast"


def test_timeout_context_manager(loop):
    async def main():
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02) as cm:
                await asyncio.sleep(10)
        assert cm.expired()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(10.0) as cm2:
                cm2.reschedule(asyncio.get_running_loop().time() + 0.02)
                await asyncio.sleep(10)
        return time.monotonic() - t0

    assert 0.039 <= loop.run_until_complete(main()) < 1.0


def test_timeout_not_reached(loop):
    async def main():
        async with asyncio.timeout(1.0) as cm:
            await asyncio.sleep(0.001)
        return cm.expired()

    assert loop.run_until_complete(main()) is False


def test_event(loop):
    async def main():
        ev = asyncio.Event()
        woke = []

        async def waiter(i):
            await ev.wait()
            woke.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
        await asyncio.sleep(0)
        assert woke == []
        asyncio.get_running_loop().call_later(0.005, ev.set)
        await asyncio.gather(*tasks)
        return woke

    assert loop.run_until_complete(main()) == [0, 1, 2, 3, 4]


def test_lock_mutual_exclusion_fifo(loop):
    async def main():
        lock = asyncio.Lock()
        inside = [0]
        max_inside = [0]
        order = []

        async def worker(i):
            async with lock:
                inside[0] += 1
                max_inside[0] = max(max_inside[0], inside[0])
                order.append(i)
                await asyncio.sleep(0.001)
                inside[0] -= 1

        await asyncio.gather(*[worker(i) for i in range(10)])
        return max_inside[0], order

    max_inside, order = loop.run_until_complete(main())
    assert max_inside == 1
    assert order == list(range(10))


def test_semaphore_limits_concurrency(loop):
    async def main():
        sem = asyncio.Semaphore(3)
        inside = [0]
        peak = [0]

        async def worker():
            async with sem:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
                await asyncio.sleep(0.002)
                inside[0] -= 1

        await asyncio.gather(*[worker() for _ in range(12)])
        return peak[0]

    assert loop.run_until_complete(main()) == 3


def test_condition(loop):
    async def main():
        cond = asyncio.Condition()
        items = []

        async def consumer():
            async with cond:
                await cond.wait_for(lambda: items)
                return items.pop()

        task = asyncio.create_task(consumer())
        await asyncio.sleep(0.001)
        async with cond:
            items.append("item")
            cond.notify()
        return await task

    assert loop.run_until_complete(main()) == "item"


def test_queue_producer_consumer(loop):
    async def main():
        q = asyncio.Queue(maxsize=2)
        got = []

        async def producer():
            for i in range(20):
                await q.put(i)
            await q.put(None)

        async def consumer():
            while True:
                item = await q.get()
                q.task_done()
                if item is None:
                    return
                got.append(item)
                await asyncio.sleep(0)

        await asyncio.gather(producer(), consumer())
        await q.join()
        return got

    assert loop.run_until_complete(main()) == list(range(20))


def test_queue_get_timeout(loop):
    async def main():
        q = asyncio.Queue()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(q.get(), 0.01)
        q.put_nowait(1)
        return await q.get()

    assert loop.run_until_complete(main()) == 1


def test_taskgroup(loop):
    async def main():
        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(asyncio.sleep(0.002, "a"))
            t2 = tg.create_task(asyncio.sleep(0.001, "b"))
        return t1.result(), t2.result()

    assert loop.run_until_complete(main()) == ("a", "b")


def test_taskgroup_failure_cancels_siblings(loop):
    cancelled = []

    async def sibling():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def fail():
        await asyncio.sleep(0.001)
        raise ValueError("tg")

    async def main():
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sibling())
            tg.create_task(fail())

    with pytest.raises(ExceptionGroup) as ei:
        loop.run_until_complete(main())
    assert [type(e) for e in ei.value.exceptions] == [ValueError]
    assert cancelled == [True]


def test_shield(loop):
    inner_done = []

    async def inner():
        await asyncio.sleep(0.01)
        inner_done.append(True)
        return "inner"

    async def main():
        inner_task = asyncio.ensure_future(inner())
        outer = asyncio.shield(inner_task)
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert not inner_task.cancelled()
        return await inner_task

    assert loop.run_until_complete(main()) == "inner"
    assert inner_done == [True]


def test_wait_first_completed(loop):
    async def main():
        fast = asyncio.create_task(asyncio.sleep(0.001, "fast"))
        slow = asyncio.create_task(asyncio.sleep(1, "slow"))
        done, pending = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        slow.cancel()
        return done == {fast}, pending == {slow}

    assert loop.run_until_complete(main()) == (True, True)


def test_wait_timeout_and_all_completed(loop):
    async def main():
        tasks = [asyncio.create_task(asyncio.sleep(d, d)) for d in (0.001, 0.002, 1)]
        done, pending = await asyncio.wait(tasks, timeout=0.05)
        assert pending == {tasks[2]}
        tasks[2].cancel()
        done2, pending2 = await asyncio.wait(tasks[:2])
        return len(done), len(done2), len(pending2)

    assert loop.run_until_complete(main()) == (2, 2, 0)


def test_wait_first_exception(loop):
    async def fail():
        await asyncio.sleep(0.001)
        raise ValueError

    async def main():
        f = asyncio.create_task(fail())
        s = asyncio.create_task(asyncio.sleep(1))
        done, pending = await asyncio.wait([f, s], return_when=asyncio.FIRST_EXCEPTION)
        s.cancel()
        return done == {f} and isinstance(f.exception(), ValueError)

    assert loop.run_until_complete(main()) is True


def test_as_completed(loop):
    async def main():
        aws = [asyncio.sleep(d, d) for d in (0.006, 0.002, 0.004)]
        return [await f for f in asyncio.as_completed(aws)]

    assert loop.run_until_complete(main()) == [0.002, 0.004, 0.006]


def test_as_completed_timeout(loop):
    async def main():
        aws = [asyncio.sleep(0.001, "a"), asyncio.sleep(5, "b")]
        got = []
        with pytest.raises(asyncio.TimeoutError):
            for f in asyncio.as_completed(aws, timeout=0.05):
                got.append(await f)
        return got

    assert loop.run_until_complete(main()) == ["a"]


def test_to_thread_primitive(loop):
    async def main():
        return await asyncio.gather(
            *[asyncio.to_thread(lambda i=i: (i, threading.get_ident())) for i in range(8)]
        )

    results = loop.run_until_complete(main())
    assert [r[0] for r in results] == list(range(8))
    assert all(r[1] != threading.get_ident() for r in results)


def test_run_coroutine_threadsafe(loop):
    results = []

    async def add(a, b):
        await asyncio.sleep(0.001)
        return a + b

    def worker():
        fut = asyncio.run_coroutine_threadsafe(add(1, 2), loop)
        results.append(fut.result(timeout=5))

    async def main():
        t = threading.Thread(target=worker)
        t.start()
        while t.is_alive():
            await asyncio.sleep(0.005)
        t.join()

    loop.run_until_complete(main())
    assert results == [3]


def test_barrier(loop):
    async def main():
        barrier = asyncio.Barrier(3)
        order = []

        async def party(i):
            await asyncio.sleep(0.001 * i)
            order.append(("arrive", i))
            await barrier.wait()
            order.append(("leave", i))

        await asyncio.gather(*[party(i) for i in range(3)])
        return order

    order = loop.run_until_complete(main())
    assert [o[0] for o in order] == ["arrive"] * 3 + ["leave"] * 3


def test_cancel_sleeping_task_promptly(loop):
    async def main():
        t = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0.001)
        t0 = time.monotonic()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return time.monotonic() - t0

    assert loop.run_until_complete(main()) < 0.1
