"""Installing the integration: FlaskAsync(app), init_app, flaskasync.Flask, config."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import flask
import pytest

import flaskasync
from flaskasync import FlaskAsync
from flaskasync import _flask as fa_flask
from flaskasync import _tasks

from fa_helpers import make_app


def _loop_probe(app):
    @app.get("/loop")
    async def loop_view():
        loop = asyncio.get_running_loop()
        return {"app_loop": loop is flaskasync.get_loop(), "type": type(loop).__name__,
                "id": id(loop)}

    @app.get("/sync")
    def sync_view():
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return {"loop": None}
        return {"loop": "running"}


def test_lazy_exports_are_the_flask_module_names():
    assert flaskasync.FlaskAsync is fa_flask.FlaskAsync
    assert flaskasync.Flask is fa_flask.Flask
    assert flaskasync.async_route is fa_flask.async_route
    assert flaskasync.spawn is fa_flask.spawn is _tasks.spawn


def test_extension_one_line(client, app):
    _loop_probe(app)
    body = client.get("/loop").get_json()
    assert body == {"app_loop": True, "type": "Loop", "id": body["id"]}
    assert app.extensions["flaskasync"].__class__ is FlaskAsync
    for key, value in fa_flask.DEFAULT_CONFIG.items():
        assert app.config[key] == value


def test_factory_pattern_init_app():
    ext = FlaskAsync()

    def create_app(name):
        app = flask.Flask(name)
        ext.init_app(app)
        _loop_probe(app)
        return app

    a, b = create_app("a"), create_app("b")
    assert a.extensions["flaskasync"] is ext and b.extensions["flaskasync"] is ext
    ids = {a.test_client().get("/loop").get_json()["id"], b.test_client().get("/loop").get_json()["id"]}
    assert len(ids) == 1  # one app loop per process, shared by every app


def test_init_app_is_idempotent_and_keeps_user_config():
    app = flask.Flask("idem")
    app.config["FLASKASYNC_TIMEOUT"] = 3
    ext = FlaskAsync(app)
    first = app.async_to_sync
    FlaskAsync(app)
    ext.init_app(app)
    assert app.config["FLASKASYNC_TIMEOUT"] == 3
    assert app.extensions["flaskasync"] is ext
    _loop_probe(app)
    assert app.test_client().get("/loop").get_json()["app_loop"]
    assert first.__self__ is app


def test_flaskasync_flask_subclass():
    app = flaskasync.Flask("sub")
    assert isinstance(app, flask.Flask)
    assert "async_to_sync" not in vars(app) and "make_response" not in vars(app)
    assert isinstance(app.extensions["flaskasync"], FlaskAsync)
    _loop_probe(app)
    assert app.test_client().get("/loop").get_json()["app_loop"]


def test_flaskasync_flask_subclass_can_extend_with_super():
    calls = []

    class MyApp(flaskasync.Flask):
        def async_to_sync(self, func):
            calls.append(func.__name__)
            return super().async_to_sync(func)

    app = MyApp("mine")
    _loop_probe(app)
    assert app.test_client().get("/loop").get_json()["app_loop"]
    assert calls == ["loop_view"]


def test_init_app_rejects_non_flask():
    with pytest.raises(TypeError, match="flask.Flask"):
        FlaskAsync(object())


@pytest.mark.parametrize(
    "key, value, exc",
    [
        ("FLASKASYNC_TIMEOUT", "5", TypeError),
        ("FLASKASYNC_TIMEOUT", True, TypeError),
        ("FLASKASYNC_TIMEOUT", 0, ValueError),
        ("FLASKASYNC_TIMEOUT", -1.5, ValueError),
        ("FLASKASYNC_SHUTDOWN_TIMEOUT", -1, ValueError),
        ("FLASKASYNC_SHUTDOWN_TIMEOUT", None, ValueError),
        ("FLASKASYNC_BACKGROUND_TASKS", "no", TypeError),
        ("FLASKASYNC_DEBUG", 1, TypeError),
    ],
)
def test_bad_config_is_rejected_clearly(key, value, exc):
    app = flask.Flask("bad")
    app.config[key] = value
    with pytest.raises(exc, match=key):
        FlaskAsync(app)


def test_bad_timeout_set_after_init_fails_the_request_clearly(app, client):
    @app.get("/v")
    async def v():
        return "ok"

    app.config["FLASKASYNC_TIMEOUT"] = "soon"
    with pytest.raises(TypeError, match="FLASKASYNC_TIMEOUT"):
        client.get("/v")


def test_sync_views_are_untouched(app, client):
    def plain():
        return "x"

    assert app.ensure_sync(plain) is plain
    _loop_probe(app)
    assert client.get("/sync").get_json() == {"loop": None}


def test_same_loop_for_every_request_and_thread(app, client):
    _loop_probe(app)
    ids = set()

    def hit():
        ids.add(app.test_client().get("/loop").get_json()["id"])

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids.add(client.get("/loop").get_json()["id"])
    assert ids == {id(flaskasync.get_loop())}


def test_debug_mode_config():
    loop = flaskasync.get_loop()
    before = loop.get_debug()
    try:
        app = make_app("dbg", FLASKASYNC_DEBUG=True)
        assert loop.get_debug() is True

        @app.get("/")
        async def view():
            return {"debug": asyncio.get_running_loop().get_debug()}

        assert app.test_client().get("/").get_json() == {"debug": True}
    finally:
        _tasks._LoopState.want_debug = False
        loop.set_debug(before)


def test_async_to_sync_misuse_errors(app):
    with pytest.raises(TypeError, match="async callable"):
        app.async_to_sync(42)
    with pytest.raises(TypeError, match="not awaitable"):
        app.async_to_sync(lambda: 1)()


def test_existing_task_factory_is_kept():
    """A task factory installed on the app loop before us still runs."""
    code = textwrap.dedent(
        """
        import asyncio, flask, flaskasync
        made = []
        def factory(loop, coro, **kwargs):
            made.append(getattr(coro, "__qualname__", "?"))
            return asyncio.Task(coro, loop=loop, **kwargs)
        flaskasync.get_loop().set_task_factory(factory)
        app = flask.Flask("f")
        flaskasync.FlaskAsync(app)
        async def child():
            return 2
        @app.get("/")
        async def view():
            return {"v": await asyncio.create_task(child())}
        print(app.test_client().get("/").get_json(), "child" in made)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["{'v':", "2}", "True"]


