"""Async streaming: a view returns an async generator, or Response(async_gen)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import subprocess
import sys
import textwrap

import flask
import pytest
from flask import Response, current_app, g, request, stream_with_context, url_for

from fa_helpers import make_app


def test_view_returns_async_generator(app, client):
    @app.get("/s")
    async def s():
        async def gen():
            for i in range(3):
                await asyncio.sleep(0.001)
                yield f"{i},"

        return gen()

    r = client.get("/s")
    assert r.status_code == 200 and r.get_data(as_text=True) == "0,1,2,"
    assert r.mimetype == "text/html"


def test_response_wrapping_async_generator_keeps_headers(app, client):
    @app.get("/events")
    async def events():
        async def gen():
            yield "data: 1\n\n"
            yield b"data: 2\n\n"

        return Response(gen(), mimetype="text/event-stream", headers={"X-Stream": "yes"})

    r = client.get("/events")
    assert r.mimetype == "text/event-stream" and r.headers["X-Stream"] == "yes"
    assert r.get_data(as_text=True) == "data: 1\n\ndata: 2\n\n"


def test_tuple_with_async_generator_body(app, client):
    @app.get("/t")
    async def t():
        async def gen():
            yield "created"

        return gen(), 201, {"X-A": "1"}

    r = client.get("/t")
    assert (r.status_code, r.headers["X-A"], r.get_data(as_text=True)) == (201, "1", "created")


def test_async_generator_function_as_view(app, client):
    @app.get("/agen/<int:n>")
    async def agen(n):
        for i in range(n):
            yield str(i)

    assert client.get("/agen/4").get_data(as_text=True) == "0123"


def test_sync_view_may_return_an_async_generator(app, client):
    async def gen():
        yield request.path

    @app.get("/sync")
    def sync_view():
        return gen()

    assert client.get("/sync").get_data(as_text=True) == "/sync"


def test_chunks_are_streamed_one_by_one(app, client):
    log = []

    @app.get("/s")
    async def s():
        async def gen():
            for i in range(3):
                log.append(f"produce {i}")
                await asyncio.sleep(0.001)
                yield str(i)
            log.append("end")

        return gen()

    r = client.get("/s", buffered=False)
    for chunk in r.response:
        log.append(f"consume {chunk.decode()}")
    r.close()
    assert log == [
        "produce 0", "consume 0", "produce 1", "consume 1", "produce 2", "consume 2", "end",
    ]


def test_request_context_available_while_streaming(app, client):
    @app.before_request
    async def before():
        g.who = "g-ok"

    @app.post("/ctx", endpoint="ctx")
    async def ctx():
        flask.session["s"] = "session-ok"

        async def gen():
            await asyncio.sleep(0)
            yield request.args["q"] + " "
            yield request.get_json()["k"] + " "
            yield g.who + " "
            yield flask.session["s"] + " "
            yield current_app.name + " "
            yield url_for("ctx", _external=True)

        return gen()

    data = client.post("/ctx?q=query-ok", json={"k": "json-ok"}).get_data(as_text=True)
    assert data == f"query-ok json-ok g-ok session-ok {app.name} http://localhost/ctx"


VAR = contextvars.ContextVar("VAR", default="unset")


def test_context_var_token_can_be_reset_in_a_later_step(app, client):
    @app.get("/s")
    async def s():
        async def gen():
            token = VAR.set("inside")
            yield VAR.get()
            VAR.reset(token)  # another step: must be the same Context
            yield " " + VAR.get()

        return gen()

    assert client.get("/s").get_data(as_text=True) == "inside unset"


def test_app_context_pushed_across_yields(app, client):
    @app.get("/s")
    async def s():
        async def gen():
            with app.app_context():
                g.inner = "inner"
                yield g.inner
                yield " still"

        return gen()

    assert client.get("/s").get_data(as_text=True) == "inner still"


def test_generator_raising_midway_is_logged_and_cuts_the_response(app, client, caplog):
    @app.get("/boom")
    async def boom():
        async def gen():
            yield "first "
            await asyncio.sleep(0)
            raise ValueError("stream broke")

        return gen()

    r = client.get("/boom?x=1", buffered=False)
    chunks = iter(r.response)
    assert next(chunks) == b"first "
    with caplog.at_level(logging.ERROR), pytest.raises(ValueError, match="stream broke"):
        next(chunks)
    r.close()
    records = [rec for rec in caplog.records if rec.name == app.name]
    assert len(records) == 1
    assert "exception while streaming the response to GET /boom?x=1" in records[0].getMessage()
    assert records[0].exc_info[0] is ValueError


def test_closing_early_runs_the_generators_finally(app, client):
    state = []

    @app.get("/forever")
    async def forever():
        async def gen():
            try:
                i = 0
                while True:
                    await asyncio.sleep(0.001)
                    yield f"{i},"
                    i += 1
            finally:
                await asyncio.sleep(0.001)  # a finally may await
                state.append(("finally", request.path))

        return gen()

    r = client.get("/forever", buffered=False)
    chunks = iter(r.response)
    assert [next(chunks), next(chunks)] == [b"0,", b"1,"]
    assert state == []
    r.close()  # what a WSGI server does when the client goes away
    assert state == [("finally", "/forever")]


def test_head_request_closes_the_generator_without_running_it(app, client):
    state = []

    @app.route("/h", methods=["GET", "HEAD"])
    async def h():
        async def gen():
            state.append("started")
            yield "x"

        return gen()

    r = client.head("/h")
    assert r.status_code == 200 and r.get_data() == b""
    assert state == []


def test_stream_with_context_around_async_generator(app, client):
    @app.get("/s")
    async def s():
        async def gen():
            yield request.path

        return Response(stream_with_context(gen()))

    assert client.get("/s").get_data(as_text=True) == "/s"


def test_consuming_the_stream_from_async_code_is_a_clear_error(app, client):
    @app.after_request
    async def peek(response):
        response.get_data()
        return response

    @app.get("/s")
    async def s():
        async def gen():
            yield "x"

        return gen()

    with pytest.raises(RuntimeError, match="async iterator in async code"):
        client.get("/s")


def test_plain_async_iterable_object(app, client):
    class Countdown:
        def __init__(self, n):
            self.n = n

        def __aiter__(self):
            return self

        async def __anext__(self):
            if self.n == 0:
                raise StopAsyncIteration
            self.n -= 1
            return str(self.n)

    @app.get("/c")
    async def c():
        return Countdown(3)

    assert client.get("/c").get_data(as_text=True) == "210"


def test_cancel_mode_cancels_tasks_left_by_the_stream():
    app = make_app("stream-cancel", FLASKASYNC_BACKGROUND_TASKS=False)
    state = []

    @app.get("/s")
    async def s():
        async def gen():
            async def child():
                try:
                    await asyncio.sleep(10)
                finally:
                    state.append("child cancelled")

            asyncio.create_task(child())
            yield "x"

        return gen()

    response = app.test_client().get("/s")
    assert response.get_data(as_text=True) == "x"
    assert state == []
    response.close()  # as a WSGI server does at the end of the response
    assert state == ["child cancelled"]


def test_steps_are_not_tasks_of_the_stream_scope(app):
    # Each chunk is one flaskasync.run(..., context=) in the stream's
    # Context; those tasks are the stream's own, not tasks its generator
    # left behind (a long stream must not accumulate them).
    made = []

    async def gen():
        made.append(asyncio.create_task(asyncio.sleep(0)))
        for i in range(200):
            await asyncio.sleep(0)
            yield "x"

    with app.test_request_context("/s"):
        stream = app.make_response(gen()).response
    assert "".join(stream) == "x" * 200
    assert stream._scope.children == made
    stream.close()
    assert stream._scope.children == [] and made[0].done()


def test_stream_from_a_sync_view_supervises_its_tasks_from_the_first_request():
    # A fresh process whose first (and only) request is a sync view
    # returning an async generator: the tasks the generator creates are
    # supervised all the same (their failure is logged through app.logger).
    code = textwrap.dedent(
        """
        import asyncio, flask, flaskasync
        app = flask.Flask("first-stream")
        flaskasync.FlaskAsync(app)

        @app.get("/")
        def view():
            async def gen():
                async def fails():
                    raise ValueError("failed in the stream's task")

                asyncio.create_task(fails())
                await asyncio.sleep(0.01)
                yield "x"

            return gen()

        response = app.test_client().get("/")
        print(response.get_data(as_text=True))
        response.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "x"
    assert "failed and nobody awaited it (created by the response stream for GET /)" in out.stderr
    assert "ValueError: failed in the stream's task" in out.stderr
