"""ASGI mode over real HTTP: python -m flaskasync serve and the gunicorn
worker, serving tests/asgi/asgiapp.py."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from asgi_helpers import wait_for

BOTH = ["serve", "gunicorn"]


@pytest.fixture
def server(request):
    return request.getfixturevalue("serve" if request.param == "serve" else "gunicorn_server")


def key() -> str:
    return uuid.uuid4().hex[:12]


async def _raw_get(port, path, timeout=10.0):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return data


def concurrent_gets(port, path, n, timeout=15.0):
    """n concurrent GETs, each on its own connection; (elapsed, responses)."""

    async def main():
        start = time.monotonic()
        out = await asyncio.gather(*(_raw_get(port, path, timeout) for _ in range(n)))
        return time.monotonic() - start, out

    return asyncio.run(main())


# ------------------------------------------------------------ concurrency


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_200_concurrent_async_requests_take_one_sleep(server):
    elapsed, out = concurrent_gets(server.port, "/sleep?t=0.5", 200)
    assert all(r.startswith(b"HTTP/1.1 200") and r.endswith(b"slept") for r in out)
    # One 0.5 s sleep, not 200 of them (nor 200/8); generous for a loaded CI machine.
    assert elapsed < 1.5, elapsed


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_sync_views_run_in_the_pool_and_never_hold_up_async_views(server):
    with ThreadPoolExecutor(8) as pool:
        start = time.monotonic()
        sync = [pool.submit(server.get_json, "/sync-sleep?t=1") for _ in range(8)]
        time.sleep(0.2)  # the 8 pool threads are all sleeping now
        t0 = time.monotonic()
        status, _, body = server.request("GET", "/")
        async_latency = time.monotonic() - t0
        threads = {f.result()["thread"] for f in sync}
        total = time.monotonic() - start
    assert status == 200 and body == b"hello"
    assert async_latency < 0.3, async_latency
    # Eight sync views slept at once, each in its own pool thread.
    assert len(threads) == 8 and all(t.startswith("flaskasync-sync") for t in threads)
    assert total < 2.5, total


def test_seed_example_under_serve(tmp_path):
    from asgi_helpers import EXAMPLES, Server, serve_cmd

    srv = Server(serve_cmd, "app:app", tmp_path, cwd=EXAMPLES, name="seed")
    try:
        t0 = time.monotonic()
        status, _, body = srv.request("GET", "/")
        single = time.monotonic() - t0
        assert status == 200
        assert json.loads(body) == [{"x": x} for x in range(5)]
        assert 0.9 < single < 2.5, single  # gathered: ~1 s; in a row: 5 s
        elapsed, out = concurrent_gets(srv.port, "/", 100)
        assert all(r.startswith(b"HTTP/1.1 200") for r in out)
        assert elapsed < 2.5, elapsed
    finally:
        srv.stop()


def test_seed_example_under_gunicorn_two_workers(tmp_path):
    from asgi_helpers import EXAMPLES, Server, gunicorn_cmd

    srv = Server(gunicorn_cmd, "app:app", tmp_path, "-w", "2", cwd=EXAMPLES, name="seed-gunicorn")
    try:
        elapsed, out = concurrent_gets(srv.port, "/", 100)
        assert all(r.startswith(b"HTTP/1.1 200") for r in out)
        assert all(json.loads(r.split(b"\r\n\r\n", 1)[1]) == [{"x": x} for x in range(5)]
                   for r in out)
        assert elapsed < 2.5, elapsed
    finally:
        srv.stop()


# ------------------------------------------------------------ contexts and the loop


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_async_view_runs_on_the_server_loop_with_the_request_context(server):
    status, headers, body = server.request("GET", "/context")
    assert status == 200
    data = json.loads(body)
    # The sync hook ran in the request's greenlet on the loop thread, and the
    # value it set is seen by the view, whose value is seen by after_request.
    assert data["request_var"] == "set-by-before:/context"
    assert data["before_thread"] == "MainThread" and data["thread"] == "MainThread"
    assert data["loop_is_app_loop"] is True
    assert data["loop_type"] == "Loop"
    assert headers["x-view-var"] == "set-by-view"


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_sync_view_runs_in_a_pool_thread_and_run_reaches_the_server_loop(server):
    loop_id = server.get_json("/context")["loop_id"]
    data = server.get_json("/sync-context")
    assert data["thread"].startswith("flaskasync-sync")
    assert data["request_var"] == "set-by-before:/sync-context"
    assert data["run"] == 3
    assert data["loop_id"] == loop_id


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_sync_hook_of_an_async_request_can_run_coroutines(server):
    data = server.get_json("/hook-run")
    assert data == {"run": "run-from-hook", "a2s": "a2s-from-hook", "thread": "MainThread"}


def test_values_do_not_leak_between_requests(serve):
    # The view sets view_var in its request's Context; a later request
    # starts from scratch.
    for _ in range(3):
        status, headers, _ = serve.request("GET", "/context")
        assert status == 200 and headers["x-view-var"] == "set-by-view"
    data = serve.get_json("/sync-context")
    assert data["request_var"] == "set-by-before:/sync-context"


def test_loop_bound_objects_are_shared_by_all_requests(serve):
    elapsed, out = concurrent_gets(serve.port, "/shared", 50)
    assert all(r.startswith(b"HTTP/1.1 200") for r in out), out[0]


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_method_view_async_and_sync_handlers(server):
    data = server.get_json("/items")
    assert data == {"method": "get", "thread": "MainThread"}
    status, _, body = server.request("POST", "/items")
    data = json.loads(body)
    assert data["method"] == "post" and data["thread"].startswith("flaskasync-sync")


# ------------------------------------------------------------ issue 3 features


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_timeout_answers_504(server):
    t0 = time.monotonic()
    status, _, _ = server.request("GET", "/timeout")
    assert status == 504
    assert time.monotonic() - t0 < 2.0
    assert wait_for(lambda: "did not finish within 0.3 s" in server.log())


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_background_tasks_and_spawn_run_on_the_server_loop(server):
    k = key()
    assert server.request("GET", f"/spawn?key={k}")[0] == 200
    assert wait_for(lambda: server.events().get(k) == "done")
    assert wait_for(lambda: server.events().get(k + "-ct") == "done")
    k2 = key()
    loop_id = server.get_json("/context")["loop_id"]
    assert server.get_json(f"/sync-spawn?key={k2}")["loop_id"] == loop_id
    assert wait_for(lambda: server.events().get(k2) == "done")


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_a_failed_task_nobody_awaited_is_logged_with_its_traceback(server):
    status, _, body = server.request("GET", "/orphan")
    assert (status, body) == (200, b"left it")
    log = wait_for(lambda: "ValueError: orphan task failed" in server.log() and server.log())
    assert "task 'orphan-task'" in log and "nobody awaited it (created by orphan)" in log, log
    assert "Traceback (most recent call last)" in log


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_view_raising_gives_flask_500_with_traceback_in_the_log(server):
    status, _, body = server.request("GET", "/boom")
    assert status == 500
    assert b"Internal Server Error" in body
    log = wait_for(lambda: "ValueError: boom from an async view" in server.log() and server.log())
    assert "Traceback (most recent call last)" in log
    assert "Exception on /boom [GET]" in log
    # And the server goes on.
    assert server.request("GET", "/")[0] == 200


# ------------------------------------------------------------ streaming


def _first_line_and_rest(port, path, t_first):
    """Time to the first body line and the whole body, over a raw socket."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        t0 = time.monotonic()
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        first_at = None
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if first_at is None and b"chunk0" in data:
                first_at = time.monotonic() - t0
        return first_at, time.monotonic() - t0, data
    finally:
        s.close()


