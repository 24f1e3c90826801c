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

This example needs no third-party package: its client keeps a pool of
real keep-alive TCP connections (asyncio streams) to an upstream service,
which the app starts on its own loop on first use.  Like httpx's pool, the
connections, the Semaphore that bounds them and the single-flight cache of
in-flight requests (Futures shared by concurrent callers) are all bound to
the one app loop and shared by every request on every thread.

    flask --app examples/shared_client:app run --with-threads
"""

from __future__ import annotations

import asyncio
import json

from flask import Flask, jsonify

from flaskasync import FlaskAsync

app = Flask(__name__)
FlaskAsync(app)


async def _upstream(reader, writer):
    """The upstream service: one line in ("KEY\\n"), one JSON line out, 0.1 s later."""
    while line := await reader.readline():
        key = line.decode().strip()
        await asyncio.sleep(0.1)  # the service's own latency
        writer.write(json.dumps({"key": key, "value": key.upper()}).encode() + b"\n")
        await writer.drain()
    writer.close()


class UpstreamClient:
    """An async client with a pool of keep-alive connections."""

    def __init__(self, max_connections: int = 4) -> None:
        self._slots = asyncio.Semaphore(max_connections)  # bounds the pool
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._inflight: dict[str, asyncio.Future] = {}  # single-flight cache
        self._server: asyncio.Server | None = None
        self._start_lock = asyncio.Lock()
        self.calls = 0
        self.connections = 0

    async def _address(self):
        async with self._start_lock:
            if self._server is None:
                self._server = await asyncio.start_server(_upstream, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()

    async def _fetch(self, key: str) -> dict:
        async with self._slots:
            if self._idle:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(*await self._address())
                self.connections += 1
            self.calls += 1
            writer.write(key.encode() + b"\n")
            await writer.drain()
            answer = json.loads(await reader.readline())
            self._idle.append((reader, writer))  # back to the pool, kept alive
            return answer

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
    return jsonify(upstream_calls=client.calls, connections=client.connections)
