"""Helpers of the ASGI-mode tests: real servers started as subprocesses on
free ports of 127.0.0.1, talked to over HTTP.  (A module of its own: a
module named conftest is ambiguous in a whole-suite run.)"""

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

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLES = HERE.parent.parent / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_cmd(port, target, *extra):
    return [sys.executable, "-m", "flaskasync", "serve", target, "--port", str(port), *extra]


def gunicorn_cmd(port, target, *extra):
    return [sys.executable, "-m", "gunicorn", "-k", "flaskasync.GunicornWorker",
            "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", *extra, target]


def uvicorn_cmd(port, target, *extra):
    return [sys.executable, "-m", "uvicorn", "--loop", "flaskasync:new_event_loop",
            "--http", "httptools", "--port", str(port), *extra, target]


class Server:
    """A server process; its output goes to files read by log()."""

    def __init__(self, cmd, target, workdir: pathlib.Path, *extra, cwd=HERE, env=None, name="server"):
        self.port = free_port()
        self.markers = workdir / f"{name}-markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.out_path = workdir / f"{name}.out"
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", FA_MARKER_DIR=str(self.markers))
        full_env.update(env or {})
        full_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(cwd), full_env.get("PYTHONPATH")]))
        out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(cmd(self.port, target, *extra), cwd=cwd, env=full_env,
                                     stdout=out, stderr=subprocess.STDOUT)
        out.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop(signal.SIGKILL, timeout=5)
            raise

    def _wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                # Listening; lifespan startup has completed once it answers.
                self.request("GET", "/__ready__", timeout=5)
                return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.out_path.read_text(errors="replace")

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            chunked = (headers or {}).get("Transfer-Encoding") == "chunked"
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def get_json(self, path, **kw):
        status, headers, body = self.request("GET", path, **kw)
        assert status == 200, (status, body[:500])
        return json.loads(body)

    def events(self) -> dict:
        return self.get_json("/events")

    def stop(self, sig=signal.SIGTERM, timeout=20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_for(predicate, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