@pytest.mark.parametrize("path", ["/stream?t=0.5", "/sync-stream?t=0.5"])
def test_streaming_sends_chunks_as_produced(serve, path):
    first, total, data = _first_line_and_rest(serve.port, path, 0.5)
    assert first is not None and first < 0.4, (first, total)
    assert total > 1.2, total
    assert b"transfer-encoding: chunked" in data.lower()
    assert data.endswith(b"0\r\n\r\n")
    for i in range(3):
        assert f"chunk{i}".encode() in data


# ------------------------------------------------------------ disconnects


def _open_and_drop(port, path, after=0.3):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    time.sleep(after)
    s.close()


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_disconnect_cancels_the_async_view(server):
    k = key()
    _open_and_drop(server.port, f"/wait?key={k}")
    assert wait_for(lambda: server.events().get(k) == "cancelled"), server.events().get(k)
    assert server.events().get(k + "-finally") is True
    assert "Exception in ASGI application" not in server.log()


def test_disconnect_closes_an_async_stream(serve):
    k = key()
    _open_and_drop(serve.port, f"/stream?t=5&key={k}", after=0.5)
    assert wait_for(lambda: serve.events().get(f"stream-finally-{k}") is True)


def test_disconnect_closes_a_sync_stream(serve):
    k = key()
    _open_and_drop(serve.port, f"/sync-stream?t=0.2&n=1000&key={k}", after=0.5)
    assert wait_for(lambda: serve.events().get(f"sync-stream-finally-{k}") is True)


