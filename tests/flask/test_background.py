"""Background tasks: create_task outlives the view, spawn(), logging,
strong references, Flask's cancel-on-return as a config choice, shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import textwrap
import time
import weakref

import pytest

import flaskasync
from flaskasync import _tasks
from fa_helpers import make_app, wait_for


def test_create_task_keeps_running_after_the_response(app, client):
    log = []

    @app.get("/")
    async def view():
        async def work():
            await asyncio.sleep(0.1)
            log.append("done")

        asyncio.create_task(work())
        log.append("responded")
        return "ok"

    t0 = time.monotonic()
    assert client.get("/").get_data(as_text=True) == "ok"
    assert time.monotonic() - t0 < 0.09
    assert log == ["responded"]
    wait_for(lambda: log == ["responded", "done"])


def test_spawn_from_sync_view_returns_a_task_to_await_later(app, client):
    handles = {}

    async def compute(x):
        await asyncio.sleep(0.05)
        return x * 2

    @app.get("/start")
    def start():
        task = flaskasync.spawn(compute(21), name="compute-21")
        assert isinstance(task, asyncio.Task) and task.get_name() == "compute-21"
        handles["t"] = task
        return "started"

    @app.get("/result")
    async def result():
        return {"result": await handles["t"]}

    assert client.get("/start").get_data(as_text=True) == "started"
    assert client.get("/result").get_json() == {"result": 42}


def test_spawn_from_async_code_and_from_plain_code(app, client):
    events = []

    async def note(tag):
        await asyncio.sleep(0.01)
        events.append(tag)
        return tag

    @app.get("/")
    async def view():
        task = flaskasync.spawn(note("from-async"))
        assert task.get_loop() is asyncio.get_running_loop()
        return "ok"

    client.get("/")
    task = flaskasync.spawn(note("from-plain-code"))  # no app, no request
    assert flaskasync.run(asyncio.wait_for(task, 5)) == "from-plain-code"
    wait_for(lambda: sorted(events) == ["from-async", "from-plain-code"])


def test_spawn_from_a_thread_running_another_event_loop():
    async def value():
        return "v"

    async def main():
        task = flaskasync.spawn(value())
        assert task.get_loop() is flaskasync.get_loop()
        return task

    task = asyncio.run(main())
    assert flaskasync.run(asyncio.wait_for(task, 5)) == "v"


def test_cancel_a_spawned_task_from_sync_code(app):
    state = []

    async def forever():
        try:
            await asyncio.sleep(100)
        finally:
            state.append("finally")

    task = flaskasync.spawn(forever())
    time.sleep(0.02)
    flaskasync.get_loop().call_soon_threadsafe(task.cancel)
    wait_for(lambda: task.done())
    assert task.cancelled() and state == ["finally"]


def _error_records(caplog, logger_name):
    return [r for r in caplog.records if r.name == logger_name and r.levelno >= logging.ERROR]


def test_background_task_exception_is_logged_through_app_logger(app, client, caplog):
    @app.get("/")
    async def view():
        async def fails_later():
            await asyncio.sleep(0.02)
            raise LookupError("background boom")

        asyncio.create_task(fails_later(), name="fails-later")
        return "ok"

    with caplog.at_level(logging.ERROR):
        client.get("/")
        records = wait_for(lambda: _error_records(caplog, app.name))
    assert len(records) == 1
    assert "background task 'fails-later' (" in records[0].getMessage()
    assert records[0].exc_info[0] is LookupError
    assert "background boom" in caplog.text


def test_spawned_task_exception_outside_an_app_uses_flaskasync_logger(caplog):
    async def fails():
        raise KeyError("spawned boom")

    with caplog.at_level(logging.ERROR):
        flaskasync.spawn(fails(), name="lonely")
        records = wait_for(lambda: _error_records(caplog, "flaskasync"))
    assert "background task 'lonely'" in records[0].getMessage()
    assert records[0].exc_info[0] is KeyError


def test_failed_task_left_unawaited_by_the_view_is_logged(app, client, caplog):
    @app.get("/")
    async def view():
        async def fails_now():
            raise ValueError("nobody awaits me")

        asyncio.create_task(fails_now())
        await asyncio.sleep(0.01)  # it fails while the view still runs
        return "ok"

    with caplog.at_level(logging.ERROR):
        client.get("/")
    records = _error_records(caplog, app.name)
    assert len(records) == 1
    assert "nobody awaited it (created by" in records[0].getMessage()
    assert "view" in records[0].getMessage()


def test_scope_close_reports_only_the_unretrieved_failure(app, client, caplog):
    """When the view returns, its finished tasks are checked: only one that
    failed with an exception nobody retrieved is reported; a result, a
    retrieved exception and a cancellation are not, and none of them is
    left as a background task."""

    @app.get("/")
    async def view():
        async def ok():
            return 1

        async def fails(msg):
            raise ValueError(msg)

        async def waits():
            await asyncio.sleep(10)

        done = asyncio.create_task(ok())
        retrieved = asyncio.create_task(fails("retrieved"))
        unretrieved = asyncio.create_task(fails("left alone"))
        cancelled = asyncio.create_task(waits())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.wait([done, retrieved, unretrieved, cancelled])
        assert isinstance(retrieved.exception(), ValueError)
        return "ok"

    with caplog.at_level(logging.ERROR):
        assert client.get("/").get_data(as_text=True) == "ok"
    records = _error_records(caplog, app.name)
    assert len(records) == 1
    assert "nobody awaited it (created by" in records[0].getMessage()
    assert "left alone" in str(records[0].exc_info[1])
    assert not _tasks._background


def test_awaited_or_gathered_failures_are_not_logged_twice(app, client, caplog):
    @app.get("/")
    async def view():
        async def fails(delay):
            await asyncio.sleep(delay)
            raise ValueError("handled by the view")

        task = asyncio.create_task(fails(0))
        try:
            await task
        except ValueError:
            pass
        results = await asyncio.gather(fails(0.01), fails(0), return_exceptions=True)
        later = asyncio.create_task(fails(0.02))
        return {"n": len(results), "later": later.get_name()}

    @app.get("/await-later")
    async def await_later():
        # A background task awaited by another request when it fails.
        task = next(t for t in _tasks._background if t.get_name() == name)
        try:
            await task
        except ValueError:
            return "retrieved"
        return "?"

    with caplog.at_level(logging.ERROR):
        name = client.get("/").get_json()["later"]
        assert client.get("/await-later").get_data(as_text=True) == "retrieved"
        time.sleep(0.05)
    assert _error_records(caplog, app.name) == []


def test_background_tasks_are_strongly_referenced(app, client):
    refs = {}

    @app.get("/")
    async def view():
        async def waits_on_orphan_future():
            # Nothing but this task references the future: without a strong
            # reference to the task, both would be garbage collected.
            await asyncio.get_running_loop().create_future()

        refs["task"] = weakref.ref(asyncio.create_task(waits_on_orphan_future()))
        return "ok"

    client.get("/")
    for _ in range(3):
        gc.collect()
    task = refs["task"]()
    assert task is not None and not task.done()
    assert task in _tasks._background
    flaskasync.get_loop().call_soon_threadsafe(task.cancel)
    wait_for(lambda: task.done())
    wait_for(lambda: task not in _tasks._background)


def test_cancel_leftovers_config_is_flasks_behaviour(caplog):
    app = make_app("cancel-mode", FLASKASYNC_BACKGROUND_TASKS=False)
    log = []

    @app.get("/")
    async def view():
        async def leftover():
            try:
                await asyncio.sleep(10)
            finally:
                await asyncio.sleep(0)
                log.append("leftover finally")

        async def quick():
            return 1

        async def detached():
            await asyncio.sleep(0.05)
            log.append("spawned done")

        asyncio.create_task(leftover())
        await asyncio.create_task(quick())
        flaskasync.spawn(detached())  # spawn is explicit: never cancelled
        return "ok"

    t0 = time.monotonic()
    assert app.test_client().get("/").get_data(as_text=True) == "ok"
    assert time.monotonic() - t0 < 1
    # The leftover was cancelled, and awaited, before the response.
    assert log == ["leftover finally"]
    wait_for(lambda: log == ["leftover finally", "spawned done"])


def test_tasks_created_by_a_streamed_response_outlive_it(app, client):
    done = []

    @app.get("/")
    async def view():
        async def gen():
            async def later():
                await asyncio.sleep(0.05)
                done.append(True)

            asyncio.create_task(later())
            yield "chunk"

        return gen()

    assert client.get("/").get_data(as_text=True) == "chunk"
    wait_for(lambda: done)


def run_script(code: str, timeout: float = 30.0):
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout,
    )
    return out, time.monotonic() - t0


SHUTDOWN_APP = """
    import asyncio, sys, time
    import flask, flaskasync
    app = flask.Flask("shutdown-app")
    app.config["FLASKASYNC_SHUTDOWN_TIMEOUT"] = {grace}
    flaskasync.FlaskAsync(app)

    async def short():
        await asyncio.sleep(0.2)
        print("short done", flush=True)

    async def stuck(tag):
        try:
            await asyncio.sleep(100)
        finally:
            print("finally ran", tag, flush=True)

    @app.get("/")
    async def view():
        asyncio.create_task(short(), name="short-task")
        asyncio.create_task(stuck("a"), name="stuck-a")
        flaskasync.spawn(stuck("b"), name="stuck-b")
        return "ok"

    print(app.test_client().get("/").get_data(as_text=True), flush=True)
