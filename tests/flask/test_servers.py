"""Real servers: flask run (threaded), gunicorn (sync and gthread workers, two
worker processes, with and without --preload) and waitress, on 127.0.0.1,
as subprocesses, spoken to over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from fa_helpers import wait_for

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLES = HERE.parent.parent / "examples"
SEED_RESULT = [{"x": x} for x in range(5)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn(worker, preload):
    def cmd(port, target):
        args = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", worker,
                "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "--log-level", "info"]
        if worker == "gthread":
            args += ["--threads", "8"]
        if preload:
            args.append("--preload")
        return args + [target]

    return cmd


SERVERS = {
    "flask-run": lambda port, target: [
        sys.executable, "-m", "flask", "--app", target, "run",
        "--host", "127.0.0.1", "--port", str(port), "--with-threads",
    ],
    "gunicorn-sync": gunicorn("sync", preload=False),
    "gunicorn-sync-preload": gunicorn("sync", preload=True),
    "gunicorn-gthread": gunicorn("gthread", preload=False),
    "gunicorn-gthread-preload": gunicorn("gthread", preload=True),
    "waitress": lambda port, target: [
        sys.executable, "-m", "waitress", "--listen", f"127.0.0.1:{port}", "--threads", "8", target,
    ],
}
THREADED = {"flask-run", "gunicorn-gthread", "gunicorn-gthread-preload", "waitress"}
# gunicorn turns SIGTERM into a graceful, normal exit of each worker; the
# other two exit normally (atexit runs) on SIGINT.
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


STOP_SIGNAL = {name: signal.SIGTERM if name.startswith("gunicorn") else signal.SIGINT for name in SERVERS}


class Server:
    def __init__(self, kind: str, target: str, cwd: pathlib.Path, workdir: pathlib.Path):
        self.kind = kind
        self.port = free_port()
        self.markers = workdir / "markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.stderr_path = workdir / f"{kind}.stderr"
        self.stdout_path = workdir / f"{kind}.stdout"
        env = dict(os.environ, PYTHONUNBUFFERED="1", FA_MARKER_DIR=str(self.markers))
        env.pop("FLASK_DEBUG", None)
        env.pop("FLASK_APP", None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            SERVERS[kind](self.port, target), cwd=cwd, env=env,
            stdout=open(self.stdout_path, "wb"), stderr=open(self.stderr_path, "wb"),
            start_new_session=True,
            # A test run started in the background (a non-interactive shell's
            # `&`) inherits SIGINT ignored, and Python keeps an ignored SIGINT
            # ignored: restore the default so the stop signal arrives.
            preexec_fn=_default_sigint,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at startup:\n{self.stderr()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.kind} did not listen within {timeout} s:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def get(self, path: str, method: str = "GET", timeout: float = 10.0):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        t0 = time.monotonic()
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, body, time.monotonic() - t0

    def stop(self, sig=None, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig or STOP_SIGNAL[self.kind])
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.kind} did not stop within {timeout} s:\n{self.stderr()}")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(params=list(SERVERS))
def server_kind(request):
    return request.param


def concurrently(fn, n):
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


# ------------------------------------------------------------ the seed example


@pytest.mark.parametrize("kind", list(SERVERS))
def test_seed_example(kind, tmp_path):
    server = Server(kind, "app:app", EXAMPLES, tmp_path)
    try:
        status, body, elapsed = server.get("/")
        assert status == 200
        assert json.loads(body) == SEED_RESULT
        # Gathered: about 1 s (one after another: 5 s); room for a loaded machine.
        assert 0.95 <= elapsed < 2.5, f"{kind}: {elapsed:.2f} s"
        # Concurrent requests overlap: threads share the one loop per process.
        n = 4 if kind in THREADED else 2  # sync workers: one request per process
        t0 = time.monotonic()
        results = concurrently(lambda: server.get("/"), n)
        total = time.monotonic() - t0
        assert all(json.loads(body) == SEED_RESULT for _, body, _ in results)
        assert total < 1.8, f"{kind}: {n} concurrent seed requests took {total:.2f} s"
        assert server.stdout().count("Called coro with 4") == 1 + n
    finally:
        server.stop()
        server.kill()


# ------------------------------------------------------------ the richer test app


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request, tmp_path_factory):
    kind = request.param
    srv = Server(kind, "serverapp:app", HERE, tmp_path_factory.mktemp(kind))
    yield srv
    srv.kill()


def test_worker_processes(server):
    if not server.kind.startswith("gunicorn"):
        pytest.skip("one process")
    wait_for(lambda: server.stderr().count("Booting worker with pid") == 2, timeout=10)
    if "sync" in server.kind:
        # A sync worker serves one request at a time: two concurrent slow
        # requests are served by both processes, each on its own app loop.
        pids = {body for _, body, _ in concurrently(lambda: server.get("/slowpid"), 2)}
        assert len(pids) == 2


def test_shared_lock_in_each_process(server):
    results = concurrently(lambda: json.loads(server.get("/incr", method="POST")[1]), 40)
    by_pid = {}
    for r in results:
        by_pid.setdefault(r["pid"], []).append(r["value"])
    for pid, values in by_pid.items():
        # No lost or duplicate increments: the module-level lock works across
        # every request thread of the process.
        assert sorted(values) == list(range(min(values), min(values) + len(values))), (pid, values)


def test_background_task_outlives_the_response(server):
    status, body, elapsed = server.get("/bg/bg-done")
    assert (status, body) == (200, b"started") and elapsed < 0.2
    marker = server.markers / "bg-done"
    assert not marker.exists()
    wait_for(marker.exists)
    assert marker.read_text() == "/bg/bg-done"


def test_streaming_is_chunk_by_chunk(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    t0 = time.monotonic()
    conn.request("GET", "/stream/4")
    resp = conn.getresponse()
    arrivals = []
    while True:
        line = resp.readline()
        if not line:
            break
        arrivals.append((line.decode(), time.monotonic() - t0))
    conn.close()
    assert [line for line, _ in arrivals] == [f"chunk {i} /stream/4\n" for i in range(4)]
    assert arrivals[0][1] < 0.2 and arrivals[-1][1] >= 0.29
    assert arrivals[-1][1] - arrivals[0][1] >= 0.25


def test_client_disconnect_closes_the_generator(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET /forever/gone HTTP/1.1\r\nHost: localhost\r\n\r\n")
    received = b""
    while b"tick 2" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the stream"
        received += chunk
    sock.close()
    marker = server.markers / "gone"
    wait_for(marker.exists, timeout=10)
    # Closed by the server's close() (aclose, in the request's context), not
    # by garbage collection of the generator.
    text = marker.read_text()
    assert text.startswith("closed after") and text.endswith(" chunks of /forever/gone"), text


def test_stream_failing_midway_is_logged(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/boom-stream")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        resp.read()
    conn.close()
    wait_for(lambda: "exception while streaming the response to GET /boom-stream" in server.stderr())
    assert "ValueError: stream broke midway" in server.stderr()


def test_zz_shutdown_cancels_background_tasks_and_logs_them(server):
    # Runs last for each server: it stops it.
    assert server.get("/stuck/stuck-task")[1] == b"spawned"
    returncode = server.stop()
    stderr = server.stderr()
    assert "cancelling background task 'stuck-task' (" in stderr, stderr[-3000:]
    assert (server.markers / "stuck-task").read_text() == "cancelled at shutdown"
    assert returncode == 0 or server.kind == "flask-run", (returncode, stderr[-2000:])