# ------------------------------------------------------------ request bodies


@pytest.mark.parametrize("path", ["/upload", "/sync-upload", "/sync-stream-in"])
def test_5mb_upload(serve, path):
    body = os.urandom(5 * 1024 * 1024)
    status, _, resp = serve.request("POST", path, body=body, timeout=30)
    assert status == 200, resp[:300]
    data = json.loads(resp)
    assert data["n"] == len(body)
    if "head" in data:
        assert data["head"] == body[:8].hex()


@pytest.mark.parametrize("path", ["/upload", "/sync-upload"])
def test_chunked_upload(serve, path):
    body = os.urandom(3 * 1024 * 1024)

    def chunks():
        for i in range(0, len(body), 100_000):
            yield body[i:i + 100_000]

    status, _, resp = serve.request("POST", path, body=chunks(),
                                    headers={"Transfer-Encoding": "chunked"}, timeout=30)
    assert status == 200, resp[:300]
    assert json.loads(resp)["n"] == len(body)


def test_multipart_file_upload_to_async_view(serve):
    boundary = "fa-boundary"
    payload = os.urandom(2 * 1024 * 1024)
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    status, _, resp = serve.request(
        "POST", "/form", body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=30)
    assert status == 200, resp[:300]
    assert json.loads(resp) == {"name": "a.bin", "n": len(payload), "field": "value"}


@pytest.mark.parametrize("path", ["/upload", "/sync-upload"])
def test_body_over_max_content_length_is_413_without_reading_it(serve, path):
    # Announce 100 MB, send 1 KB: the 413 comes back without the rest.
    s = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
    try:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {100 * 1024 * 1024}\r\n"
                  "\r\n".encode() + b"x" * 1024)
        data = s.recv(65536)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:200]


@pytest.mark.parametrize("path", ["/upload", "/sync-upload"])
def test_expect_100_continue(serve, path):
    s = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
    try:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  "Expect: 100-continue\r\n\r\n".encode())
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        s.sendall(b"hello")
        data = b""
        while b'"n":5' not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:300]


# ------------------------------------------------------------ HTTP details


@pytest.mark.parametrize("path", ["/urls", "/sync-urls"])
def test_remote_addr_and_external_urls_from_the_host_header(serve, path):
    data = serve.get_json(path, headers={"Host": "example.test:8443"})
    assert data["external"] == f"http://example.test:8443{path}"
    assert data["remote_addr"] == "127.0.0.1"


def test_head_request(serve):
    status, headers, body = serve.request("HEAD", "/context")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) > 0
    # A streamed body is closed without being produced.
    for path in ("/stream", "/sync-stream"):
        k = key()
        t0 = time.monotonic()
        status, headers, body = serve.request("HEAD", f"{path}?t=2&key={k}")
        assert status == 200 and body == b"" and time.monotonic() - t0 < 1.5


