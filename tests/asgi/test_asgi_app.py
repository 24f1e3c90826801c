"""ASGIApp in-process (no server) and the ways it is started: uvicorn's own
command line with --loop flaskasync:new_event_loop, a missing serve extra,
bad arguments."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import flask
import pytest

from asgi_helpers import HERE, Server, uvicorn_cmd

import flaskasync


def test_uvicorn_command_line_with_root_path(tmp_path):
    srv = Server(uvicorn_cmd, "asgiapp:application", tmp_path, "--root-path", "/pfx",
                 "--no-access-log", name="uvicorn")
    try:
        # Behind a proxy that strips /pfx: uvicorn puts root_path in front of
        # the path (ASGI); Flask sees SCRIPT_NAME=/pfx, PATH_INFO=/urls.
        status, _, body = srv.request("GET", "/urls", headers={"Host": "h.test"})
        assert status == 200, body
        data = json.loads(body)
        assert data["script_root"] == "/pfx"
        assert data["path"] == "/pfx/urls"
        assert data["external"] == "http://h.test/pfx/urls"
        status, _, body = srv.request("GET", "/context")
        assert status == 200 and json.loads(body)["loop_type"] == "Loop"
    finally:
        # uvicorn ends a graceful shutdown by re-raising the signal.
        assert srv.stop() in (0, -15), srv.log()
    assert "Application shutdown complete" in srv.log()


def _run_asgi(app, scope, messages):
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)

    async def send(msg):
        sent.append(msg)

    async def main():
        await app(scope, receive, send)

    with asyncio.Runner(loop_factory=flaskasync.new_event_loop) as runner:
        runner.run(main())
    return sent


def test_websocket_scope_is_refused():
    app = flask.Flask(__name__)
    asgi = flaskasync.ASGIApp(app)
    sent = _run_asgi(asgi, {"type": "websocket", "path": "/", "headers": []},
                     [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1000}]


def test_unknown_scope_type_raises():
    asgi = flaskasync.ASGIApp(flask.Flask(__name__))
    with pytest.raises(ValueError, match="unsupported ASGI scope type 'nope'"):
        _run_asgi(asgi, {"type": "nope"}, [])


def test_asgiapp_on_a_foreign_loop_fails_lifespan_startup_clearly():
    asgi = flaskasync.ASGIApp(flask.Flask(__name__))
    sent = []

    async def main():
        msgs = [{"type": "lifespan.startup"}]

        async def receive():
            return msgs.pop(0)

        async def send(msg):
            sent.append(msg)

        await asgi({"type": "lifespan"}, receive, send)

    asyncio.run(main())
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "flaskasync:new_event_loop" in sent[0]["message"]


def test_asgiapp_installs_flaskasync_and_checks_its_arguments():
    app = flask.Flask(__name__)
    assert "flaskasync" not in app.extensions
    flaskasync.ASGIApp(app)
    assert "flaskasync" in app.extensions
    with pytest.raises(TypeError, match="expects a flask.Flask app"):
        flaskasync.ASGIApp(object())
    with pytest.raises(ValueError, match="threads"):
        flaskasync.ASGIApp(app, threads=0)


@pytest.mark.parametrize("blocked", ["greenlet", "uvicorn"])
def test_missing_serve_extra_names_it(blocked):
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import flaskasync\n"
        "try:\n"
        "    flaskasync.ASGIApp if %r == 'greenlet' else flaskasync.GunicornWorker\n"
        "except ImportError as exc:\n"
        "    print(exc)\n" % blocked
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert "pip install 'flaskasync[serve]'" in out.stdout, out.stdout + out.stderr


def _serve_output(*argv, timeout=30):
    out = subprocess.run([sys.executable, "-m", "flaskasync", "serve", *argv], cwd=HERE,
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


def test_serve_rejects_a_wrong_target(tmp_path):
    rc, out = _serve_output("nosuchmodule:app")
    assert rc == 2
    assert "flaskasync serve: cannot find 'nosuchmodule:app'" in out


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("target, says", [
    ("asgiapp:nope", "flaskasync serve: cannot load 'asgiapp:nope': "
                     "Attribute \"nope\" not found in module \"asgiapp\"."),
    ("asgiapp:EVENTS", "flaskasync serve: expected a Flask app (or a flaskasync.ASGIApp), got {}"),
])
def test_serve_with_an_app_it_cannot_load_exits_2_with_one_line(target, says, workers):
    # With --workers, uvicorn's process manager would restart workers that
    # cannot load the app forever: serve loads it in a child process first.
    rc, out = _serve_output(target, "--port", "0", "--workers", workers)
    assert rc == 2, out
    assert out.strip() == says, out


def test_serve_with_an_app_raising_at_import_shows_its_traceback(tmp_path):
    (tmp_path / "raising_app.py").write_text("raise RuntimeError('boom at import')\n")
    out = subprocess.run([sys.executable, "-m", "flaskasync", "serve", "raising_app:app",
                          "--port", "0", "--workers", "2"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-2:] == ["RuntimeError: boom at import", "flaskasync serve: importing "
                          "'raising_app:app' failed (the traceback is above)"], out.stderr
    assert "Started parent process" not in out.stderr


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_serve_rejects_a_port_out_of_range(port):
    rc, out = _serve_output("asgiapp:app", "--port", port, timeout=60)
    assert rc == 2
    assert f"error: argument --port: expected a port number from 0 to 65535, got '{port}'" in out
    assert "Traceback" not in out


def test_inline_call_refused_outside_a_request_closes_the_coroutine():
    """The C caller's ASGI path (_run_inline) called where no request's
    greenlet is: the bridge's RuntimeError, and the view's coroutine closed,
    not reported as never awaited."""
    import gc
    import warnings

    from flaskasync import _flask, _tasks

    async def view():
        return "never"

    coro = view()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="outside a request"):
            _flask._run_inline(coro, _tasks.Scope(None))
        assert coro.cr_frame is None  # closed
        del coro
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], caught
