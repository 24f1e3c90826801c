"""Every place Flask runs a coroutine function goes through the app loop."""

from __future__ import annotations

import asyncio
import threading

import flask
import pytest
from flask import Blueprint, request
from flask.views import MethodView, View

import flaskasync
from fa_helpers import requires_flask_23


def on_app_loop() -> bool:
    return asyncio.get_running_loop() is flaskasync.get_loop()


@pytest.fixture
def calls():
    return []


def test_request_hooks_app_and_blueprint(app, client, calls):
    bp = Blueprint("bp", __name__)

    def hook(name):
        async def fn(*args):
            await asyncio.sleep(0)
            calls.append((name, on_app_loop(), flask.has_request_context()))
            return args[0] if "after" in name else None

        fn.__name__ = name.replace(".", "_")
        return fn

    app.before_request(hook("app.before"))
    app.after_request(hook("app.after"))
    app.teardown_request(hook("app.teardown"))
    app.teardown_appcontext(hook("app.teardown_appctx"))
    bp.before_request(hook("bp.before"))
    bp.after_request(hook("bp.after"))
    bp.teardown_request(hook("bp.teardown"))
    bp.before_app_request(hook("bp.before_app"))
    bp.after_app_request(hook("bp.after_app"))
    bp.teardown_app_request(hook("bp.teardown_app"))

    @bp.get("/view")
    async def view():
        calls.append(("view", on_app_loop(), True))

        @flask.after_this_request
        async def after_this(response):
            calls.append(("after_this_request", on_app_loop(), flask.has_request_context()))
            response.headers["X-After-This"] = "1"
            return response

        return "ok"

    app.register_blueprint(bp)
    response = client.get("/view")
    assert response.status_code == 200
    assert response.headers["X-After-This"] == "1"
    names = [name for name, _, _ in calls]
    assert names == [
        "app.before", "bp.before_app", "bp.before", "view",
        "after_this_request", "bp.after", "bp.after_app", "app.after",
        "bp.teardown", "bp.teardown_app", "app.teardown", "app.teardown_appctx",
    ]
    assert all(loop_ok for _, loop_ok, _ in calls), calls
    assert all(req for name, _, req in calls if name != "app.teardown_appctx")


def test_before_request_returning_a_response_short_circuits(app, client):
    @app.before_request
    async def gate():
        if request.args.get("deny"):
            return "denied", 403

    @app.get("/")
    async def index():
        return "open"

    assert client.get("/?deny=1").status_code == 403
    assert client.get("/").get_data(as_text=True) == "open"


def test_class_based_views(app, client):
    class Hello(View):
        methods = ["GET"]

        async def dispatch_request(self, name):
            await asyncio.sleep(0)
            return f"hello {name} {on_app_loop()}"

    class Items(MethodView):
        async def get(self, item_id):
            return {"get": item_id, "loop": on_app_loop()}

        async def post(self, item_id):
            return {"post": item_id, "json": request.get_json(), "loop": on_app_loop()}

        def delete(self, item_id):  # sync methods stay sync
            return {"deleted": item_id}

    bp = Blueprint("api", __name__, url_prefix="/api")
    bp.add_url_rule("/items/<int:item_id>", view_func=Items.as_view("items"))
    app.add_url_rule("/hello/<name>", view_func=Hello.as_view("hello"))
    app.register_blueprint(bp)

    assert client.get("/hello/bob").get_data(as_text=True) == "hello bob True"
    assert client.get("/api/items/3").get_json() == {"get": 3, "loop": True}
    assert client.post("/api/items/4", json={"a": 1}).get_json() == {"post": 4, "json": {"a": 1}, "loop": True}
    assert client.delete("/api/items/5").get_json() == {"deleted": 5}


def test_error_handlers_app_and_blueprint(app, client, calls):
    class Oops(Exception):
        pass

    bp = Blueprint("bp", __name__)

    @bp.errorhandler(Oops)
    async def bp_oops(e):
        calls.append(("bp", on_app_loop()))
        return f"bp handled {e}", 418

    @app.errorhandler(Oops)
    async def app_oops(e):
        calls.append(("app", on_app_loop()))
        return f"app handled {e}", 419

    @bp.app_errorhandler(404)
    async def not_found(e):
        calls.append(("404", on_app_loop()))
        return "nothing here", 404

    @bp.get("/bp")
    async def bp_view():
        raise Oops("in bp")

    @app.get("/app")
    async def app_view():
        raise Oops("in app")

    app.register_blueprint(bp)
    r = client.get("/bp")
    assert (r.status_code, r.get_data(as_text=True)) == (418, "bp handled in bp")
    r = client.get("/app")
    assert (r.status_code, r.get_data(as_text=True)) == (419, "app handled in app")
    r = client.get("/missing")
    assert (r.status_code, r.get_data(as_text=True)) == (404, "nothing here")
    assert calls == [("bp", True), ("app", True), ("404", True)]


