"""Checks of the adopted app loop and the greenlet bridge, each run in a
fresh interpreter by test_asgi_adopt.py (adoption changes the process's
app loop, which the other tests of a pytest process share).

python adopt_checks.py NAME runs check_NAME and prints OK."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time

import flaskasync
from flaskasync import _bridge, _core


def serve(main):
    """Run main() on a flaskasync loop, as a server would."""
    with asyncio.Runner(loop_factory=flaskasync.new_event_loop) as runner:
        return runner.run(main())


async def in_thread(fn, *args):
    out = {}

    def target():
        try:
            out["result"] = fn(*args)
        except BaseException as exc:  # noqa: B036
            out["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    while t.is_alive():
        await asyncio.sleep(0.005)
    if "error" in out:
        raise out["error"]
    return out["result"]


async def add(a, b, delay=0.01):
    await asyncio.sleep(delay)
    return a + b


def check_adopt_and_release():
    async def main():
        loop = asyncio.get_running_loop()
        assert not _core._has_app_loop()
        _core._adopt_app_loop(loop, _bridge.reenter)
        assert _core._has_app_loop()
        assert flaskasync.get_loop() is loop
        # Another thread submits to the running loop and waits.
        assert await in_thread(flaskasync.run, add(1, 2)) == 3
        assert await in_thread(flaskasync.get_loop) is loop
        # Many threads at once, while the loop keeps running.
        results = await asyncio.gather(*(in_thread(flaskasync.run, add(i, 1, 0.05))
                                         for i in range(20)))
        assert results == [i + 1 for i in range(20)]
        # run()'s timeout from a thread.
        try:
            await in_thread(lambda: flaskasync.run(asyncio.sleep(5), timeout=0.05))
        except TimeoutError as exc:
            assert "timed out" in str(exc)
        else:
            raise AssertionError("no TimeoutError")
        # Adopting twice is a no-op.
        _core._adopt_app_loop(loop, _bridge.reenter)
        _core._release_app_loop(loop)
        assert not _core._has_app_loop()
        # After release, get_loop() from a thread makes a new app loop.
        other = await in_thread(flaskasync.get_loop)
        assert other is not loop
        return other

    other = serve(main)
    assert flaskasync.run(add(2, 3)) == 5  # the new app loop works
    assert flaskasync.get_loop() is other


def check_run_on_the_loop_thread():
    async def main():
        loop = asyncio.get_running_loop()
        _core._adopt_app_loop(loop, _bridge.reenter)
        # Inside a running loop: the usual refusal, coroutine untouched.
        coro = add(1, 2)
        try:
            flaskasync.run(coro)
        except RuntimeError as exc:
            assert "cannot be called from a running event loop" in str(exc)
        else:
            raise AssertionError("no RuntimeError")
        coro.close()
        # On the loop thread with no loop running, outside a greenlet.
        asyncio._set_running_loop(None)
        try:
            flaskasync.run(add(1, 2))
        except RuntimeError as exc:
            assert "outside a request" in str(exc), exc
        else:
            raise AssertionError("no RuntimeError")
        finally:
            asyncio._set_running_loop(loop)
        _core._release_app_loop(loop)

    serve(main)


def check_adopt_refusals():
    try:
        _core._adopt_app_loop(asyncio.new_event_loop(), _bridge.reenter)
    except TypeError as exc:
        assert "flaskasync.Loop" in str(exc)
    else:
        raise AssertionError("asyncio loop adopted")
    loop = flaskasync.new_event_loop()
    try:
        _core._adopt_app_loop(loop, _bridge.reenter)
    except RuntimeError as exc:
        assert "running in this thread" in str(exc)
    else:
        raise AssertionError("a loop that is not running adopted")
    try:
        _core._adopt_app_loop(loop, 42)
    except TypeError:
        pass
    else:
        raise AssertionError("non-callable reenter accepted")
    loop.close()
    # An app loop made before the server started cannot be replaced.
    flaskasync.run(add(1, 1))

    async def main():
        try:
            _core._adopt_app_loop(asyncio.get_running_loop(), _bridge.reenter)
        except RuntimeError as exc:
            assert "already has a flaskasync app loop" in str(exc)
        else:
            raise AssertionError("replaced a live app loop")

    serve(main)


def check_run_while_the_adopted_loop_is_stopped():
    holder = {}

    async def main():
        loop = asyncio.get_running_loop()
        _core._adopt_app_loop(loop, _bridge.reenter)
        holder["loop"] = loop

    runner = asyncio.Runner(loop_factory=flaskasync.new_event_loop)
    runner.run(main())
    out = {}

    def target():
        coro = add(1, 2)
        try:
            flaskasync.run(coro)
        except RuntimeError as exc:
            out["msg"] = str(exc)
            coro.close()

    t = threading.Thread(target=target)
    t.start()
    t.join(5)
    assert "not running" in out.get("msg", ""), out
    _core._release_app_loop(holder["loop"])
    runner.close()


def check_bridge_shares_one_context():
    var = contextvars.ContextVar("var", default="unset")

    def sync_code():
        var.set("set-in-greenlet")
        # A coroutine awaited by the loop's side sees it, and sets another.
        assert flaskasync.run(read_and_set()) == "set-in-greenlet"
        assert var.get() == "set-in-coroutine"
        token = var.set("again")
        var.reset(token)
        assert asyncio._get_running_loop() is None  # as in a WSGI thread
        return threading.current_thread().name

    async def read_and_set():
        value = var.get()
        var.set("set-in-coroutine")
        assert asyncio.get_running_loop() is not None
        return value

    async def main():
        loop = asyncio.get_running_loop()
        _core._adopt_app_loop(loop, _bridge.reenter)
        ctx = contextvars.copy_context()
        task = asyncio.Task(_bridge.run_in_greenlet(sync_code, ctx), loop=loop, context=ctx)
        name = await task
        assert name == threading.current_thread().name
        assert ctx[var] == "set-in-coroutine"
        assert var.get() == "unset"  # the request's Context only
        assert asyncio.get_running_loop() is loop
        _core._release_app_loop(loop)

    serve(main)


def check_bridge_exceptions_and_cancellation():
    events = []

    def raises():
        try:
            flaskasync.run(fail())
        except KeyError as exc:
            events.append(("caught", exc.args[0]))
        flaskasync.run(fail())

    async def fail():
        await asyncio.sleep(0)
        raise KeyError("from-coroutine")

    def waits():
        try:
            flaskasync.run(asyncio.sleep(30))
        finally:
            events.append("finally-in-greenlet")

    def times_out():
        try:
            flaskasync.run(asyncio.sleep(5), timeout=0.05)
        except TimeoutError as exc:
            events.append(("timeout", str(exc)))
        return "ok"

    async def main():
        loop = asyncio.get_running_loop()
        _core._adopt_app_loop(loop, _bridge.reenter)
        ctx = contextvars.copy_context()
        try:
            await asyncio.Task(_bridge.run_in_greenlet(raises, ctx), loop=loop, context=ctx)
        except KeyError as exc:
            assert exc.args[0] == "from-coroutine"
        else:
            raise AssertionError("no KeyError")
        assert events == [("caught", "from-coroutine")]
        ctx = contextvars.copy_context()
        task = asyncio.Task(_bridge.run_in_greenlet(waits, ctx), loop=loop, context=ctx)
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert task.cancelled()
        assert events[-1] == "finally-in-greenlet"
        ctx = contextvars.copy_context()
        t0 = time.monotonic()
        r = await asyncio.Task(_bridge.run_in_greenlet(times_out, ctx), loop=loop, context=ctx)
        assert r == "ok" and time.monotonic() - t0 < 1
        assert events[-1][0] == "timeout"
        _core._release_app_loop(loop)

    serve(main)


if __name__ == "__main__":
    globals()["check_" + sys.argv[1]]()
    print("OK")