"""


def test_shutdown_waits_grace_period_then_cancels_and_logs_each():
    out, elapsed = run_script(SHUTDOWN_APP.format(grace=0.5))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "ok"
    assert "short done" in lines  # finished within the grace period
    assert "finally ran a" in lines and "finally ran b" in lines
    for name in ("stuck-a", "stuck-b"):
        assert f"cancelling background task '{name}'" in out.stderr, out.stderr
    assert "short-task" not in out.stderr
    assert "0.5 s shutdown grace period" in out.stderr
    assert elapsed < 10


def test_shutdown_returns_as_soon_as_tasks_finish():
    # Timed inside the process, from the spawn to the last atexit handler
    # (registered first, so it runs after flaskasync's drain): interpreter
    # start-up on a loaded machine does not count.
    code = """
        import atexit, time
        t0 = []
        atexit.register(lambda: print(f"exit after {time.monotonic() - t0[0]:.3f}", flush=True))
        import asyncio, flaskasync
        async def work():
            await asyncio.sleep(0.2)
            print("work done", flush=True)
        t0.append(time.monotonic())
        flaskasync.spawn(work())
    """
    out, _ = run_script(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "work done"
    # The default grace period is 5 s: exit waited for the task, not for the grace.
    assert lines[1].startswith("exit after ") and float(lines[1].split()[-1]) < 2.0
    assert "cancelling" not in out.stderr


def test_background_task_failing_during_shutdown_is_logged():
    code = """
        import asyncio, flaskasync
        async def fails():
            await asyncio.sleep(0.1)
            raise RuntimeError("failed while shutting down")
        flaskasync.spawn(fails(), name="late-failure")
    """
    out, _ = run_script(code)
    assert out.returncode == 0, out.stderr
    assert "background task 'late-failure' (fails) failed" in out.stderr
    assert "RuntimeError: failed while shutting down" in out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_a_fresh_app_loop():
    code = """
        import asyncio, os, flask, flaskasync
        from flaskasync import _tasks
        app = flask.Flask("forky")
        flaskasync.FlaskAsync(app)

        @app.get("/")
        async def view():
            asyncio.create_task(asyncio.sleep(30))
            await asyncio.sleep(0.01)
            return str(id(asyncio.get_running_loop()))

        parent_loop = app.test_client().get("/").get_data(as_text=True)
        assert len(_tasks._background) == 1
        pid = os.fork()
        if pid == 0:
            ok = not _tasks._background
            child_loop = app.test_client().get("/").get_data(as_text=True)
            ok = ok and child_loop != parent_loop and len(_tasks._background) == 1
            print("child ok" if ok else "child bad", flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent", app.test_client().get("/").get_data(as_text=True) == parent_loop)
        _tasks._LoopState.loop = None  # skip the 5 s grace for the sleeps
    """
    out, _ = run_script(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["child ok", "parent True"]


def test_finished_tasks_are_not_kept(app, client):
    refs = []

    @app.get("/")
    async def view():
        async def short(i):
            await asyncio.sleep(0.001 * (i % 3))
            return i

        refs.append(weakref.ref(asyncio.create_task(short(len(refs)))))
        await asyncio.gather(short(0), short(1))  # tasks that finish within the view
        return "ok"

    for _ in range(200):
        assert client.get("/").status_code == 200
    wait_for(lambda: all(r() is None or r().done() for r in refs))
    time.sleep(0.01)
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    assert not _tasks._background
