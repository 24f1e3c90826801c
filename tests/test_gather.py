"""flaskasync.gather against asyncio.gather, on both loops."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

import flaskasync

GATHERS = {"fa_gather": flaskasync.gather, "aio_gather": asyncio.gather}


@pytest.fixture(params=list(GATHERS), ids=list(GATHERS))
def gather(request):
    return GATHERS[request.param]


async def value(v, yields=0):
    for _ in range(yields):
        await asyncio.sleep(0)
    return v


async def fail(exc, yields=0):
    for _ in range(yields):
        await asyncio.sleep(0)
    raise exc


async def yield_n(n):
    for _ in range(n):
        await asyncio.sleep(0)


def test_results_in_argument_order(loop, gather):
    async def main():
        # Finish in reverse order.
        return await gather(value("a", 6), value("b", 3), value("c", 0))

    assert loop.run_until_complete(main()) == ["a", "b", "c"]


def test_result_is_a_list(loop, gather):
    async def main():
        return await gather(value(1))

    res = loop.run_until_complete(main())
    assert type(res) is list and res == [1]


def test_returns_future_on_loop(loop, gather):
    async def main():
        g = gather(value(1))
        assert isinstance(g, asyncio.Future)
        assert g.get_loop() is loop
        return await g

    assert loop.run_until_complete(main()) == [1]


def test_many_children(loop, gather):
    async def main():
        return await gather(*[value(i, i % 3) for i in range(1000)])

    assert loop.run_until_complete(main()) == list(range(1000))


def test_first_exception_propagates_others_keep_running(loop, gather):
    done = []

    async def slow(tag):
        await yield_n(5)
        done.append(tag)
        return tag

    async def main():
        with pytest.raises(ValueError, match="first"):
            await gather(slow("s1"), fail(ValueError("first"), 1), fail(KeyError("second"), 3), slow("s2"))
        assert done == []
        await yield_n(10)
        return sorted(done)

    assert loop.run_until_complete(main()) == ["s1", "s2"]


def test_exception_identity_and_traceback(loop, gather):
    exc = ValueError("exact")

    async def raiser():
        await asyncio.sleep(0)
        raise exc

    async def main():
        try:
            await gather(value(1), raiser())
        except ValueError as e:
            return e

    got = loop.run_until_complete(main())
    assert got is exc
    import traceback

    names = [f.name for f in traceback.extract_tb(got.__traceback__)]
    assert "raiser" in names


def test_return_exceptions(loop, gather):
    e1, e2 = ValueError("v"), KeyError("k")

    async def main():
        return await gather(value(1, 2), fail(e1), value(3), fail(e2, 1), return_exceptions=True)

    res = loop.run_until_complete(main())
    assert res[0] == 1 and res[2] == 3
    assert res[1] is e1 and res[3] is e2


def test_cancel_gather_cancels_children(loop, gather):
    started, cancelled = [], []

    async def child(i):
        started.append(i)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def main():
        g = gather(child(1), child(2), child(3))
        await asyncio.sleep(0)
        assert sorted(started) == [1, 2, 3]
        assert g.cancel() is True
        with pytest.raises(asyncio.CancelledError):
            await g
        assert g.done()
        assert g.cancel() is False  # already done
        return sorted(cancelled)

    assert loop.run_until_complete(main()) == [1, 2, 3]


def test_cancel_gather_with_return_exceptions_still_raises(loop, gather):
    async def main():
        g = gather(asyncio.sleep(10), asyncio.sleep(10), return_exceptions=True)
        await asyncio.sleep(0)
        g.cancel()
        with pytest.raises(asyncio.CancelledError):
            await g

    loop.run_until_complete(main())


def test_cancel_message_reaches_children(loop, gather):
    msgs = []

    async def child():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as e:
            msgs.append(e.args)
            raise

    async def main():
        g = gather(child(), child())
        await asyncio.sleep(0)
        g.cancel(msg="bye")
        with pytest.raises(asyncio.CancelledError) as ei:
            await g
        return ei.value.args

    assert loop.run_until_complete(main()) == ("bye",)
    assert msgs == [("bye",), ("bye",)]


def test_cancel_message_given_twice_is_refused(loop, gather):
    """cancel(msg) takes its one argument by position or by name, not both,
    and no other keyword: asyncio's _GatheringFuture.cancel(msg=None)."""

    async def main():
        g = gather(yield_n(1))
        with pytest.raises(TypeError, match="multiple values for argument 'msg'"):
            g.cancel("a", msg="b")
        with pytest.raises(TypeError, match="unexpected keyword argument 'message'"):
            g.cancel(message="b")
        with pytest.raises(TypeError):
            g.cancel("a", "b")
        assert not g.cancelled()
        await g

    loop.run_until_complete(main())


