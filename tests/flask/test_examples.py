"""The examples under examples/ work as documented (test client; the real
servers serve examples/app.py in test_servers.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
import pathlib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fa_helpers import wait_for

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"flaskasync_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_example(capsys):
    app = load("app").app
    t0 = time.monotonic()
    r = app.test_client().get("/")
    elapsed = time.monotonic() - t0
    assert json.loads(r.data) == [{"x": x} for x in range(5)]
    # Gathered: about 1 s (the five sleeps one after another would take 5 s;
    # the upper bound leaves room for a loaded machine).
    assert 0.95 <= elapsed < 2.5
    assert sorted(capsys.readouterr().out.splitlines()) == [f"Called coro with {x}" for x in range(5)]


def test_background_example(caplog):
    mod = load("background")
    client = mod.app.test_client()
    t0 = time.monotonic()
    r = client.post("/signup", json={"email": "a@example.com"})
    assert r.status_code == 201 and time.monotonic() - t0 < 0.3
    assert mod.SENT == []
    wait_for(lambda: mod.SENT == ["a@example.com"])

    ids = [client.post("/jobs?seconds=0.05").get_json()["id"] for _ in range(3)]
    wait_for(lambda: all(client.get(f"/jobs/{i}").get_json()["state"] == "done" for i in ids))
    assert client.post("/report").get_json() == {"task": "report"}

    with caplog.at_level(logging.ERROR):
        assert client.post("/fail").status_code == 202
        wait_for(lambda: "the payment provider is down" in caplog.text)
    assert "background task 'flaky-sync'" in caplog.text


def test_streaming_example():
    mod = load("streaming")
    client = mod.app.test_client()
    assert client.get("/count?n=3").get_data(as_text=True).count("/3 for") == 3

    r = client.get("/clock", buffered=False)
    assert r.mimetype == "text/event-stream"
    first = next(iter(r.response))
    assert first.startswith(b"data: ")
    assert client.get("/open-streams").get_json() == {"open": 1}
    r.close()  # the client went away
    assert client.get("/open-streams").get_json() == {"open": 0}

    lines = client.get("/feed").get_data(as_text=True).split()
    assert sorted(lines) == ["a0", "a1", "a2", "b0", "b1", "b2"]


def test_shared_client_example():
    mod = load("shared_client")
    app = mod.app

    def get(key):
        return app.test_client().get(f"/item/{key}").get_json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(get, ["a", "b"] * 16))
    assert results == [{"key": k, "value": k.upper()} for k in ["a", "b"] * 16]
    # 32 requests from 16 threads: concurrent ones for a key share one
    # upstream call (the Future is shared across threads and requests).
    stats = app.test_client().get("/stats").get_json()
    assert 2 <= stats["upstream_calls"] < 16
    # Real TCP connections, kept alive and reused across requests and threads.
    assert 1 <= stats["connections"] <= 4
    results = list(map(get, ["c", "d", "e"]))
    assert results == [{"key": k, "value": k.upper()} for k in "cde"]
    assert app.test_client().get("/stats").get_json()["connections"] <= 4


def test_factory_example():
    mod = load("factory")
    app = mod.create_app(FLASKASYNC_TIMEOUT=0.1)
    client = app.test_client()
    auth = {"Authorization": "Bearer demo"}
    assert client.get("/api/items/1").status_code == 401
    r = client.get("/api/items/1", headers=auth)
    assert r.get_json() == {"id": 1, "name": "apple", "user": "demo"}
    assert r.headers["X-Served-By"] == "flaskasync"
    assert client.put("/api/items/3", json={"name": "fig"}, headers=auth).status_code == 201
    r = client.get("/api/items/9", headers=auth)
    assert r.status_code == 404 and r.get_json() == {"error": "no item 9"}
    r = client.get("/api/slow", headers=auth)
    assert r.status_code == 504 and r.get_json() == {"error": "timeout", "view": "api.slow"}
    assert client.get("/api/report", headers=auth).get_json() == {"report": "done"}


@pytest.mark.parametrize("name", ["app", "background", "streaming", "shared_client", "factory"])
def test_examples_have_docstrings(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    assert text.startswith('"""')