def test_template_context_processors_app_and_blueprint(app, client):
    bp = Blueprint("bp", __name__)

    @app.context_processor
    async def app_proc():
        await asyncio.sleep(0)
        return {"a": "app" if on_app_loop() else "?"}

    @bp.context_processor
    async def bp_proc():
        return {"b": "bp" if on_app_loop() else "?"}

    @bp.app_context_processor
    async def bp_app_proc():
        return {"c": "bp-app" if on_app_loop() else "?"}

    @bp.get("/t")
    def t():
        return flask.render_template_string("{{ a }} {{ b }} {{ c }}")

    @app.get("/t2")
    def t2():
        return flask.render_template_string("{{ a }} {{ b|default('-') }} {{ c }}")

    app.register_blueprint(bp)
    assert client.get("/t").get_data(as_text=True) == "app bp bp-app"
    assert client.get("/t2").get_data(as_text=True) == "app - bp-app"


@requires_flask_23
def test_signals_with_async_receivers(app, client, calls):
    async def started(sender, **extra):
        calls.append(("request_started", on_app_loop(), flask.request.path))

    async def finished(sender, response, **extra):
        calls.append(("request_finished", on_app_loop(), response.status_code))

    async def exception(sender, exception, **extra):
        calls.append(("got_request_exception", on_app_loop(), type(exception).__name__))

    async def rendered(sender, template, context, **extra):
        calls.append(("template_rendered", on_app_loop(), context["x"]))

    async def torn_down(sender, **extra):
        calls.append(("appcontext_tearing_down", on_app_loop(), None))

    receivers = [
        (flask.request_started, started),
        (flask.request_finished, finished),
        (flask.got_request_exception, exception),
        (flask.template_rendered, rendered),
        (flask.appcontext_tearing_down, torn_down),
    ]
    for signal, receiver in receivers:
        signal.connect(receiver, app)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    try:

        @app.get("/ok")
        def ok():
            return flask.render_template_string("{{ x }}", x=7)

        @app.get("/fail")
        async def fail():
            raise KeyError("x")

        assert client.get("/ok").get_data(as_text=True) == "7"
        assert client.get("/fail").status_code == 500
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver, app)
    assert calls == [
        ("request_started", True, "/ok"),
        ("template_rendered", True, 7),
        ("request_finished", True, 200),
        ("appcontext_tearing_down", True, None),
        ("request_started", True, "/fail"),
        ("got_request_exception", True, "KeyError"),
        ("request_finished", True, 500),
        ("appcontext_tearing_down", True, None),
    ]


def test_copy_current_request_context_with_async_function(app, client):
    @app.get("/")
    def view():
        flask.session["user"] = "ann"
        results = []

        @flask.copy_current_request_context
        async def work():
            await asyncio.sleep(0.01)
            results.append((request.args["q"], flask.session["user"], on_app_loop()))

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return {"results": results}

    assert client.get("/?q=hi").get_json() == {"results": [["hi", "ann", True]]}


def test_blueprint_views_nested_blueprints(app, client):
    parent = Blueprint("parent", __name__, url_prefix="/p")
    child = Blueprint("child", __name__, url_prefix="/c")
    seen = []

    @child.before_request
    async def child_before():
        seen.append(request.blueprints)

    @child.get("/x")
    async def x():
        return flask.url_for("parent.child.x")

    parent.register_blueprint(child)
    app.register_blueprint(parent)
    assert client.get("/p/c/x").get_data(as_text=True) == "/p/c/x"
    assert seen == [["parent.child", "parent"]]


def test_async_teardown_appcontext_outside_a_request(app, calls):
    @app.teardown_appcontext
    async def teardown(exc):
        await asyncio.sleep(0)
        calls.append(("teardown_appcontext", on_app_loop(), flask.has_request_context()))

    with app.app_context():
        pass
    assert calls == [("teardown_appcontext", True, False)]
