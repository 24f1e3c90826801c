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


class ScriptedClient:
    """An ASGI client for ASGIApp in-process: receive() hands out the body
    chunks, each after delay seconds; then, with cut_after=N, an
    http.disconnect instead of chunk N, or else nothing more (a client that
    stays)."""

    def __init__(self, chunks, delay, cut_after=None):
        self.chunks = list(chunks)
        self.delay = delay
        self.cut_after = cut_after
        self.given = 0  # body messages handed out
        self.sent: list = []

    async def receive(self):
        if self.cut_after is not None and self.given >= self.cut_after:
            await asyncio.sleep(self.delay)
            return {"type": "http.disconnect"}
        if self.given < len(self.chunks):
            await asyncio.sleep(self.delay)
            self.given += 1
            return {"type": "http.request", "body": self.chunks[self.given - 1],
                    "more_body": self.given < len(self.chunks)}
        await asyncio.Event().wait()

    async def send(self, msg):
        self.sent.append(msg)

    def status(self):
        starts = [m["status"] for m in self.sent if m["type"] == "http.response.start"]
        return starts[0] if starts else None

    def body(self):
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def check_bridge_pool():
    """Request greenlets are reused (the same one for consecutive requests of
    a thread, at most POOL_SIZE kept idle, never another thread's), and an
    idle one keeps nothing of its last request: not its result, not its
    exception, not its Context."""
    import gc
    import weakref

    class Thing:
        pass

    var: contextvars.ContextVar = contextvars.ContextVar("var")
    seen = []

    def returns():
        seen.append(_bridge._getcurrent())
        var.set(Thing())
        return Thing()

    def error():
        exc = KeyError("x")
        exc.thing = Thing()
        return exc

    def raises():
        seen.append(_bridge._getcurrent())
        raise error()  # no local refers to it: no cycle through this frame

    def waits(delay):
        seen.append(_bridge._getcurrent())
        flaskasync.run(asyncio.sleep(delay))

    async def one(fn, *args):
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await asyncio.Task(_bridge.run_in_greenlet(fn, ctx, *args), loop=loop, context=ctx)

    async def main():
        loop = asyncio.get_running_loop()
        _core._adopt_app_loop(loop, _bridge.reenter)
        gc.disable()  # what is freed must be freed by reference counting

        result = weakref.ref(await one(returns))
        await asyncio.sleep(0)  # the running Handle holds the finished task
        assert result() is None, "the idle greenlet keeps the result"
        try:
            await one(raises)
        except KeyError as exc:
            thing = weakref.ref(exc.thing)
            del exc
        else:
            raise AssertionError("no KeyError")
        await asyncio.sleep(0)
        assert thing() is None, "the idle greenlet keeps the exception"
        assert seen[0] is seen[1], "not reused"
        assert seen[0].gr_context is None and seen[0].on_handover is None

        # Concurrent requests each get their own greenlet; the pool keeps
        # at most POOL_SIZE of them idle.
        seen.clear()
        n = _bridge.POOL_SIZE + 10
        await asyncio.gather(*(one(waits, 0.02) for _ in range(n)))
        assert len({id(g) for g in seen}) == n
        assert len(_bridge._pools.idle) == _bridge.POOL_SIZE

        # Another thread running a loop gets greenlets of its own.
        def other_thread():
            with asyncio.Runner(loop_factory=flaskasync.new_event_loop) as r:
                async def run_one():
                    ctx = contextvars.copy_context()
                    return await asyncio.Task(_bridge.run_in_greenlet(returns, ctx),
                                              context=ctx)
                r.run(run_one())
                return getattr(_bridge._pools, "idle", None)

        seen.clear()
        other_pool = await in_thread(other_thread)
        assert seen[0] not in _bridge._pools.idle and other_pool == [seen[0]]
        gc.enable()
        _core._release_app_loop(loop)

    serve(main)


