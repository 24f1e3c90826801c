"""Shared network clients under a real WSGI server: sharedclients_app.py (one
httpx.AsyncClient for HTTP and one for HTTPS, a redis.asyncio client and an
asyncpg pool, each made once per process) served by gunicorn's gthread worker
(2 processes × 8 threads) against real peers (tests/peers/peerservers.py:
an HTTP(S) server, redis-server, PostgreSQL), hit with thousands of requests
from several client threads.

- flaskasync: every response is 200 and right, the clients are made once per
  process, and the server log holds no "Event loop is closed", no "attached
  to a different loop", no Traceback, through to a graceful stop.
- loop-thread (a reference with asyncio's loop): the same app with its async
  views run on one asyncio loop in a thread of its own passes the same test:
  the property is "one long-lived loop", which the test measures.
- asgiref (plain Flask): the contrast, proven rather than assumed: a pair of
  requests using a client kept from the first fails on the second with one
  of those errors.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "peers"))
import peerservers  # noqa: E402  (tests/peers, shared with the peer tests)

for _name in ("httpx", "redis", "asyncpg"):
    peerservers.import_or_skip(_name)

LOOP_ERRORS = ("Event loop is closed", "attached to a different loop")
CLIENT_THREADS = 8
REQUESTS_PER_THREAD = 400  # 3,200 requests per server
ROUTES = ("http", "https", "redis", "pg", "all")


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    started = []
    try:
        httpd = peerservers.start_http(tmp_path_factory.mktemp("shared-http"))
        started.append(httpd)
        redis = peerservers.start_redis(tmp_path_factory.mktemp("shared-redis"))
        started.append(redis)
        pg = peerservers.start_postgres()
        started.append(pg)
        yield SimpleNamespace(http=httpd, redis=redis, pg=pg)
    finally:
        for peer in reversed(started):
            peer.stop()


class Gunicorn:
    """gunicorn -k gthread serving sharedclients_app:app, SHARED_MODE=mode."""

    def __init__(self, mode: str, peers, workdir: pathlib.Path, workers: int, threads: int):
        self.mode = mode
        self.port = peerservers.free_port()
        self.log_path = workdir / f"gunicorn-{mode}.log"
        env = dict(
            os.environ, PYTHONUNBUFFERED="1", SHARED_MODE=mode,
            PEER_HTTP_URL=peers.http.url, PEER_HTTPS_URL=peers.http.tls_url,
            PEER_CA=str(peers.http.ca_path), PEER_REDIS_URL=peers.redis.url, PEER_PG_DSN=peers.pg.dsn,
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(workers),
                 "--threads", str(threads), "-b", f"127.0.0.1:{self.port}",
                 "--graceful-timeout", "20", "--log-level", "info", "sharedclients_app:app"],
                cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn ({mode}) exited at startup:\n{self.log()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"gunicorn ({mode}) did not listen:\n{self.log()[-3000:]}")
                time.sleep(0.05)
        # Every worker up (the first request may otherwise race a booting one).
        deadline = time.monotonic() + 30
        while self.log().count("Booting worker with pid") < workers and time.monotonic() < deadline:
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM: gunicorn's graceful stop; each worker exits normally."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"gunicorn did not stop within {timeout} s:\n{self.log()[-3000:]}")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def expected(route: str, n: int):
    h = {"x": str(n), "scheme": "http"}
    s = {"x": str(n), "scheme": "https"}
    r = {"x": str(n)}
    p = {"x": 2 * n}
    return {"http": h, "https": s, "redis": r, "pg": p,
            "all": {"http": h, "https": s, "redis": r, "pg": p}}[route]


def hammer(port: int, threads: int, per_thread: int):
    """Each client thread sends per_thread requests over one kept-alive
    connection, cycling through ROUTES; returns the mismatches and the count
    of redis-touching requests."""

    def client(t):
        bad = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for i in range(per_thread):
                route = ROUTES[(t + i) % len(ROUTES)]
                n = t * 100_000 + i
                conn.request("GET", f"/{route}/{n}")
                resp = conn.getresponse()
                body = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                try:
                    value = json.loads(body)
                except ValueError:
                    value = body[:300]
                if resp.status != 200 or value != expected(route, n):
                    bad.append((route, n, resp.status, value))
        finally:
            conn.close()
        return bad

    with ThreadPoolExecutor(threads) as pool:
        bad = [b for per_thread_bad in pool.map(client, range(threads)) for b in per_thread_bad]
    redis_ops = sum(1 for t in range(threads) for i in range(per_thread)
                    if ROUTES[(t + i) % len(ROUTES)] in ("redis", "all"))
    return bad, redis_ops


def creations(log: str):
    """{pid: [kind, ...]} from the app's 'created KIND in pid PID' lines."""
    out: dict[str, list[str]] = {}
    for kind, pid in re.findall(r"sharedclients: created (\S+) in pid (\d+)", log):
        out.setdefault(pid, []).append(kind)
    return out