def test_keep_alive_serves_several_requests_on_one_connection(serve):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
    try:
        for path in ["/", "/sync-context", "/context", "/"]:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        sock = conn.sock
        assert sock is not None  # the same connection all along
    finally:
        conn.close()


def test_malformed_http_is_answered_400_by_the_server(serve):
    s = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
    try:
        s.sendall(b"THIS IS NOT HTTP\r\n\x00\x01\r\n\r\n")
        data = s.recv(65536)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert serve.request("GET", "/")[0] == 200


def test_404_and_405_go_through_flask(serve):
    assert serve.request("GET", "/nope")[0] == 404
    assert serve.request("DELETE", "/items")[0] == 405


# ------------------------------------------------------------ shutdown


@pytest.mark.parametrize("kind", BOTH)
def test_lifespan_shutdown_drains_then_cancels_background_tasks(tmp_path, kind):
    import signal

    from asgi_helpers import Server, gunicorn_cmd, serve_cmd

    cmd = serve_cmd if kind == "serve" else gunicorn_cmd
    extra = () if kind == "serve" else ("-w", "1")
    srv = Server(cmd, "asgiapp:app", tmp_path, *extra, env={"FA_SHUTDOWN_TIMEOUT": "1"},
                 name=f"shutdown-{kind}")
    try:
        assert srv.request("GET", "/shutdown-tasks")[0] == 200
    finally:
        rc = srv.stop(signal.SIGTERM if kind == "gunicorn" else signal.SIGINT)
    log = srv.log()
    assert (srv.markers / "short-done").exists(), log
    assert (srv.markers / "forever-cancelled").exists(), log
    assert "cancelling background task 'forever'" in log, log
    assert "Application shutdown complete" in log or "Shutting down" in log, log
    assert rc == 0, log


@pytest.mark.parametrize("env", [{"PYTHONASYNCIODEBUG": "1"}, {"FA_DEBUG": "1"}],
                         ids=["PYTHONASYNCIODEBUG", "FLASKASYNC_DEBUG"])
def test_debug_mode_names_a_sync_hook_that_holds_the_loop(tmp_path, env):
    from asgi_helpers import Server, serve_cmd

    srv = Server(serve_cmd, "asgiapp:app", tmp_path, env=env, name="debug")
    try:
        assert srv.request("GET", "/slow-hook")[0] == 200
        assert wait_for(lambda: "took 0.3" in srv.log()), srv.log()
        assert "Executing <Task" in srv.log()
    finally:
        srv.stop()


# ------------------------------------------------------------ garbage collection


def _fresh_gc():
    """A fresh interpreter's collection thresholds and freeze count (3.12
    starts with a few hundred objects in the permanent generation)."""
    import subprocess
    import sys

    code = "import gc; print(*gc.get_threshold(), gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, check=True, timeout=60).stdout.split()
    return {"threshold": [int(x) for x in out[:3]], "frozen": int(out[3])}


def _python_thresholds():
    """A fresh interpreter's collection thresholds."""
    return _fresh_gc()["threshold"]


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_server_processes_freeze_the_loaded_app_and_collect_less_often(server):
    from flaskasync._serve import GC_OLDEST_THRESHOLD, GC_YOUNG_THRESHOLD

    state = server.get_json("/gc")
    python = _python_thresholds()
    # the modules, classes and functions of the loaded app
    assert state["frozen"] > _fresh_gc()["frozen"] + 1000
    if python in ([700, 10, 10], [2000, 10, 10]):  # CPython 3.11-3.12, 3.13
        assert state["threshold"] == [GC_YOUNG_THRESHOLD, 10, GC_OLDEST_THRESHOLD]
    else:  # another Python's collector: left as it is
        assert state["threshold"] == python


