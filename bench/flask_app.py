"""The Flask app served by bench/bench_flask.py.

The view code is the same for both variants; only the runner of the async
views differs, chosen by the FLASKASYNC environment variable:

- ``FLASKASYNC=1``: ``FlaskAsync(app)`` is installed, so async views run on
  flaskasync's app loop;
- ``FLASKASYNC=0`` (default): plain Flask, whose async views go through
  asgiref's ``async_to_sync`` (a new thread and a new event loop per call).

Run by hand with, for example::

    FLASKASYNC=1 gunicorn -k gthread --threads 8 -w 1 --pythonpath bench flask_app:app
"""

from __future__ import annotations

import asyncio
import os

from flask import Flask, jsonify

USE_FLASKASYNC = os.environ.get("FLASKASYNC", "0").strip().lower() in ("1", "true", "yes", "on")

app = Flask(__name__)

if USE_FLASKASYNC:
    from flaskasync import FlaskAsync

    FlaskAsync(app)


@app.get("/sync")
def sync_view():
    """The baseline: a sync view."""
    return "ok"


@app.get("/async")
async def async_view():
    """A trivial async view: measures the cost of running a coroutine per request."""
    return "ok"


async def _work(i: int) -> int:
    await asyncio.sleep(0.001)
    return i


@app.get("/seed")
async def seed_view():
    """The seed view: 5 coroutines each sleeping 1 ms, gathered, jsonified."""
    results = await asyncio.gather(*(_work(i) for i in range(5)))
    return jsonify(results=results)


@app.get("/gather10")
async def gather10_view():
    """Gather 10 × sleep(0.001)."""
    results = await asyncio.gather(*(_work(i) for i in range(10)))
    return jsonify(n=len(results))


UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "")
_client = None


async def _fetch_all(client, n: int = 10) -> int:
    responses = await asyncio.gather(*(client.get(UPSTREAM_URL) for _ in range(n)))
    return sum(len(r.json()) for r in responses)


@app.get("/fanout")
async def fanout_view():
    """A view calling a service: 10 concurrent httpx GETs to a local upstream.

    On flaskasync one AsyncClient (and its keep-alive pool) is created once
    and shared by every request, as users write it.  Under Flask's default a
    shared client breaks on the second request ("Event loop is closed"), so
    each request must make (and close) its own client and connections: the
    only way that works there.
    """
    import httpx

    global _client
    if USE_FLASKASYNC:
        if _client is None:
            _client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=80))
        n = await _fetch_all(_client)
    else:
        async with httpx.AsyncClient() as client:
            n = await _fetch_all(client)
    return jsonify(fields=n)


@app.get("/_variant")
async def variant_view():
    """Which runner served this async view (checked by bench_flask.py before measuring)."""
    loop = asyncio.get_running_loop()
    return jsonify(
        flaskasync=USE_FLASKASYNC,
        loop=f"{type(loop).__module__}.{type(loop).__qualname__}",
        pid=os.getpid(),
    )