def redis_get(peer, key):
    import redis

    r = redis.Redis.from_url(peer.url, decode_responses=True)
    try:
        return r.get(key)
    finally:
        r.close()


def redis_delete(peer, key):
    import redis

    r = redis.Redis.from_url(peer.url, decode_responses=True)
    try:
        r.delete(key)
    finally:
        r.close()


@pytest.mark.parametrize("mode", ["flaskasync", "loop-thread"])
def test_thousands_of_requests_share_the_clients(mode, peers, tmp_path):
    redis_delete(peers.redis, "shared:count")
    server = Gunicorn(mode, peers, tmp_path, workers=2, threads=8)
    try:
        t0 = time.monotonic()
        bad, redis_ops = hammer(server.port, CLIENT_THREADS, REQUESTS_PER_THREAD)
        elapsed = time.monotonic() - t0
    finally:
        returncode = server.stop()
    log = server.log()
    total = CLIENT_THREADS * REQUESTS_PER_THREAD
    assert not bad, f"{len(bad)} of {total} responses wrong, first ones: {bad[:5]}\n{log[-4000:]}"
    # Every request did its redis work (one INCR each), none twice.
    assert int(redis_get(peers.redis, "shared:count")) == redis_ops

    for message in LOOP_ERRORS + ("Traceback",):
        assert message not in log, f"{message!r} in the server log:\n{log[-6000:]}"
    assert returncode == 0, log[-3000:]

    # Each worker process made each client once, and no more, however many
    # of its threads needed one at the same time.
    made = creations(log)
    assert 1 <= len(made) <= 2, made
    for pid, kinds in made.items():
        assert sorted(kinds) == sorted(set(kinds)), (pid, kinds)
        assert {"httpx-plain", "httpx-tls", "redis"} <= set(kinds), (pid, kinds)
    assert any("asyncpg-pool" in kinds for kinds in made.values())
    if mode == "flaskasync":
        # At exit each worker closed its clients on the app loop (an atexit
        # handler of the app), cleanly: the loop outlives the last request.
        closed = re.findall(r"sharedclients: closed the clients in pid (\d+)", log)
        assert sorted(closed) == sorted(made), (closed, made, log[-3000:])
    print(f"{mode}: {total} requests in {elapsed:.1f} s ({total / elapsed:.0f}/s)")


def test_flask_default_breaks_shared_clients(peers, tmp_path):
    """Plain Flask (asgiref: a new event loop per call) with the same app: a
    request that reuses a client kept from an earlier request fails."""
    peerservers.import_or_skip("asgiref")
    # One worker process, so both requests of a pair meet the same client.
    server = Gunicorn("asgiref", peers, tmp_path, workers=1, threads=4)
    try:
        for route in ("http", "https", "redis", "pg"):
            before = len(server.log())
            first = server.get(f"/{route}/1")
            second = server.get(f"/{route}/2")
            assert first[0] == 200 and json.loads(first[1]) == expected(route, 1), (route, first)
            assert second[0] == 500, (route, second)
            new_log = server.log()[before:]
            assert any(message in new_log for message in LOOP_ERRORS), (route, new_log[-3000:])
    finally:
        server.stop()