@pytest.mark.parametrize("kind", BOTH)
def test_gc_python_leaves_the_collector_as_python_sets_it(tmp_path, kind):
    from asgi_helpers import Server, gunicorn_cmd, serve_cmd

    if kind == "serve":
        srv = Server(serve_cmd, "asgiapp:app", tmp_path, "--gc", "python", name="gc-python")
    else:
        srv = Server(gunicorn_cmd, "asgiapp:app", tmp_path, "-w", "1",
                     env={"FLASKASYNC_GC": "python"}, name="gc-python-gunicorn")
    try:
        state = srv.get_json("/gc")
    finally:
        srv.stop()
    assert state == _fresh_gc()


def test_tune_gc_keeps_thresholds_the_app_set(tmp_path):
    import subprocess
    import sys

    code = ("import gc; gc.set_threshold(5000, 20, 30); "
            "from flaskasync._serve import tune_gc; "
            "print(tune_gc(), *gc.get_threshold(), gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["True", "5000", "20", "30", "True"]


def test_an_unknown_gc_policy_is_refused(tmp_path):
    import subprocess
    import sys

    from asgi_helpers import HERE

    cmd = [sys.executable, "-m", "flaskasync", "serve", "asgiapp:app", "--port", "1"]
    # (timeout: were the policy not checked, serve would start and serve.)
    bad_flag = subprocess.run(cmd + ["--gc", "off"], cwd=HERE, capture_output=True, text=True,
                              timeout=60)
    assert bad_flag.returncode == 2
    assert "invalid choice: 'off'" in bad_flag.stderr
    env = dict(os.environ, FLASKASYNC_GC="off")
    bad_env = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=60)
    assert bad_env.returncode == 2
    assert "FLASKASYNC_GC must be one of tuned, python, got 'off'" in bad_env.stderr


def test_serve_with_two_worker_processes(tmp_path):
    from asgi_helpers import Server, serve_cmd

    srv = Server(serve_cmd, "asgiapp:app", tmp_path, "--workers", "2", name="workers")
    try:
        elapsed, out = concurrent_gets(srv.port, "/sleep?t=0.3", 100)
        assert all(r.startswith(b"HTTP/1.1 200") for r in out)
        assert wait_for(lambda: srv.log().count("Started server process") == 2), srv.log()
    finally:
        srv.stop(__import__("signal").SIGINT)
    assert srv.log().count("Application shutdown complete") == 2, srv.log()


def test_gunicorn_worker_with_preload(tmp_path):
    from asgi_helpers import Server, gunicorn_cmd

    srv = Server(gunicorn_cmd, "asgiapp:app", tmp_path, "-w", "2", "--preload", name="preload")
    try:
        loops = {srv.get_json("/context")["loop_id"] for _ in range(20)}
        assert srv.get_json("/sync-context")["run"] == 3
        elapsed, out = concurrent_gets(srv.port, "/sleep?t=0.3", 100)
        assert all(r.startswith(b"HTTP/1.1 200") for r in out)
    finally:
        assert srv.stop() == 0, srv.log()
    assert 1 <= len(loops) <= 2


@pytest.mark.parametrize("path", ["/upload", "/sync-upload"])
def test_client_leaving_mid_upload_is_not_an_error(serve, path):
    before = serve.log().count("Traceback")
    s = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n".encode()
              + b"x" * 300_000)
    time.sleep(0.3)
    s.close()
    time.sleep(0.5)
    assert serve.request("GET", "/")[0] == 200
    log = serve.log()
    assert log.count("Traceback") == before, log[-3000:]
    assert "Exception in ASGI application" not in log


# ------------------------------------------------------------ request bodies and disconnects