def test_asgiref_is_not_needed():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["asgiref"] = None  # importing it now fails
        import asyncio, flask, flaskasync
        app = flask.Flask("noasgiref")
        flaskasync.FlaskAsync(app)
        @app.get("/")
        async def view():
            await asyncio.sleep(0.01)
            return "fine"
        print(app.test_client().get("/").get_data(as_text=True))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "fine"


def test_nested_sync_call_from_async_code_is_a_clear_error(app, client):
    @app.context_processor
    async def async_processor():
        return {"who": "async"}

    @app.get("/render")
    async def render():
        return flask.render_template_string("{{ who }}")

    @app.get("/render-sync")
    def render_sync():
        return flask.render_template_string("{{ who }}")

    assert client.get("/render-sync").get_data(as_text=True) == "async"
    with pytest.raises(RuntimeError, match="async_processor synchronously from async code"):
        client.get("/render")


def test_supervision_and_streaming_need_no_flask():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["flask"] = None  # importing it now fails
        import asyncio, flaskasync
        from flaskasync import _streaming, _tasks

        async def agen():
            yield "a"
            yield "b"

        async def later():
            await asyncio.sleep(0.01)
            return "spawned"

        task = flaskasync.spawn(later())
        body = "".join(_streaming.AsyncStream(None, agen()))
        add = flaskasync.async_to_sync(asyncio.sleep)
        print(body, add(0, "ok"), flaskasync.run(asyncio.wait_for(task, None)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ab", "ok", "spawned"]


def test_a_changed_flask_internal_is_a_clear_import_error():
    code = textwrap.dedent(
        """
        import flask.globals
        del flask.globals._cv_app  # what a future Flask might do
        try:
            import flaskasync._flask
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("FlaskChanged flaskasync does not support this Flask")
    assert "flask.globals has no _cv_app" in out.stdout


def test_task_factory_stays_the_users_and_its_tasks_are_supervised():
    """The supervision is not a task factory (the loop's C core records the
    tasks it creates): a factory set after installing stays the loop's,
    gets the keywords this Python's create_task passes (name= from 3.13.3
    and 3.14 on, as asyncio's own loop does), and the tasks it makes in a
    view are still supervised: one left running becomes a background task."""
    code = textwrap.dedent(
        """
        import asyncio, flask, flaskasync
        from flaskasync import _tasks
        got = []
        def factory(loop, coro, **kwargs):
            got.append(sorted(kwargs))
            return asyncio.Task(coro, loop=loop, **kwargs)
        # What asyncio's own loop passes the factory on this Python.
        ref = asyncio.new_event_loop()
        ref.set_task_factory(factory)
        async def nothing():
            pass
        ref.run_until_complete(ref.create_task(nothing(), name="ref"))
        ref.close()
        expected = got.pop()
        app = flask.Flask("f")
        flaskasync.FlaskAsync(app)
        loop = flaskasync.get_loop()
        loop.set_task_factory(factory)
        async def child():
            await asyncio.sleep(0.05)
        @app.get("/")
        async def view():
            return asyncio.get_running_loop().create_task(child(), name="named").get_name()
        body = app.test_client().get("/").get_data(as_text=True)
        print(body, loop.get_task_factory() is factory,
              [t.get_name() for t in _tasks._background], got[-1] == expected)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["named", "True", "['named']", "True"]
