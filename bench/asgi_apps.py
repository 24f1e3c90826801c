"""The apps bench/bench_asgi.py serves: the same views as Flask (served by
flaskasync serve, the flaskasync gunicorn worker and gunicorn gthread) and
as Quart (served by uvicorn with uvloop and httptools).

- ``/seed``: the seed example's view (examples/app.py): five coroutines,
  each printing a line and sleeping one second, gathered, jsonified;
- ``/async``: a trivial async view;
- ``/gather10``: ten ``asyncio.sleep(0.001)`` gathered;
- ``/sync``: a trivial sync view.
"""

from __future__ import annotations

import asyncio

from flask import Flask, jsonify

from flaskasync import FlaskAsync

app = Flask(__name__)
FlaskAsync(app)


async def send_notif(x: int):
    print(f"Called coro with {x}")
    await asyncio.sleep(1)
    return {"x": x}


async def _work(i: int) -> int:
    await asyncio.sleep(0.001)
    return i


@app.route("/seed")
async def seed():
    futures = [send_notif(x) for x in range(5)]
    results = await asyncio.gather(*futures)
    return jsonify(list(results))


@app.get("/async")
async def async_view():
    return "ok"


@app.get("/gather10")
async def gather10():
    results = await asyncio.gather(*(_work(i) for i in range(10)))
    return jsonify(results=results)


@app.get("/sync")
def sync_view():
    return "ok"


def make_quart_app():
    import quart

    qapp = quart.Quart(__name__)

    @qapp.route("/seed")
    async def q_seed():
        futures = [send_notif(x) for x in range(5)]
        results = await asyncio.gather(*futures)
        return quart.jsonify(list(results))

    @qapp.get("/async")
    async def q_async():
        return "ok"

    @qapp.get("/gather10")
    async def q_gather10():
        results = await asyncio.gather(*(_work(i) for i in range(10)))
        return quart.jsonify(results=results)

    @qapp.get("/sync")
    def q_sync():  # Quart runs sync views in its executor
        return "ok"

    return qapp


try:
    quart_app = make_quart_app()
except ImportError:  # pragma: no cover - Quart is installed by the benchmark
    quart_app = None
