"""request, session, g, current_app, url_for, flash inside async views and
the tasks they gather or create; stream_with_context with async views."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import flask
import pytest
from flask import Response, current_app, g, request, session, stream_with_context, url_for

import flaskasync
from fa_helpers import wait_for
from flaskasync import _flaskcompat


def snapshot(tag):
    return {
        "tag": tag,
        "path": request.path,
        "q": request.args.get("q"),
        "json": request.get_json(silent=True),
        "user": session.get("user"),
        "g": getattr(g, "marker", None),
        "app": current_app.name,
        "url": url_for("ctx_view", _external=True),
    }


def test_context_in_view_and_in_gathered_and_created_tasks(app, client):
    @app.before_request
    async def mark():
        g.marker = "from-before-request"

    @app.post("/ctx", endpoint="ctx_view")
    async def ctx_view():
        session["user"] = "ann"

        async def child(tag):
            await asyncio.sleep(0.01)
            return snapshot(tag)

        gathered = await asyncio.gather(child("gather-1"), child("gather-2"))
        fa_gathered = await flaskasync.gather(child("fa-gather"))
        created = await asyncio.create_task(child("task"))
        return {"view": snapshot("view"), "others": [*gathered, *fa_gathered, created]}

    body = client.post("/ctx?q=42", json={"k": "v"}).get_json()
    expected = {
        "path": "/ctx", "q": "42", "json": {"k": "v"}, "user": "ann",
        "g": "from-before-request", "app": app.name, "url": "http://localhost/ctx",
    }
    for snap in [body["view"], *body["others"]]:
        tag = snap.pop("tag")
        assert snap == expected, tag


def test_background_task_sees_request_after_the_response(app, client):
    seen = []

    @app.get("/bg", endpoint="ctx_view")
    async def view():
        g.marker = "g-value"
        session["user"] = "bob"

        async def later():
            await asyncio.sleep(0.05)
            seen.append(snapshot("later"))

        asyncio.create_task(later())
        return "started"

    assert client.get("/bg?q=x").get_data(as_text=True) == "started"
    wait_for(lambda: seen)
    assert seen[0]["path"] == "/bg" and seen[0]["q"] == "x"
    assert seen[0]["g"] == "g-value" and seen[0]["user"] == "bob"
    assert seen[0]["url"] == "http://localhost/bg"


def test_session_and_flash_across_requests(app, client):
    @app.post("/login")
    async def login():
        await asyncio.sleep(0)
        session["user"] = request.form["name"]
        flask.flash(f"welcome {session['user']}")
        return flask.redirect(url_for("home"))

    @app.get("/home")
    async def home():
        return {"user": session.get("user"), "messages": flask.get_flashed_messages()}

    r = client.post("/login", data={"name": "zoe"})
    # flask.redirect answers 302 before Flask 3.2, 303 from 3.2 on.
    assert r.status_code in (302, 303) and r.headers["Location"].endswith("/home")
    assert client.get("/home").get_json() == {"user": "zoe", "messages": ["welcome zoe"]}
    assert client.get("/home").get_json() == {"user": "zoe", "messages": []}


def test_g_set_in_async_view_is_seen_by_sync_and_async_hooks(app, client):
    seen = []

    @app.after_request
    def sync_after(response):
        seen.append(("sync", g.value))
        return response

    @app.after_request
    async def async_after(response):
        seen.append(("async", g.value))
        return response

    @app.get("/")
    async def view():
        g.value = 5
        return "x"

    client.get("/")
    assert seen == [("async", 5), ("sync", 5)]


VAR = contextvars.ContextVar("VAR", default="unset")


def test_context_vars_flow_from_hooks_into_views(app, client):
    @app.before_request
    async def set_var():
        VAR.set("set-by-before-request")

    @app.get("/")
    async def view():
        return VAR.get()

    assert client.get("/").get_data(as_text=True) == "set-by-before-request"


def test_stream_with_context_wrapper_from_async_view(app, client):
    @app.get("/stream")
    async def stream():
        def generate():
            yield "hello "
            yield request.args["name"]
            yield f" {g.get('x', '-')}"

        g.x = "g!"
        return Response(stream_with_context(generate()))

    r = client.get("/stream?name=ann")
    assert r.get_data(as_text=True) == "hello ann g!"
    # A second request on the same thread: no context left behind.
    assert client.get("/stream?name=bo").get_data(as_text=True) == "hello bo g!"
    assert not flask.has_request_context()


def test_stream_with_context_decorator_from_async_view(app, client):
    torn_down = []

    @app.teardown_request
    def teardown(exc):
        torn_down.append(request.path)

    @app.get("/stream")
    async def stream():
        @stream_with_context
        def generate():
            yield "a"
            yield request.path

        return generate()

    assert client.get("/stream").get_data(as_text=True) == "a/stream"
    assert torn_down and set(torn_down) == {"/stream"}
    assert not flask.has_request_context()


def _view_pushing_the_request_context(app):
    """What Flask < 3.1's stream_with_context does inside an async view: push
    the request context in the view (its task), pop it after streaming."""

    @app.get("/push")
    async def push():
        ctx = flask.globals._cv_request.get()
        ctx.push()

        def gen():
            try:
                yield request.path
            finally:
                ctx.pop()

        return Response(gen())


requires_cv_request = pytest.mark.skipif(
    not hasattr(flask.globals, "_cv_request"),
    reason="Flask >= 3.2 has no separate request context (and pushes nothing early)",
)


@requires_cv_request
def test_request_context_pushed_in_async_view_is_rebound(app, client, monkeypatch):
    monkeypatch.setattr(_flaskcompat, "STREAM_WITH_CONTEXT_PUSHES_EARLY", True)
    flaskasync.FlaskAsync(app)  # the sync caller is chosen when installing
    _view_pushing_the_request_context(app)
    assert client.get("/push").get_data(as_text=True) == "/push"
    assert client.get("/push").get_data(as_text=True) == "/push"
    assert not flask.has_request_context()


@requires_cv_request
def test_request_context_pushed_in_async_view_fails_without_the_fix(app, client, monkeypatch):
    """The reference for the test above: the token really is created in
    another Context, which Flask < 3.1 trips over."""
    monkeypatch.setattr(_flaskcompat, "STREAM_WITH_CONTEXT_PUSHES_EARLY", False)
    flaskasync.FlaskAsync(app)  # the sync caller is chosen when installing
    _view_pushing_the_request_context(app)
    errors = []

    def request_in_a_thread():
        # In its own thread: the failed pop leaves a request context behind
        # in the thread's context, which dies with the thread.
        try:
            client.get("/push")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=request_in_a_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], ValueError)
    assert "different Context" in str(errors[0])
