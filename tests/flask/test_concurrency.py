"""Many threads, one app loop: shared loop-bound objects work across requests."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import request



def hammer(app, paths, threads=16):
    """GET every path from a pool of threads, each with its own test client."""
    local = threading.local()

    def get(path):
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = app.test_client()
        r = client.get(path)
        return r.status_code, r.get_data(as_text=True)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(get, paths))


def test_many_concurrent_requests_from_many_threads(app):
    @app.get("/echo/<int:n>")
    async def echo(n):
        await asyncio.sleep(0.001 * (n % 5))
        results = await asyncio.gather(*(asyncio.sleep(0, i) for i in range(3)))
        return f"{n}:{request.path}:{sum(results)}"

    @app.get("/sync/<int:n>")
    def sync(n):
        return f"{n}:sync"

    paths = [f"/echo/{n}" if n % 3 else f"/sync/{n}" for n in range(600)]
    results = hammer(app, paths, threads=32)
    for n, (status, body) in enumerate(results):
        assert status == 200
        assert body == (f"{n}:/echo/{n}:3" if n % 3 else f"{n}:sync")


def test_waiting_requests_overlap_on_the_one_loop(app):
    @app.get("/wait")
    async def wait():
        await asyncio.sleep(0.2)
        return "ok"

    t0 = time.monotonic()
    results = hammer(app, ["/wait"] * 20, threads=20)
    elapsed = time.monotonic() - t0
    assert results == [(200, "ok")] * 20
    assert elapsed < 1.0, f"20 concurrent 0.2 s views took {elapsed:.2f} s"


class Shared:
    """Loop-bound asyncio objects created once, at import time (before any loop runs)."""

    lock = asyncio.Lock()
    queue: asyncio.Queue = asyncio.Queue()
    counter = 0
    future = None


def test_module_level_lock_shared_by_concurrent_requests(app):
    Shared.counter = 0

    @app.post("/incr")
    async def incr():
        async with Shared.lock:
            value = Shared.counter
            await asyncio.sleep(0)  # without the lock, increments would be lost
            Shared.counter = value + 1
        return str(value)

    results = hammer_post(app, "/incr", 200, threads=16)
    assert sorted(int(body) for _, body in results) == list(range(200))
    assert Shared.counter == 200


def hammer_post(app, path, n, threads):
    def post(_):
        r = app.test_client().post(path)
        return r.status_code, r.get_data(as_text=True)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, range(n)))


def test_module_level_queue_between_producer_and_consumer_requests(app):
    @app.post("/put/<item>")
    async def put(item):
        await Shared.queue.put(item)
        return "queued"

    @app.get("/get")
    async def get():
        return await asyncio.wait_for(Shared.queue.get(), 5)

    with ThreadPoolExecutor(20) as pool:
        consumers = [pool.submit(app.test_client().get, "/get") for _ in range(10)]
        time.sleep(0.05)  # the consumers are waiting on the queue now
        producers = [pool.submit(app.test_client().post, f"/put/item{i}") for i in range(10)]
        assert all(p.result().status_code == 200 for p in producers)
        got = sorted(c.result().get_data(as_text=True) for c in consumers)
    assert got == sorted(f"item{i}" for i in range(10))


def test_future_created_by_one_request_resolved_by_another(app):
    Shared.future = None

    def shared_future():
        if Shared.future is None:
            Shared.future = asyncio.get_running_loop().create_future()
        return Shared.future

    @app.get("/wait")
    async def wait():
        return await asyncio.wait_for(asyncio.shield(shared_future()), 5)

    @app.post("/resolve/<value>")
    async def resolve(value):
        shared_future().set_result(value)
        return "resolved"

    with ThreadPoolExecutor(12) as pool:
        waiters = [pool.submit(app.test_client().get, "/wait") for _ in range(10)]
        time.sleep(0.05)
        assert app.test_client().post("/resolve/hello").status_code == 200
        assert [w.result().get_data(as_text=True) for w in waiters] == ["hello"] * 10


def test_client_created_lazily_and_reused_like_a_connection_pool(app):
    """The shape of httpx.AsyncClient / aiohttp.ClientSession reuse: an object
    holding loop-bound state (here a Semaphore and an Event), created on first
    use by one request and used by every later request on every thread."""

    class FakeAsyncClient:
        instances = 0

        def __init__(self):
            FakeAsyncClient.instances += 1
            self.loop = asyncio.get_running_loop()
            self.slots = asyncio.Semaphore(4)
            self.ready = asyncio.Event()
            self.ready.set()

        async def get(self, what):
            assert asyncio.get_running_loop() is self.loop, "attached to a different loop"
            await self.ready.wait()
            async with self.slots:
                await asyncio.sleep(0.001)
                return what.upper()

    holder = {}

    async def get_client():
        if "c" not in holder:
            holder["c"] = FakeAsyncClient()
        return holder["c"]

    @app.get("/fetch/<what>")
    async def fetch(what):
        client = await get_client()
        return await client.get(what)

    results = hammer(app, [f"/fetch/x{i}" for i in range(100)], threads=16)
    assert [body for _, body in results] == [f"X{i}" for i in range(100)]
    assert FakeAsyncClient.instances == 1


def test_plain_flask_would_fail_with_these_shared_objects():
    """The reference: Flask's default (asgiref) gives each call a new loop,
    so the shared lock breaks; under flaskasync it works (tests above)."""
    pytest.importorskip("asgiref")
    import flask

    app = flask.Flask("plain")
    holder = {}

    @app.get("/")
    async def view():
        if "fut" not in holder:
            holder["fut"] = asyncio.get_running_loop().create_future()
            return "created"
        await holder["fut"]

    client = app.test_client()
    assert client.get("/").get_data(as_text=True) == "created"
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError, match="attached to a different loop"):
        client.get("/")
