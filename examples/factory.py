"""An application factory with blueprints, class-based views, hooks, error
handlers and the per-request timeout.

    flask --app "examples/factory:create_app()" run --with-threads
"""

from __future__ import annotations

import asyncio

from flask import Blueprint, Flask, abort, g, jsonify, request
from flask.views import MethodView
from werkzeug.exceptions import GatewayTimeout

import flaskasync
from flaskasync import FlaskAsync

ext = FlaskAsync()
api = Blueprint("api", __name__, url_prefix="/api")
ITEMS = {1: "apple", 2: "pear"}


@api.before_request
async def authenticate():
    await asyncio.sleep(0)  # e.g. look the token up in an async store
    if request.headers.get("Authorization") != "Bearer demo":
        abort(401)
    g.user = "demo"


class ItemAPI(MethodView):
    async def get(self, item_id: int):
        await asyncio.sleep(0.01)
        if item_id not in ITEMS:
            abort(404, description=f"no item {item_id}")
        return jsonify(id=item_id, name=ITEMS[item_id], user=g.user)

    async def put(self, item_id: int):
        ITEMS[item_id] = request.get_json()["name"]
        return jsonify(id=item_id, name=ITEMS[item_id]), 201


api.add_url_rule("/items/<int:item_id>", view_func=ItemAPI.as_view("item"))


@api.get("/slow")
async def slow():
    await asyncio.sleep(10)  # longer than FLASKASYNC_TIMEOUT: 504
    return "never"


@api.get("/report")
@flaskasync.async_route(timeout=None)  # this one may take its time
async def report():
    await asyncio.sleep(0.2)
    return jsonify(report="done")


@api.errorhandler(404)
async def not_found(e):
    return jsonify(error=e.description), 404


def create_app(**config) -> Flask:
    app = Flask(__name__)
    app.config.update(FLASKASYNC_TIMEOUT=2.0, FLASKASYNC_SHUTDOWN_TIMEOUT=5.0)
    app.config.update(config)
    ext.init_app(app)
    app.register_blueprint(api)

    @app.errorhandler(GatewayTimeout)
    async def timed_out(e):
        return jsonify(error="timeout", view=getattr(e, "view", None)), 504

    @app.after_request
    async def add_header(response):
        response.headers["X-Served-By"] = "flaskasync"
        return response

    return app
