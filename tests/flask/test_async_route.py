"""@flaskasync.async_route: the per-route form, for apps without FlaskAsync."""

from __future__ import annotations

import asyncio

import flask
import pytest
from flask import request
from flask.views import MethodView

import flaskasync


@pytest.fixture
def plain_app():
    app = flask.Flask("plain")
    app.config["TESTING"] = True

    def no_asgiref(func):
        raise AssertionError(f"Flask's own async_to_sync was used for {func}")

    app.async_to_sync = no_asgiref
    return app


def test_async_route_runs_on_the_app_loop_without_the_extension(plain_app):
    @plain_app.get("/")
    @flaskasync.async_route
    async def index():
        await asyncio.sleep(0)
        return {"loop": asyncio.get_running_loop() is flaskasync.get_loop(), "q": request.args["q"]}

    assert "flaskasync" not in plain_app.extensions
    assert plain_app.test_client().get("/?q=1").get_json() == {"loop": True, "q": "1"}
    assert index.__name__ == "index" and index.__wrapped__.__name__ == "index"


def test_async_route_streams_async_generators(plain_app):
    @plain_app.get("/gen")
    @flaskasync.async_route
    async def gen_view():
        for i in range(3):
            yield str(i)

    @plain_app.get("/returns")
    @flaskasync.async_route
    async def returns():
        async def gen():
            yield request.path

        return flask.Response(gen(), mimetype="text/plain")

    client = plain_app.test_client()
    assert client.get("/gen").get_data(as_text=True) == "012"
    r = client.get("/returns")
    assert r.get_data(as_text=True) == "/returns" and r.mimetype == "text/plain"


def test_async_route_timeout(plain_app):
    @plain_app.get("/slow")
    @flaskasync.async_route(timeout=0.05)
    async def slow():
        await asyncio.sleep(5)

    assert plain_app.test_client().get("/slow").status_code == 504


def test_async_route_uses_app_timeout_and_can_opt_out(app, client):
    app.config["FLASKASYNC_TIMEOUT"] = 0.05

    @app.get("/default")
    @flaskasync.async_route
    async def default():
        await asyncio.sleep(0.2)
        return "late"

    @app.get("/long-poll")
    @flaskasync.async_route(timeout=None)
    async def long_poll():
        await asyncio.sleep(0.2)
        return "worth the wait"

    assert client.get("/default").status_code == 504
    assert client.get("/long-poll").get_data(as_text=True) == "worth the wait"


def test_async_route_on_method_view_methods(plain_app):
    class Item(MethodView):
        @flaskasync.async_route
        async def get(self, n):
            return {"n": n, "loop": asyncio.get_running_loop() is flaskasync.get_loop()}

    plain_app.add_url_rule("/item/<int:n>", view_func=Item.as_view("item"))
    assert plain_app.test_client().get("/item/5").get_json() == {"n": 5, "loop": True}


def test_async_route_misuse():
    with pytest.raises(TypeError, match="async def"):

        @flaskasync.async_route
        def not_async():
            pass

    with pytest.raises(ValueError, match="timeout"):
        flaskasync.async_route(timeout=-1)
