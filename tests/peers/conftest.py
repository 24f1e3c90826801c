"""Fixtures of the real-peer tests: session-scoped servers (HTTP and HTTPS,
redis-server, PostgreSQL; see peerservers.py) and `arun`, which runs a
coroutine on the test's loop.

The loop comes from tests/conftest.py: the `loop` fixture is parametrized
over flaskasync's loop (`flaskasync.new_event_loop()`, a `flaskasync.Loop`)
and asyncio's own (`asyncio.new_event_loop()`), and closes it after the
test.  So every test that takes `arun` (or `loop`) runs the same body on
both; asyncio's is the reference.
"""

from __future__ import annotations

import asyncio

import pytest

import peerservers


@pytest.fixture(scope="session")
def http_peer(tmp_path_factory):
    peer = peerservers.start_http(tmp_path_factory.mktemp("http-peer"))
    yield peer
    peer.stop()
    # What the clients sent, on either loop, the server could parse.
    assert "Traceback" not in peer.log(), peer.log()[-5000:]


@pytest.fixture(scope="session")
def redis_peer(tmp_path_factory):
    peer = peerservers.start_redis(tmp_path_factory.mktemp("redis-peer"))
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def pg_peer():
    peer = peerservers.start_postgres()
    yield peer
    peer.stop()


# Each test's coroutine gets this long; well under tests/conftest.py's
# 150 s watchdog, so a hang is reported as a TimeoutError on the test.
TEST_TIMEOUT = 60.0


@pytest.fixture
def arun(loop):
    """arun(coro, timeout=60): run coro to completion on the test's loop."""

    def _run(coro, timeout: float = TEST_TIMEOUT):
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    return _run


@pytest.fixture
def unique(request, loop_kind):
    """A name unique to this test and loop kind, for redis keys, channels, tables."""
    name = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    return f"fa_{name}"
