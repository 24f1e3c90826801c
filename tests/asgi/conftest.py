"""Fixtures of the ASGI-mode tests (helpers in asgi_helpers.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("greenlet", reason="the serve extra (greenlet) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")
pytest.importorskip("httptools", reason="the serve extra (httptools) is not installed")

from asgi_helpers import Server, gunicorn_cmd, serve_cmd  # noqa: E402


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """python -m flaskasync serve asgiapp:app, one process, 8 threads."""
    server = Server(serve_cmd, "asgiapp:app", tmp_path_factory.mktemp("serve"), "--threads", "8",
                    name="serve")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory):
    """gunicorn -k flaskasync.GunicornWorker -w 1 --threads 8 asgiapp:app."""
    server = Server(gunicorn_cmd, "asgiapp:app", tmp_path_factory.mktemp("gunicorn"),
                    "-w", "1", "--threads", "8", name="gunicorn")
    yield server
    server.stop()