def test_cancel_task_awaiting_gather(loop, gather):
    cancelled = []

    async def child(i):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def parent():
        return await gather(child(1), child(2))

    async def main():
        t = asyncio.create_task(parent())
        await asyncio.sleep(0.001)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert t.cancelled()
        return sorted(cancelled)

    assert loop.run_until_complete(main()) == [1, 2]


def test_cancelled_child_propagates(loop, gather):
    async def main():
        victim = asyncio.create_task(asyncio.sleep(10))
        other = asyncio.create_task(value("other", 5))
        g = gather(victim, other)
        await asyncio.sleep(0)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await g
        assert not g.cancelled()  # finished with CancelledError, not cancelled
        # The other child was not cancelled.
        assert await other == "other"

    loop.run_until_complete(main())


def test_cancelled_child_with_return_exceptions(loop, gather):
    async def main():
        victim = asyncio.create_task(asyncio.sleep(10))
        g = gather(value(1, 2), victim, return_exceptions=True)
        await asyncio.sleep(0)
        victim.cancel()
        res = await g
        assert not g.cancelled()
        return res

    res = loop.run_until_complete(main())
    assert res[0] == 1
    assert isinstance(res[1], asyncio.CancelledError)


def test_no_arguments(loop, gather):
    async def main():
        g = gather()
        assert g.done()
        assert g.get_loop() is loop
        return await g

    assert loop.run_until_complete(main()) == []


def test_no_arguments_return_exceptions(loop, gather):
    async def main():
        return await gather(return_exceptions=True)

    assert loop.run_until_complete(main()) == []


def test_same_coroutine_twice(loop, gather):
    runs = []

    async def once():
        runs.append(1)
        await asyncio.sleep(0)
        return "r"

    async def main():
        c = once()
        return await gather(c, c, value("x"), c)

    assert loop.run_until_complete(main()) == ["r", "r", "x", "r"]
    assert runs == [1]


def test_same_future_twice(loop, gather):
    async def main():
        fut = loop.create_future()
        loop.call_soon(fut.set_result, "f")
        task = asyncio.create_task(value("t", 1))
        return await gather(fut, task, fut, task)

    assert loop.run_until_complete(main()) == ["f", "t", "f", "t"]


def test_same_failing_coroutine_twice(loop, gather):
    async def main():
        c = fail(ValueError("once"), 1)
        return await gather(c, c, return_exceptions=True)

    res = loop.run_until_complete(main())
    assert res[0] is res[1] and isinstance(res[0], ValueError)


def test_same_arguments_repeated_among_many(loop, gather):
    """Repeats found among more arguments than a linear scan covers."""
    runs = []

    async def once(v):
        runs.append(v)
        await asyncio.sleep(0)
        return v

    async def main():
        fut = loop.create_future()
        loop.call_soon(fut.set_result, "f")
        c = once("c")
        special = {3: c, 17: c, 39: c, 5: fut, 30: fut}
        return await gather(*[special.get(i) or value(i) for i in range(40)])

    res = loop.run_until_complete(main())
    assert runs == ["c"]
    assert [res[i] for i in (3, 17, 39)] == ["c"] * 3
    assert res[5] == res[30] == "f"
    assert res[0] == 0 and res[38] == 38


@pytest.mark.parametrize("n", [2, 40])
def test_equal_awaitables_are_one_argument(loop, gather, n):
    """asyncio.gather keys a dict by its arguments: awaitables that are
    equal (same hash, __eq__ true) count as one, the first one awaited."""
    awaited = []

    class Same:
        def __init__(self, tag):
            self.tag = tag

        def __eq__(self, other):
            return isinstance(other, Same)

        def __hash__(self):
            return 1

        def __await__(self):
            awaited.append(self.tag)
            yield from asyncio.sleep(0).__await__()
            return self.tag

    async def main():
        return await gather(*[Same(i) for i in range(n)])

    assert loop.run_until_complete(main()) == [0] * n
    assert awaited == [0]


