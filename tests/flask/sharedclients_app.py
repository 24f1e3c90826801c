"""The app of test_shared_clients.py: async views sharing one httpx.AsyncClient
(plain and TLS), one redis.asyncio client and one asyncpg pool, each created
once per process and used by every request on every worker thread.

Environment:
    SHARED_MODE   flaskasync (default): flaskasync.Flask, every async view on
                  the process's one app loop;
                  asgiref: a plain flask.Flask, Flask's default (a new loop
                  per call), which the clients do not survive;
                  loop-thread: a plain flask.Flask whose async views run on
                  one asyncio loop in a thread of its own (a reference: the
                  same property by other means, with asyncio's loop).
    PEER_HTTP_URL, PEER_HTTPS_URL, PEER_CA, PEER_REDIS_URL, PEER_PG_DSN: the peers.

Each client's creation prints "sharedclients: created KIND in pid PID" to
stderr, so the test can check that each worker made each one once.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import ssl
import sys
import threading

import asyncpg
import flask
import httpx
import redis.asyncio as aioredis

MODE = os.environ.get("SHARED_MODE", "flaskasync")

if MODE == "flaskasync":
    import flaskasync

    app = flaskasync.Flask(__name__)
elif MODE == "asgiref":
    app = flask.Flask(__name__)
elif MODE == "loop-thread":
    app = flask.Flask(__name__)
    _ref_loop = asyncio.new_event_loop()
    threading.Thread(target=_ref_loop.run_forever, name="ref-loop", daemon=True).start()

    def _on_ref_loop(func):
        def wrapper(*args, **kwargs):
            return asyncio.run_coroutine_threadsafe(func(*args, **kwargs), _ref_loop).result()

        return wrapper

    app.async_to_sync = _on_ref_loop
else:
    raise ValueError(f"SHARED_MODE={MODE!r}")


def created(kind: str) -> None:
    print(f"sharedclients: created {kind} in pid {os.getpid()}", file=sys.stderr, flush=True)


# Created once, at import (in each worker: no --preload).  Neither binds to a
# loop before its first use.
limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
http = httpx.AsyncClient(base_url=os.environ["PEER_HTTP_URL"], limits=limits, timeout=30)
created("httpx-plain")
https = httpx.AsyncClient(base_url=os.environ["PEER_HTTPS_URL"], limits=limits, timeout=30,
                          verify=ssl.create_default_context(cafile=os.environ["PEER_CA"]))
created("httpx-tls")
rds = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
    os.environ["PEER_REDIS_URL"], max_connections=16, timeout=30, decode_responses=True))
created("redis")

# The asyncpg pool is made lazily, by the first request that needs it; the
# requests that arrive meanwhile wait for the same creation.
_pool_creation = None


async def pg_pool() -> asyncpg.Pool:
    global _pool_creation
    if _pool_creation is None:
        created("asyncpg-pool")
        _pool_creation = asyncio.ensure_future(
            asyncpg.create_pool(os.environ["PEER_PG_DSN"], min_size=1, max_size=8))
    return await _pool_creation


async def do_http(n: int, client=None) -> dict:
    r = await (client or http).get("/json", params={"x": n})
    r.raise_for_status()
    body = r.json()
    return {"x": body["x"], "scheme": body["scheme"]}


async def do_redis(n: int) -> dict:
    async with rds.pipeline(transaction=True) as pipe:
        pipe.set(f"shared:{n}", n, ex=60)
        pipe.get(f"shared:{n}")
        pipe.incr("shared:count")
        ok, value, _count = await pipe.execute()
    return {"x": value}


async def do_pg(n: int) -> dict:
    pool = await pg_pool()
    return {"x": await pool.fetchval("select $1::int * 2", n)}


@app.get("/http/<int:n>")
async def http_view(n):
    return await do_http(n)


@app.get("/https/<int:n>")
async def https_view(n):
    return await do_http(n, https)


@app.get("/redis/<int:n>")
async def redis_view(n):
    return await do_redis(n)


@app.get("/pg/<int:n>")
async def pg_view(n):
    return await do_pg(n)


@app.get("/all/<int:n>")
async def all_view(n):
    h, s, r, p = await asyncio.gather(do_http(n), do_http(n, https), do_redis(n), do_pg(n))
    return {"http": h, "https": s, "redis": r, "pg": p}


@app.get("/pid")
def pid():
    return str(os.getpid())


async def _close_all():
    await http.aclose()
    await https.aclose()
    await rds.aclose()
    if _pool_creation is not None and _pool_creation.done() and not _pool_creation.exception():
        await asyncio.wait_for(_pool_creation.result().close(), 10)
    print(f"sharedclients: closed the clients in pid {os.getpid()}", file=sys.stderr, flush=True)


if MODE == "flaskasync":
    # At exit (gunicorn's SIGTERM is a normal exit of each worker), close the
    # clients on the app loop, which is still there: atexit runs handlers
    # last-registered-first, so this runs after flaskasync's background-task
    # shutdown (registered on first use of the loop) and before flaskasync's
    # own stop of the app loop (registered when flaskasync was imported).
    atexit.register(lambda: flaskasync.run(_close_all(), timeout=15))
