"""Error paths: exceptions reach Flask's error handling; abort; timeouts."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback

import flask
import pytest
from flask import abort
from flask.views import MethodView
from werkzeug.exceptions import GatewayTimeout

import flaskasync
from flaskasync import ViewTimeout
from fa_helpers import make_app, wait_for


async def deep_failure():
    await asyncio.sleep(0)
    raise ValueError("deep failure")


def test_exception_reaches_error_handler_with_traceback(app, client):
    captured = {}

    @app.errorhandler(ValueError)
    def handle(e):
        captured["tb"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return f"handled: {e}", 400

    @app.get("/")
    async def view():
        await deep_failure()

    r = client.get("/")
    assert (r.status_code, r.get_data(as_text=True)) == (400, "handled: deep failure")
    tb = captured["tb"]
    assert "in view" in tb and "in deep_failure" in tb
    assert 'raise ValueError("deep failure")' in tb


def test_unhandled_exception_is_a_logged_500(caplog):
    app = make_app("err500", PROPAGATE_EXCEPTIONS=False)

    @app.get("/boom")
    async def boom():
        await deep_failure()

    with caplog.at_level(logging.ERROR):
        r = app.test_client().get("/boom")
    assert r.status_code == 500
    records = [rec for rec in caplog.records if rec.name == app.name]
    assert len(records) == 1 and "Exception on /boom [GET]" in records[0].getMessage()
    exc_type, exc, tb = records[0].exc_info
    assert exc_type is ValueError
    frames = [f.name for f in traceback.extract_tb(tb)]
    assert "boom" in frames and "deep_failure" in frames


def test_exception_propagates_in_testing_mode(client, app):
    @app.get("/")
    async def view():
        await deep_failure()

    with pytest.raises(ValueError, match="deep failure"):
        client.get("/")


def test_abort_404_in_async_view_and_async_handler(app, client):
    @app.errorhandler(404)
    async def not_found(e):
        await asyncio.sleep(0)
        return {"error": e.description}, 404

    @app.get("/item/<int:n>")
    async def item(n):
        await asyncio.sleep(0)
        if n > 3:
            abort(404, description=f"no item {n}")
        return {"item": n}

    assert client.get("/item/2").get_json() == {"item": 2}
    r = client.get("/item/9")
    assert r.status_code == 404 and r.get_json() == {"error": "no item 9"}


def test_abort_in_async_before_request(app, client):
    @app.before_request
    async def guard():
        if flask.request.headers.get("X-Token") != "ok":
            abort(401)

    @app.get("/")
    async def view():
        return "in"

    assert client.get("/").status_code == 401
    assert client.get("/", headers={"X-Token": "ok"}).get_data(as_text=True) == "in"


def test_exception_in_async_after_request_is_a_500():
    app = make_app("after500", PROPAGATE_EXCEPTIONS=False)

    @app.after_request
    async def broken(response):
        raise RuntimeError("after_request broke")

    @app.get("/")
    async def view():
        return "x"

    assert app.test_client().get("/").status_code == 500


def test_timeout_cancels_view_and_answers_504(caplog):
    app = make_app("timeout", FLASKASYNC_TIMEOUT=0.2)
    state = {}

    @app.get("/slow")
    async def slow():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        finally:
            state["finally"] = True
        return "late"

    @app.get("/fast")
    async def fast():
        await asyncio.sleep(0.01)
        return "fast"

    client = app.test_client()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        r = client.get("/slow")
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    assert 0.18 < elapsed < 1.0
    assert state == {"cancelled": True, "finally": True}
    assert any("slow did not finish within 0.2 s" in rec.getMessage() for rec in caplog.records)
    assert client.get("/fast").get_data(as_text=True) == "fast"


def test_timeout_goes_through_error_handlers():
    app = make_app("timeout-handler", FLASKASYNC_TIMEOUT=0.05)
    caught = []

    @app.errorhandler(504)
    async def on_timeout(e):
        caught.append(e)
        return {"timeout": e.timeout, "view": e.view}, 504

    @app.get("/slow")
    async def slow():
        await asyncio.sleep(5)

    r = app.test_client().get("/slow")
    assert r.status_code == 504 and r.get_json() == {"timeout": 0.05, "view": "slow"}
    assert isinstance(caught[0], ViewTimeout) and isinstance(caught[0], GatewayTimeout)


def test_timeout_applies_to_views_not_hooks():
    app = make_app("timeout-scope", FLASKASYNC_TIMEOUT=0.05)

    @app.before_request
    async def slow_hook():
        await asyncio.sleep(0.15)

    @app.get("/")
    async def view():
        return "ok"

    assert app.test_client().get("/").get_data(as_text=True) == "ok"


def test_timeout_for_class_based_views():
    app = make_app("timeout-cbv", FLASKASYNC_TIMEOUT=0.05)

    class Slow(MethodView):
        async def get(self):
            await asyncio.sleep(5)

    app.add_url_rule("/slow", view_func=Slow.as_view("slow"))
    assert app.test_client().get("/slow").status_code == 504


def test_timeout_leaves_background_tasks_running():
    app = make_app("timeout-bg", FLASKASYNC_TIMEOUT=0.05)
    done = []

    @app.get("/slow")
    async def slow():
        async def child():
            await asyncio.sleep(0.1)
            done.append(True)

        asyncio.create_task(child())
        await asyncio.sleep(5)

    assert app.test_client().get("/slow").status_code == 504
    wait_for(lambda: done)


def test_view_catching_its_own_timeout_error_is_not_a_504(app, client):
    @app.errorhandler(TimeoutError)
    def handle(e):
        return "own timeout", 500

    app.config["FLASKASYNC_TIMEOUT"] = 5

    @app.get("/")
    async def view():
        await asyncio.wait_for(asyncio.sleep(1), 0.01)

    r = client.get("/")
    assert (r.status_code, r.get_data(as_text=True)) == (500, "own timeout")


def test_spawn_misuse_errors():
    async def coro_fn():
        pass

    with pytest.raises(TypeError, match="forget to call it"):
        flaskasync.spawn(coro_fn)
    with pytest.raises(TypeError, match="coroutine object"):
        flaskasync.spawn(42)
    with pytest.raises(TypeError, match="name must be a str"):
        flaskasync.spawn(coro_fn(), name=3)
