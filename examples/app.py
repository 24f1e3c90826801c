"""The seed example: five one-second coroutines gathered in ~1.0 s.

Serve it with any of::

    flask --app examples/app:app run --with-threads
    gunicorn -k gthread --threads 8 -w 2 --chdir examples app:app
    cd examples && waitress-serve --listen=127.0.0.1:5000 --threads 8 app:app

then ``curl http://localhost:5000`` returns
``[{"x":0},{"x":1},{"x":2},{"x":3},{"x":4}]`` after about one second.
"""

import asyncio

from flask import Flask, jsonify

from flaskasync import FlaskAsync


async def send_notif(x: int):
    print(f"Called coro with {x}")
    await asyncio.sleep(1)
    return {"x": x}


app = Flask(__name__)
FlaskAsync(app)  # the one line: async views now run on flaskasync's app loop


@app.route("/")
async def notify():
    futures = [send_notif(x) for x in range(5)]
    results = await asyncio.gather(*futures)
    return jsonify(list(results))
