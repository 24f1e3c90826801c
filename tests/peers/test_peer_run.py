"""The same clients driven through flaskasync.run(): a client (or pool)
created once and reused by many later run() calls, one after the other and
from several threads at once.  That is what flaskasync is for: the app loop
outlives each call, so the client's connections do too.

flaskasync-only (asyncio has no process-wide loop driven from sync code),
except test_asyncio_run_cannot_reuse_a_client, the contrast: with a new loop
per call (asyncio.run, and asgiref under plain Flask), the same reuse fails.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

import flaskasync
import peerservers

httpx = peerservers.import_or_skip("httpx")
aiohttp = peerservers.import_or_skip("aiohttp")
aioredis = peerservers.import_or_skip("redis.asyncio")
asyncpg = peerservers.import_or_skip("asyncpg")

TIMEOUT = 60


def run(coro):
    return flaskasync.run(coro, timeout=TIMEOUT)


def from_threads(fn, threads=4, calls=25):
    """fn(thread_index, call_index) from `threads` threads, `calls` times each;
    the results, per thread."""

    def worker(t):
        return [fn(t, i) for i in range(calls)]

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(worker, range(threads)))


@pytest.mark.parametrize("scheme", ["plain", "tls"])
def test_httpx_client_across_run_calls(http_peer, scheme):
    base = http_peer.url if scheme == "plain" else http_peer.tls_url
    # Created in sync code, outside any loop; bound to the app loop on first use.
    client = httpx.AsyncClient(base_url=base, verify=http_peer.ssl_context(), timeout=30)
    try:
        ports = set()
        for i in range(50):
            body = run(client.get("/json", params={"x": i})).json()
            assert body["x"] == str(i)
            ports.add(body["client_port"])
        # One kept-alive connection served all 50 calls: the pool's
        # connection survived from one run() to the next.
        assert len(ports) == 1, ports

        async def get(t, i):
            r = await client.get("/json", params={"x": f"{t}-{i}"})
            return r.json()["x"]

        results = from_threads(lambda t, i: run(get(t, i)))
        assert results == [[f"{t}-{i}" for i in range(25)] for t in range(4)]

        # Streaming across calls: the response opened in one run() call is
        # read in later ones.
        stream_cm = client.stream("GET", "/big", params={"size": 1 << 20})
        response = run(stream_cm.__aenter__())
        chunks = response.aiter_bytes()
        received = b""
        while True:
            try:
                received += run(chunks.__anext__())
            except StopAsyncIteration:
                break
        run(stream_cm.__aexit__(None, None, None))
        from peer_httpd import big_body
        assert received == big_body(1 << 20)
    finally:
        run(client.aclose())


@pytest.mark.parametrize("scheme", ["plain", "tls"])
def test_aiohttp_session_across_run_calls(http_peer, scheme):
    base = http_peer.url if scheme == "plain" else http_peer.tls_url

    async def make():  # a ClientSession is created in a running loop
        connector = aiohttp.TCPConnector(ssl=http_peer.ssl_context(), limit=10)
        return aiohttp.ClientSession(base_url=base, connector=connector)

    session = run(make())
    try:
        async def get(x):
            async with session.get("/json", params={"x": x}) as r:
                assert r.status == 200
                return await r.json()

        bodies = [run(get(i)) for i in range(50)]
        assert [b["x"] for b in bodies] == [str(i) for i in range(50)]
        assert len({b["client_port"] for b in bodies}) == 1

        results = from_threads(lambda t, i: run(get(f"{t}-{i}"))["x"])
        assert results == [[f"{t}-{i}" for i in range(25)] for t in range(4)]
    finally:
        run(session.close())


def test_redis_client_across_run_calls(redis_peer):
    client = aioredis.Redis.from_url(redis_peer.url, decode_responses=True)
    key = "fa_run_redis"
    try:
        run(client.delete(key, f"{key}:chan"))
        ids = {run(client.client_id()) for _ in range(20)}
        assert len(ids) == 1, ids  # the same server connection every call

        values = from_threads(lambda t, i: run(client.incr(key)))
        assert sorted(v for per_thread in values for v in per_thread) == list(range(1, 101))
        assert run(client.get(key)) == "100"

        async def pipeline(n):
            async with client.pipeline(transaction=True) as pipe:
                for i in range(n):
                    pipe.rpush(f"{key}:list", i)
                return await pipe.execute()

        assert run(pipeline(100)) == list(range(1, 101))

        # A subscription made in one run() call; messages published and read
        # in later calls.  Between calls the app loop keeps the connection.
        pubsub = client.pubsub()
        run(pubsub.subscribe(f"{key}:chan"))
        assert run(pubsub.get_message(timeout=5))["type"] == "subscribe"
        for i in range(10):
            assert run(client.publish(f"{key}:chan", f"m{i}")) == 1
        got = [run(pubsub.get_message(timeout=5))["data"] for _ in range(10)]
        assert got == [f"m{i}" for i in range(10)]
        run(pubsub.unsubscribe())
        run(pubsub.aclose())
        run(client.delete(key, f"{key}:list"))
    finally:
        run(client.aclose())


def test_asyncpg_pool_across_run_calls(pg_peer):
    async def make():
        # Inside a coroutine: asyncpg's Pool() binds to asyncio.get_event_loop()
        # when it is constructed, which in the calling thread is not the app loop.
        return await asyncpg.create_pool(pg_peer.dsn, min_size=1, max_size=4)

    pool = run(make())
    listener = None
    try:
        assert [run(pool.fetchval("select $1::int + 1", i)) for i in range(50)] == list(range(1, 51))

        results = from_threads(lambda t, i: run(pool.fetchval("select $1::text", f"{t}-{i}")))
        assert results == [[f"{t}-{i}" for i in range(25)] for t in range(4)]
        pids = {run(pool.fetchval("select pg_backend_pid()")) for _ in range(20)}
        assert 1 <= len(pids) <= 4  # the pool's connections, reused

        async def tx(v):
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute("create temporary table if not exists t (v int)")
                    await conn.execute("insert into t values ($1)", v)
                    return await conn.fetchval("select count(*) from t")

        assert run(tx(1)) >= 1

        # LISTEN on a connection made in one call; NOTIFY from later calls;
        # the callbacks run on the app loop, between or during calls.
        listener = run(asyncpg.connect(pg_peer.dsn))
        got: list[str] = []
        lock = threading.Lock()

        def on_notify(conn, pid, channel, payload):
            with lock:
                got.append(payload)

        run(listener.add_listener("fa_run_chan", on_notify))
        for i in range(10):
            run(pool.execute("select pg_notify('fa_run_chan', $1)", f"n{i}"))

        async def wait_for_all():
            while len(got) < 10:
                await asyncio.sleep(0.01)

        run(asyncio.wait_for(wait_for_all(), 10))
        assert got == [f"n{i}" for i in range(10)]
    finally:
        if listener is not None:
            run(listener.close())
        run(pool.close())


def test_asyncio_run_cannot_reuse_a_client(http_peer):
    """The contrast: with a new loop per call, the client kept from the first
    call fails in the second (its pooled connection belongs to a closed loop)."""
    client = httpx.AsyncClient(base_url=http_peer.url)
    assert asyncio.run(client.get("/hello")).text == "hello"
    with pytest.raises(RuntimeError, match="Event loop is closed|attached to a different loop"):
        asyncio.run(client.get("/hello"))
    # The client cannot be closed now (its connection belongs to the closed
    # loop): drop it here rather than leave an unclosed-socket warning to
    # whichever test collects it.
    del client
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