def test_task_factory_giving_one_task_for_two_coroutines(loop, gather):
    """asyncio.gather attaches its callback once per distinct argument,
    not once per distinct future: a task factory that answers two
    coroutines with the same task gives a gather that still finishes."""
    shared = []

    def factory(lp, coro, **kwargs):
        if shared:
            coro.close()
            return shared[0]
        shared.append(asyncio.Task(coro, loop=lp, **kwargs))
        return shared[0]

    async def main(repeat):
        shared.clear()
        f = loop.create_future()
        loop.call_soon(f.set_result, "f")
        loop.set_task_factory(factory)
        try:
            extra = (f, f) if repeat else ()
            g = gather(value("a", 1), value("b", 1), *extra)
        finally:
            loop.set_task_factory(None)
        return await asyncio.wait_for(g, 5)

    assert loop.run_until_complete(main(False)) == ["a", "a"]
    # With a repeated argument too (gather then finds repeats, and must
    # still attach one callback per argument that made its own future).
    assert loop.run_until_complete(main(True)) == ["a", "a", "f", "f"]


def test_gathering_future_type_is_immutable():
    """flaskasync's own: the C gather calls its outer future's methods
    through asyncio.Future's C descriptors, so its type must not take
    overrides (asyncio's Python _GatheringFuture has no such table)."""
    from flaskasync import _core

    tp = _core._GatheringFuture
    with pytest.raises(TypeError):
        tp.set_result = lambda self, r: None
    with pytest.raises(TypeError):
        del tp.cancel


def test_mixed_awaitables(loop, gather):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "custom"

    async def main():
        fut = loop.create_future()
        loop.call_later(0.001, fut.set_result, "future")
        task = asyncio.create_task(value("task", 2))
        return await gather(value("coro", 1), task, fut, Awaitable())

    assert loop.run_until_complete(main()) == ["coro", "task", "future", "custom"]


def test_already_done_children(loop, gather):
    async def main():
        f1 = loop.create_future()
        f1.set_result(1)
        f2 = loop.create_future()
        f2.set_exception(KeyError("done"))
        return await gather(f1, f2, return_exceptions=True)

    res = loop.run_until_complete(main())
    assert res[0] == 1 and isinstance(res[1], KeyError)


def test_nested_gathers(loop, gather):
    async def main():
        return await gather(
            gather(value(1, 2), value(2)),
            value(3, 1),
            gather(),
            gather(gather(value(4))),
        )

    assert loop.run_until_complete(main()) == [[1, 2], 3, [], [[4]]]


def test_nested_gather_cancel_propagates(loop, gather):
    cancelled = []

    async def child(i):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def main():
        g = gather(gather(child(1), child(2)), child(3))
        await asyncio.sleep(0)
        g.cancel()
        with pytest.raises(asyncio.CancelledError):
            await g

    loop.run_until_complete(main())
    assert sorted(cancelled) == [1, 2, 3]


def test_nested_gather_exception(loop, gather):
    async def main():
        return await gather(gather(value(1), fail(ValueError("inner"))), value(2), return_exceptions=True)

    res = loop.run_until_complete(main())
    assert isinstance(res[0], ValueError) and res[1] == 2


def test_later_exceptions_marked_retrieved(loop, gather, errors, caplog):
    async def main():
        with pytest.raises(ValueError):
            await gather(fail(ValueError("first"), 1), fail(KeyError("later"), 4), fail(TypeError("later2"), 6))
        await yield_n(10)

    loop.run_until_complete(main())
    gc.collect()
    assert errors.contexts == []
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_exceptions_after_cancel_marked_retrieved(loop, gather, errors):
    async def stubborn():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise KeyError("raised while cancelled")

    async def main():
        g = gather(stubborn(), asyncio.sleep(10))
        await asyncio.sleep(0)
        g.cancel()
        with pytest.raises((asyncio.CancelledError, KeyError)):
            await g
        await yield_n(5)

    loop.run_until_complete(main())
    gc.collect()
    assert errors.contexts == []


def test_not_awaitable_argument(loop, gather):
    async def main():
        with pytest.raises(TypeError):
            gather(42)
        c = value(1)
        try:
            with pytest.raises(TypeError):
                gather(object(), c)
        finally:
            c.close()

    loop.run_until_complete(main())


