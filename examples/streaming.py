"""Streaming responses from async generators.

    flask --app examples/streaming:app run --with-threads
    curl -N http://127.0.0.1:5000/clock        # Ctrl-C: the generator's finally runs

- ``GET /count?n=5``: a view that *is* an async generator.
- ``GET /clock``: server-sent events from ``Response(async_gen, mimetype=...)``;
  when the client goes away the server closes the response, which closes the
  generator (``aclose``): its ``finally`` runs, and may ``await``.
- ``GET /feed``: chunks produced by concurrent tasks, via an asyncio.Queue.

The request context (``request``, ``g``, ``session``, ``url_for``) is
available in the generator at every step.
"""

from __future__ import annotations

import asyncio
import time

from flask import Flask, Response, g, request

from flaskasync import FlaskAsync

app = Flask(__name__)
FlaskAsync(app)
OPEN_STREAMS: set[int] = set()


@app.get("/count")
async def count():
    n = int(request.args.get("n", 5))
    for i in range(n):
        await asyncio.sleep(0.1)
        yield f"{i + 1}/{n} for {request.remote_addr}\n"


@app.get("/clock")
async def clock():
    g.stream_id = id(request)

    async def events():
        OPEN_STREAMS.add(g.stream_id)
        try:
            while True:
                yield f"data: {time.strftime('%H:%M:%S')}\n\n"
                await asyncio.sleep(1)
        finally:
            await asyncio.sleep(0)  # cleanup may await (close a connection, ...)
            OPEN_STREAMS.discard(g.stream_id)
            app.logger.info("client of %s left", request.path)

    return Response(events(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})


@app.get("/open-streams")
def open_streams():
    return {"open": len(OPEN_STREAMS)}


@app.get("/feed")
async def feed():
    queue: asyncio.Queue = asyncio.Queue()

    async def producer(name: str, delay: float):
        for i in range(3):
            await asyncio.sleep(delay)
            await queue.put(f"{name}{i}\n")

    producers = [asyncio.create_task(producer(n, d)) for n, d in (("a", 0.05), ("b", 0.08))]

    async def body():
        for _ in range(6):
            yield await queue.get()
        await asyncio.gather(*producers)

    return Response(body(), mimetype="text/plain")
