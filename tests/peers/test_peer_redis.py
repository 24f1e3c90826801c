"""redis.asyncio against a real redis-server, on flaskasync's loop and on
asyncio's (the `loop` fixture's two params)."""

from __future__ import annotations

import asyncio
import time

import pytest

import peerservers

aioredis = peerservers.import_or_skip("redis.asyncio")
import redis.exceptions  # noqa: E402  (after the skip above)
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402


def client(peer, max_connections=None, url=None):
    """A client with a pool that waits for a free connection when all
    max_connections are in use (redis.asyncio's default pool raises)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url or peer.url, decode_responses=True, max_connections=max_connections or 50, timeout=20)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def test_commands(arun, redis_peer, unique):
    async def main():
        r = client(redis_peer)
        try:
            assert await r.ping() is True
            assert await r.set(f"{unique}:s", "välue") is True
            assert await r.get(f"{unique}:s") == "välue"
            assert await r.incr(f"{unique}:n") == 1
            assert await r.incrby(f"{unique}:n", 41) == 42
            await r.hset(f"{unique}:h", mapping={"a": "1", "b": "2"})
            assert await r.hgetall(f"{unique}:h") == {"a": "1", "b": "2"}
            await r.rpush(f"{unique}:l", *map(str, range(10)))
            assert await r.lrange(f"{unique}:l", 0, -1) == [str(i) for i in range(10)]
            assert await r.set(f"{unique}:e", "x", px=200) is True
            assert 0 < await r.pttl(f"{unique}:e") <= 200
            # A 2 MiB value each way: more than one read and one write.
            big = "x" * (2 * 1024 * 1024)
            await r.set(f"{unique}:big", big)
            assert await r.get(f"{unique}:big") == big
            assert await r.mget(f"{unique}:s", f"{unique}:missing") == ["välue", None]
            with pytest.raises(redis.exceptions.ResponseError):
                await r.incr(f"{unique}:s")  # not an integer: the server's error
            assert await r.delete(f"{unique}:s", f"{unique}:n", f"{unique}:h", f"{unique}:l",
                                  f"{unique}:big") == 5
        finally:
            await r.aclose()

    arun(main())


def test_pipeline_and_transaction(arun, redis_peer, unique):
    async def main():
        r = client(redis_peer)
        try:
            async with r.pipeline(transaction=True) as pipe:
                for i in range(1000):
                    pipe.rpush(unique, i)
                pipe.llen(unique)
                pipe.lrange(unique, 0, 4)
                results = await pipe.execute()
            assert results[:1000] == list(range(1, 1001))
            assert results[1000:] == [1000, ["0", "1", "2", "3", "4"]]

            # WATCH / MULTI: an optimistic transaction that another client breaks.
            other = client(redis_peer)
            try:
                async with r.pipeline(transaction=True) as pipe:
                    await pipe.watch(unique)
                    assert await pipe.llen(unique) == 1000  # immediate mode after watch
                    await other.rpush(unique, "intruder")
                    pipe.multi()
                    pipe.rpush(unique, "mine")
                    with pytest.raises(redis.exceptions.WatchError):
                        await pipe.execute()
            finally:
                await other.aclose()
            assert await r.llen(unique) == 1001

            # A non-transactional pipeline: one round trip for many commands.
            async with r.pipeline(transaction=False) as pipe:
                for i in range(500):
                    pipe.set(f"{unique}:{i}", i)
                for i in range(500):
                    pipe.get(f"{unique}:{i}")
                results = await pipe.execute()
            assert results == [True] * 500 + [str(i) for i in range(500)]
            await r.delete(unique, *(f"{unique}:{i}" for i in range(500)))
        finally:
            await r.aclose()

    arun(main())


def test_many_concurrent_commands_on_one_client(arun, redis_peer, unique):
    async def main():
        r = client(redis_peer, max_connections=20)
        try:
            values = await asyncio.gather(*(r.incr(unique) for _ in range(1000)))
            assert sorted(values) == list(range(1, 1001))
            # Blocking commands hold their connection: 10 BLPOPs wait at once
            # (10 connections), and 10 pushes from the same client wake them.
            waiters = [asyncio.ensure_future(r.blpop([f"{unique}:q{i}"], timeout=10)) for i in range(10)]
            await asyncio.sleep(0.2)
            assert not any(w.done() for w in waiters)
            t0 = time.monotonic()
            for i in range(10):
                await r.rpush(f"{unique}:q{i}", f"item{i}")
            got = await asyncio.gather(*waiters)
            assert [list(g) for g in got] == [[f"{unique}:q{i}", f"item{i}"] for i in range(10)]
            assert time.monotonic() - t0 < 5
            await r.delete(unique)
        finally:
            await r.aclose()

    arun(main())


def test_pubsub(arun, redis_peer, unique):
    async def main():
        sub = client(redis_peer)
        pub = client(redis_peer)
        pubsub = sub.pubsub()
        try:
            await pubsub.subscribe(f"{unique}:chan")
            await pubsub.psubscribe(f"{unique}:pat:*")
            kinds = []
            for _ in range(2):
                msg = await pubsub.get_message(timeout=5)
                kinds.append(msg["type"])
            assert sorted(kinds) == ["psubscribe", "subscribe"]

            async def publish():
                for i in range(100):
                    assert await pub.publish(f"{unique}:chan", f"m{i}") == 1
                assert await pub.publish(f"{unique}:pat:x", "by pattern") == 1
                assert await pub.publish(f"{unique}:chan", "stop") == 1

            publisher = asyncio.ensure_future(publish())
            received = []
            async for msg in pubsub.listen():
                if msg["type"] == "message" and msg["data"] == "stop":
                    break
                received.append((msg["type"], msg["channel"], msg["data"]))
            await publisher
            assert received == [("message", f"{unique}:chan", f"m{i}") for i in range(100)] + [
                ("pmessage", f"{unique}:pat:x", "by pattern")]

            # Waiting with nothing published times out cleanly.
            t0 = time.monotonic()
            assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
            assert time.monotonic() - t0 >= 0.25
            await pubsub.unsubscribe()
            await pubsub.punsubscribe()
        finally:
            await pubsub.aclose()
            await sub.aclose()
            await pub.aclose()

    arun(main())


def test_unix_socket(arun, redis_peer, unique):
    async def main():
        r = client(redis_peer, max_connections=20, url=f"unix://{redis_peer.unix_path}")
        try:
            assert await r.ping() is True
            big = "u" * (1024 * 1024)
            await r.set(unique, big)
            assert await r.get(unique) == big
            values = await asyncio.gather(*(r.incr(f"{unique}:n") for _ in range(200)))
            assert sorted(values) == list(range(1, 201))
            info = await r.client_info()
            assert "U" in info["flags"] and info["laddr"].startswith(redis_peer.unix_path), info
            await r.delete(unique, f"{unique}:n")
        finally:
            await r.aclose()

    arun(main())


def test_connection_refused(arun):
    port = peerservers.free_port()

    async def main():
        r = aioredis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
        try:
            with pytest.raises(redis.exceptions.ConnectionError):
                await r.ping()
        finally:
            await r.aclose()

    arun(main())