def test_futures_of_different_loops(loop, loop_factory, gather):
    other = loop_factory()
    try:
        f1 = loop.create_future()
        f2 = other.create_future()
        with pytest.raises(ValueError):
            gather(f1, f2)
    finally:
        other.close()


def test_gather_futures_outside_running_loop(loop, gather):
    # With futures only, gather takes the loop from them (no running loop).
    f1 = loop.create_future()
    f2 = loop.create_future()
    g = gather(f1, f2)
    assert g.get_loop() is loop
    loop.call_soon(f1.set_result, 1)
    loop.call_soon(f2.set_result, 2)
    assert loop.run_until_complete(g) == [1, 2]


def test_gather_outer_done_callbacks(loop, gather):
    got = []

    async def main():
        g = gather(value(1), value(2, 1))
        g.add_done_callback(lambda f: got.append(f.result()))
        await g
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert got == [[1, 2]]


def test_gather_children_not_logged_as_destroyed(loop, gather, errors):
    # Tasks gather created must not log "Task was destroyed but it is
    # pending" when gather is dropped while they run.
    async def main():
        g = gather(asyncio.sleep(10), asyncio.sleep(10))
        await asyncio.sleep(0)
        g.cancel()
        try:
            await g
        except asyncio.CancelledError:
            pass

    loop.run_until_complete(main())
    gc.collect()
    assert errors.contexts == []


def test_cancel_gather_child_ignores_cancellation(loop, gather):
    # The cancellation of the gather propagates even if a child swallows it.
    async def stubborn():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "ignored"

    async def main():
        g = gather(stubborn(), stubborn())
        await asyncio.sleep(0)
        assert g.cancel() is True
        with pytest.raises(asyncio.CancelledError):
            await g

    loop.run_until_complete(main())


def test_gather_of_gather_result_shared(loop, gather):
    async def main():
        inner = gather(value(1), value(2))
        return await gather(inner, inner, value(3))

    assert loop.run_until_complete(main()) == [[1, 2], [1, 2], 3]


def test_children_done_before_the_call_match_asyncio(loop):
    # From 3.12 on, asyncio.gather handles children that are already done
    # (finished futures, eager tasks) at once: the gather returns finished.
    # 3.11 waits for their callbacks, an iteration later.  flaskasync.gather
    # does what this interpreter's asyncio.gather does.
    def scenario(gather):
        async def main():
            out = []
            f = loop.create_future()
            f.set_result(1)
            g = gather(f, f)
            out.append(("finished futures", g.done()))
            failed = loop.create_future()
            failed.set_exception(ValueError("x"))
            pending = loop.create_future()
            g2 = gather(failed, pending)
            out.append(("failed child", g2.done()))
            pending.set_result(0)
            g3 = gather(f, pending, return_exceptions=True)
            out.append(("done, return_exceptions", g3.done()))
            await asyncio.sleep(0)
            out.append(await g3)
            with pytest.raises(ValueError):
                await g2
            return out

        return loop.run_until_complete(main())

    assert scenario(flaskasync.gather) == scenario(asyncio.gather)


def test_cancelled_child_in_results_carries_its_message(loop, gather):
    """With return_exceptions=True a cancelled future's entry is
    CancelledError(its cancel message), CancelledError('') without one.
    (A cancelled Task's entry has '': the message went to its coroutine.)"""

    async def main():
        plain = loop.create_future()
        told = loop.create_future()
        loop.call_soon(plain.cancel)
        loop.call_soon(told.cancel, "told")
        return await gather(plain, told, value("v"), return_exceptions=True)

    res = loop.run_until_complete(main())
    assert [type(r) for r in res] == [asyncio.CancelledError, asyncio.CancelledError, str]
    assert res[0].args == ("",)
    assert res[1].args == ("told",)
    assert res[2] == "v"


def test_same_future_twice_still_waits_for_the_others(loop, gather):
    """A future passed twice counts once: when it finishes, gather still
    waits for the other children, and nothing goes wrong meanwhile."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        fut = loop.create_future()
        other = loop.create_future()
        g = gather(fut, fut, other)
        fut.set_result(1)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not g.done()
        other.set_result(2)
        return await g

    assert loop.run_until_complete(main()) == [1, 1, 2]
    assert errors == []
