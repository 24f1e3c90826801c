"""One client object, created once, used by every request on every thread.

Under Flask's default, every async call gets a new event loop, so an
``httpx.AsyncClient``, ``aiohttp.ClientSession``, ``redis.asyncio`` client or
``asyncpg`` pool kept across requests fails with "Event loop is closed" or
"attached to a different loop".  With flaskasync there is one app loop per
process, so the usual pattern just works::

    client = httpx.AsyncClient(base_url="https://api.example.com")   # once

    @app.get("/user/<int:uid>")
    async def user(uid):
        return (await client.get(f"/users/{uid}")).json()

(flaskasync's loop does not implement network I/O yet, so this example uses
a stand-in client built from the same loop-bound parts those libraries
hold: a Semaphore limiting concurrent "connections", a cache of in-flight
requests as Futures shared by concurrent callers, and a Lock.)

    flask --app examples/shared_client:app run --with-threads
"""

from __future__ import annotations

import asyncio

from flask import Flask, jsonify

from flaskasync import FlaskAsync

app = Flask(__name__)
FlaskAsync(app)


class UpstreamClient:
    """Stands for an async HTTP client with a connection pool."""

    def __init__(self, max_connections: int = 4) -> None:
        self._slots = asyncio.Semaphore(max_connections)  # the "pool"
        self._inflight: dict[str, asyncio.Future] = {}  # single-flight cache
        self._stats_lock = asyncio.Lock()
        self.calls = 0

    async def _fetch(self, key: str) -> dict:
        async with self._slots:
            async with self._stats_lock:
                self.calls += 1
            await asyncio.sleep(0.1)  # the network round trip
            return {"key": key, "value": key.upper()}

    async def get(self, key: str) -> dict:
        """Concurrent requests for the same key share one upstream call."""
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._fetch(key))
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(future)


client = UpstreamClient()  # created once, at import


@app.get("/item/<key>")
async def item(key: str):
    return jsonify(await client.get(key))


@app.get("/stats")
async def stats():
    return jsonify(upstream_calls=client.calls)