def _post_then_drop(port, path, body=b"hello", after=0.3):
    """POST a body the view does not read, read the response's start, leave."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
                  .encode() + body)
        time.sleep(after)
    finally:
        s.close()


def test_disconnect_closes_a_sync_stream_whose_request_body_is_unread(serve):
    # The body is never read: the request must still be watched (and the
    # generator not run forever in a pool thread, holding up shutdown).
    k = key()
    _post_then_drop(serve.port, f"/sync-stream?t=0.05&n=100000&key={k}")
    assert wait_for(lambda: serve.events().get(f"sync-stream-finally-{k}") is True)


@pytest.mark.parametrize("server", BOTH, indirect=True)
def test_disconnect_cancels_an_async_view_whose_request_body_is_unread(server):
    k = key()
    _post_then_drop(server.port, f"/wait?key={k}")
    assert wait_for(lambda: server.events().get(k) == "cancelled"), server.events().get(k)


@pytest.mark.parametrize("path", ["/upload", "/sync-upload"])
def test_a_chunked_upload_cut_off_is_never_a_complete_body(serve, path):
    # As a WSGI server's input: werkzeug's ClientDisconnected (400), not an
    # early end of the body that the view would take for all of it.
    before = serve.log().count("Traceback")
    k = key()
    s = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
    try:
        s.sendall(f"POST {path}?key={k} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                  "\r\n".encode())
        for _ in range(3):
            s.sendall(b"400\r\n" + b"a" * 1024 + b"\r\n")
        time.sleep(0.2)
    finally:
        s.close()  # gone before the last chunk (0\r\n\r\n)
    assert wait_for(lambda: serve.events().get(f"done-{k}")), serve.events()
    assert f"upload-{k}" not in serve.events()
    assert serve.log().count("Traceback") == before, serve.log()[-3000:]


@pytest.mark.parametrize("path", ["/upload", "/sync-upload"])
def test_a_sync_hook_refuses_an_upload_before_its_body_is_read(serve, path):
    # Announce 4 MB (under MAX_CONTENT_LENGTH), send 64 KB: the hook's 401
    # comes back without the rest, for an async view too.
    s = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
    try:
        s.sendall(f"POST {path}?auth=1 HTTP/1.1\r\nHost: t\r\nContent-Length: {4 << 20}\r\n\r\n"
                  .encode() + b"x" * 65536)
        data = s.recv(65536)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 401"), data[:200]


_LIMIT_SETTABLE = getattr(getattr(__import__("flask").Request, "max_content_length", None),
                          "fset", None) is not None
needs_settable_limit = pytest.mark.skipif(
    not _LIMIT_SETTABLE, reason="request.max_content_length is settable from Flask 3.1")


def _upload(serve, path, body, chunked):
    if chunked:
        def chunks():
            for i in range(0, len(body), 256 * 1024):
                yield body[i:i + 256 * 1024]
        return serve.request("POST", path, body=chunks(),
                             headers={"Transfer-Encoding": "chunked"}, timeout=30)
    return serve.request("POST", path, body=body, timeout=30)


@needs_settable_limit
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("path, hook", [("/limit/upload", "sync"), ("/limit/upload", "async"),
                                        ("/limit/sync-upload", "sync")])
def test_a_hook_can_raise_the_body_limit_of_its_request(serve, path, hook, chunked):
    body = os.urandom(9 << 20)  # over the app's MAX_CONTENT_LENGTH (8 MB)
    status, _, resp = _upload(serve, f"{path}?limit={16 << 20}&hook={hook}", body, chunked)
    assert status == 200, resp[:300]
    assert json.loads(resp)["n"] == len(body)


@needs_settable_limit
@pytest.mark.parametrize("hook", ["sync", "async"])
def test_a_hook_can_lower_the_body_limit_of_its_request(serve, hook):
    # (A chunked body over the limit: werkzeug's get_data() returns the
    # first max_content_length bytes, under any server; not tested here.)
    status, _, _ = _upload(serve, f"/limit/upload?limit=1000&hook={hook}", b"x" * 5000, False)
    assert status == 413


# ------------------------------------------------------------ responses


@pytest.mark.parametrize("chunks", ["one", "more", "split"])
@pytest.mark.parametrize("view", ["/cl-gen", "/async-cl-gen"])
def test_a_generator_with_content_length_is_run_to_its_end(serve, view, chunks):
    # As a WSGI server does: the code after the last yield runs, and bytes
    # past the Content-Length are not sent.
    k = key()
    status, _, body = serve.request("GET", f"{view}?key={k}&chunks={chunks}")
    assert status == 200 and body == b"hello"
    assert wait_for(lambda: serve.events().get(k) == "after the last yield"), serve.events()
    assert "Exception in ASGI application" not in serve.log()