def check_watched_request_leaves_no_cycle():
    """A request that outlives WATCH_DELAY gets a pump, cancelled when the
    request ends; nothing of it may be left for the cyclic GC (which, under
    load, frees it only in a full collection)."""
    import gc

    import flask

    from flaskasync import _asgi

    app = flask.Flask("cycles")

    @app.get("/slow")
    async def slow():
        await asyncio.sleep(2 * _asgi.WATCH_DELAY)
        return "ok"

    asgi = flaskasync.ASGIApp(app)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/slow", "raw_path": b"/slow",
             "root_path": "", "query_string": b"", "headers": [],
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234)}

    async def main():
        client = ScriptedClient([b""], 0)
        await asyncio.wait_for(asgi(scope, client.receive, client.send), 10)
        assert client.status() == 200, client.sent

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    serve(main)
    gc.collect()
    kinds = {type(o).__name__ for o in gc.garbage}
    gc.set_debug(0)
    left = kinds & {"_RequestState", "Task", "CancelledError", "coroutine"}
    assert not left, f"left to the cyclic GC: {sorted(left)}"


def check_request_bodies():
    """Request bodies of ASGIApp against scripted clients: reads that start
    on receive() and go on through the pump (a body arriving for longer
    than WATCH_DELAY), a body cut off, the pump's read-ahead bound."""
    import gc
    import warnings

    import flask
    from werkzeug.exceptions import ClientDisconnected

    from flaskasync import _asgi

    app = flask.Flask("bodies")
    seen: dict = {}

    @app.post("/sync-read")
    def sync_read():
        try:
            seen["sync-read"] = len(flask.request.get_data())
        except ClientDisconnected:
            seen["sync-read"] = "cut off"
            raise
        return "ok"

    @app.post("/async-read")
    async def async_read():
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            seen["async-read"] = "cancelled"
            raise
        seen["async-read"] = len(flask.request.get_data())
        return "ok"

    @app.post("/sync-stream")
    def sync_stream():  # never reads its body

        def gen():
            for _ in range(20):
                yield b"x"
                time.sleep(0.01)

        return flask.Response(gen())

    asgi = flaskasync.ASGIApp(app)

    def scope(path, chunked):
        header = (b"transfer-encoding", b"chunked") if chunked else (b"content-length", b"60000")
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                "root_path": "", "query_string": b"", "headers": [header],
                "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234)}

    async def request(path, client, chunked=False):
        await asyncio.wait_for(asgi(scope(path, chunked), client.receive, client.send), 10)
        return client

    async def main():
        life_in: asyncio.Queue = asyncio.Queue()
        life_out: asyncio.Queue = asyncio.Queue()
        life = asyncio.ensure_future(asgi({"type": "lifespan"}, life_in.get, life_out.put))
        await life_in.put({"type": "lifespan.startup"})
        assert (await life_out.get())["type"] == "lifespan.startup.complete"
        chunks = [bytes([i]) * 10000 for i in range(6)]
        slow = 2 * _asgi.WATCH_DELAY / len(chunks)  # the body takes twice WATCH_DELAY

        # Reads go on through the pump once the request is watched.
        for path in ("/sync-read", "/async-read"):
            for chunked in (False, True):
                seen.clear()
                client = await request(path, ScriptedClient(chunks, slow), chunked)
                assert (client.status(), seen) == (200, {path[1:]: 60000}), (client.sent, seen)

        # Cut off once watched: never a short body taken for the whole.
        seen.clear()
        client = await request("/sync-read", ScriptedClient(chunks, slow, cut_after=4), True)
        assert seen == {"sync-read": "cut off"} and client.status() == 400, (seen, client.sent)
        seen.clear()
        client = await request("/async-read", ScriptedClient(chunks, slow, cut_after=4), True)
        assert seen == {"async-read": "cancelled"}, (seen, client.sent)

        # A body the view never reads: the pump reads ahead at most
        # READ_AHEAD bytes (and one message) of it.
        big = [b"b" * 16384] * 40
        client = await request("/sync-stream", ScriptedClient(big, 0))
        assert client.status() == 200 and client.body() == b"x" * 20, client.sent
        assert client.given * 16384 <= _asgi.READ_AHEAD + 16384, client.given

        await life_in.put({"type": "lifespan.shutdown"})
        assert (await life_out.get())["type"] == "lifespan.shutdown.complete"
        await life

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        serve(main)
        gc.collect()
    assert not caught, [str(w.message) for w in caught]


if __name__ == "__main__":
    globals()["check_" + sys.argv[1]]()
    print("OK")
