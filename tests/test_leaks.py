"""Reference, object and fd leak tests (flaskasync only: they count objects
and Handles of the C extension)."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import tracemalloc
import warnings

import pytest

import flaskasync
from flaskasync import _core

N = 10_000
WARMUP = 1_000
# Growth allowed whatever the iteration count (caches, interned strings, the
# measuring itself).  A leak of one object per iteration is 10,000.
MAX_OBJECT_GROWTH = 100


def _counts():
    gc.collect()
    gc.collect()
    return len(gc.get_objects()), _core._live_handles()


# Memory growth allowed (bytes, traced by tracemalloc) whatever the iteration
# count; catches leaked objects that the GC does not track (floats, str,
# tuples of atoms), which len(gc.get_objects()) cannot see.  A leak of one
# small object per iteration is >= 10,000 * 16 bytes.
MAX_MEMORY_GROWTH = 64 * 1024


def check_no_leak(step, n=N, warmup=WARMUP, memory=True):
    """Run step(k) for a warm-up, then for n iterations, and compare the
    number of GC objects, live Handles and (unless memory=False) traced
    memory before and after."""
    step(warmup)
    objs0, handles0 = _counts()
    step(n)
    objs1, handles1 = _counts()
    assert handles1 - handles0 <= 0, f"{handles1 - handles0} Handles leaked over {n} iterations"
    assert objs1 - objs0 < MAX_OBJECT_GROWTH, (
        f"{objs1 - objs0} objects more after {n} iterations"
    )
    if not memory:
        return
    # Second pass under tracemalloc (slower, so separate from the counts).
    tracemalloc.start()
    try:
        step(warmup)
        gc.collect()
        mem0 = tracemalloc.get_traced_memory()[0]
        step(n)
        gc.collect()
        mem1 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert mem1 - mem0 < MAX_MEMORY_GROWTH, f"memory grew by {mem1 - mem0} bytes over {n} iterations"


def _noop(*args):
    pass


async def _trivial():
    return None


def _fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def lp():
    loop = flaskasync.new_event_loop()
    # Debug mode (PYTHONASYNCIODEBUG=1) records a stack per handle: far too
    # slow for 10,000 iterations, and not what these tests measure.
    loop.set_debug(False)
    yield loop
    loop.close()


@pytest.fixture
def app_loop():
    """The app loop with debug mode off for the duration of the test."""
    loop = flaskasync.get_loop()
    was = loop.get_debug()
    loop.set_debug(False)
    yield loop
    loop.set_debug(was)


def _run_once(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_leak_call_soon_and_run(lp):
    def step(n):
        for i in range(n):
            lp.call_soon(_noop, i)
            _run_once(lp)

    check_no_leak(step)


def test_leak_call_later_and_cancel(lp):
    def step(n):
        for i in range(n):
            h = lp.call_later(10, _noop, i)
            h.cancel()
        _run_once(lp)

    check_no_leak(step)
    assert lp._timer_count == 0


def test_leak_timers_that_fire(lp):
    def step(n):
        for i in range(n):
            lp.call_later(0, _noop, i)
        lp.run_until_complete(asyncio.sleep(0.001))

    check_no_leak(step)


def test_leak_create_task(lp):
    def step(n):
        for _ in range(n):
            lp.run_until_complete(lp.create_task(_trivial()))

    check_no_leak(step)


def test_leak_failing_tasks(lp):
    async def fail():
        raise ValueError

    async def main(n):
        for _ in range(n):
            try:
                await lp.create_task(fail())
            except ValueError:
                pass

    check_no_leak(lambda n: lp.run_until_complete(main(n)))


def test_leak_flaskasync_run(app_loop):
    def step(n):
        for _ in range(n):
            flaskasync.run(_trivial())

    check_no_leak(step)


def test_leak_flaskasync_run_with_sleep(app_loop):
    async def main():
        await asyncio.sleep(0)

    def step(n):
        for _ in range(n // 10):
            flaskasync.run(main(), timeout=5)

    check_no_leak(step)


def test_leak_flaskasync_run_exception(app_loop):
    async def fail():
        raise KeyError

    def step(n):
        for _ in range(n):
            try:
                flaskasync.run(fail())
            except KeyError:
                pass

    check_no_leak(step)


def test_leak_flaskasync_run_timeout(app_loop):
    async def forever():
        await asyncio.sleep(10)

    def step(n):
        for _ in range(n // 10):
            try:
                flaskasync.run(forever(), timeout=0)
            except TimeoutError:
                pass

    check_no_leak(step)


def test_leak_call_soon_threadsafe(lp):
    def step(n):
        for i in range(n):
            lp.call_soon_threadsafe(_noop, i)
        _run_once(lp)

    check_no_leak(step)


def test_leak_callback_exceptions(lp):
    def bad(i):
        raise ValueError(i)

    lp.set_exception_handler(lambda loop, ctx: None)

    def step(n):
        for i in range(n):
            lp.call_soon(bad, i)
            if i % 100 == 0:
                _run_once(lp)
        _run_once(lp)

    check_no_leak(step)


def test_leak_debug_mode_handles(lp):
    lp.set_debug(True)

    def step(n):
        for i in range(n // 10):
            lp.call_soon(_noop, i)
            lp.call_later(10, _noop).cancel()
        _run_once(lp)

    check_no_leak(step)


def test_leak_gather(lp):
    async def main(n):
        for _ in range(n):
            await flaskasync.gather(*[_trivial() for _ in range(10)])

    check_no_leak(lambda n: lp.run_until_complete(main(n)))


def test_leak_gather_exceptions(lp):
    async def fail():
        raise ValueError

    async def main(n):
        for _ in range(n // 10):
            await flaskasync.gather(_trivial(), fail(), return_exceptions=True)
            try:
                await flaskasync.gather(_trivial(), fail(), fail())
            except ValueError:
                pass
            await asyncio.sleep(0)

    check_no_leak(lambda n: lp.run_until_complete(main(n)))


def test_leak_gather_cancel(lp):
    async def main(n):
        for _ in range(n // 10):
            g = flaskasync.gather(asyncio.sleep(1), asyncio.sleep(1))
            await asyncio.sleep(0)
            g.cancel()
            try:
                await g
            except asyncio.CancelledError:
                pass

    check_no_leak(lambda n: lp.run_until_complete(main(n)))


def test_leak_add_remove_reader(lp):
    a, b = socket.socketpair()
    try:
        _run_once(lp)  # the loop's own fds (signal wakeup pipe) exist from here
        fds_before = _fds()

        def step(n):
            for i in range(n):
                lp.add_reader(a.fileno(), _noop, i)
                lp.remove_reader(a.fileno())
                _run_once(lp)

        check_no_leak(step)
        assert _fds() == fds_before
    finally:
        a.close()
        b.close()


def test_leak_reader_fires(lp):
    a, b = socket.socketpair()
    a.setblocking(False)
    try:

        def on_read():
            a.recv(10)

        def step(n):
            lp.add_reader(a.fileno(), on_read)
            for _ in range(n // 10):
                b.send(b"x")
                _run_once(lp)
            lp.remove_reader(a.fileno())
            _run_once(lp)

        check_no_leak(step)
    finally:
        a.close()
        b.close()


def test_loop_create_close_does_not_leak_fds():
    def step(n):
        for _ in range(n):
            loop = flaskasync.new_event_loop()
            loop.close()

    step(10)
    fds0 = _fds()
    step(1000)
    gc.collect()
    assert _fds() - fds0 <= 0


def test_loop_with_watchers_and_timers_close_does_not_leak_fds():
    a, b = socket.socketpair()
    try:
        fds0 = _fds()
        for _ in range(300):
            loop = flaskasync.new_event_loop()
            loop.add_reader(a.fileno(), _noop)
            loop.add_writer(b.fileno(), _noop)
            loop.call_later(10, _noop)
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()
        gc.collect()
        assert _fds() - fds0 <= 0
    finally:
        a.close()
        b.close()


def test_unclosed_loop_collected_does_not_leak_fds():
    fds0 = _fds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(300):
            loop = flaskasync.new_event_loop()
            loop.call_soon(_noop)
            del loop
        gc.collect()
    assert _fds() - fds0 <= 0


def test_loops_do_not_accumulate():
    # Closed loops and their handles are freed (no cycle kept alive by the C
    # core).
    import weakref

    refs = []
    for _ in range(50):
        loop = flaskasync.new_event_loop()
        loop.call_soon(_noop)
        loop.call_later(1, _noop)
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        refs.append(weakref.ref(loop))
        del loop
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


# ------------------------------------------------------------ transports


class _EchoCount(asyncio.BufferedProtocol):
    """Collects what it receives; connection_lost resolves `lost`."""

    def __init__(self, loop, buffered=False):
        self.lost = loop.create_future()
        self.received = 0
        self._buf = bytearray(4096)

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self._buf

    def buffer_updated(self, nbytes):
        self.received += nbytes

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class _Plain(asyncio.Protocol):
    def __init__(self, loop):
        self.lost = loop.create_future()
        self.received = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received += len(data)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def test_leak_socket_transports(lp):
    # Both ends of a socketpair as transports: writes, writelines, write_eof,
    # pause/resume, close on one side and EOF on the other, every iteration.
    async def one():
        a, b = socket.socketpair()
        ta, pa = await lp.connect_accepted_socket(lambda: _Plain(lp), a)
        tb, pb = await lp.connect_accepted_socket(lambda: _EchoCount(lp), b)
        ta.write(b"x" * 100)
        ta.writelines([b"y" * 10, bytearray(b"z" * 10), memoryview(b"w" * 10)])
        tb.pause_reading()
        tb.resume_reading()
        ta.write_eof()
        await pb.lost
        tb.close()
        await pa.lost
        assert pb.received == 130
        ta.close()

    def step(k):
        for _ in range(k):
            lp.run_until_complete(one())

    _run_once(lp)  # the loop's own fds (signal wakeup pipe) exist from here
    fds = _fds()
    check_no_leak(step, n=3000, warmup=300)
    assert _fds() == fds


def test_leak_tcp_connections_and_server(lp):
    async def main(k, port):
        for _ in range(k):
            tr, pr = await lp.create_connection(lambda: _Plain(lp), "127.0.0.1", port)
            tr.write(b"ping")
            await pr.lost  # the server echoes and closes
            tr.close()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)
            self.transport.close()

    srv = lp.run_until_complete(lp.create_server(Echo, "127.0.0.1", 0))
    port = srv.sockets[0].getsockname()[1]
    _run_once(lp)  # the loop's own fds (signal wakeup pipe) exist from here
    fds = _fds()
    try:
        check_no_leak(lambda k: lp.run_until_complete(main(k, port)), n=1500, warmup=200)
    finally:
        srv.close()
        lp.run_until_complete(srv.wait_closed())
    assert _fds() <= fds


def test_leak_transport_errors(lp):
    # Refused connections, and a protocol whose data_received raises (the
    # exception goes to the handler, the transport is closed).
    lp.set_exception_handler(lambda loop, ctx: None)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    closed_port = lsock.getsockname()[1]
    lsock.close()

    class Bad(_Plain):
        def data_received(self, data):
            raise ValueError("boom")

    async def one():
        try:
            await lp.create_connection(asyncio.Protocol, "127.0.0.1", closed_port)
        except ConnectionRefusedError:
            pass
        a, b = socket.socketpair()
        ta, pa = await lp.connect_accepted_socket(lambda: _Plain(lp), a)
        tb, pb = await lp.connect_accepted_socket(lambda: Bad(lp), b)
        ta.write(b"data")
        exc = await pb.lost
        assert isinstance(exc, ValueError)
        await pa.lost
        ta.close()

    def step(k):
        for _ in range(k):
            lp.run_until_complete(one())

    _run_once(lp)  # the loop's own fds (signal wakeup pipe) exist from here
    fds = _fds()
    check_no_leak(step, n=2000, warmup=200)
    assert _fds() == fds


def test_leak_pipe_transports(lp):
    async def one():
        r, w = os.pipe()
        rf, wf = os.fdopen(r, "rb", buffering=0), os.fdopen(w, "wb", buffering=0)
        tr, pr = await lp.connect_read_pipe(lambda: _Plain(lp), rf)
        tw, pw = await lp.connect_write_pipe(lambda: _Plain(lp), wf)
        tw.write(b"through the pipe")
        tw.close()
        await pw.lost
        await pr.lost
        assert pr.received == 16

    def step(k):
        for _ in range(k):
            lp.run_until_complete(one())

    _run_once(lp)  # the loop's own fds (signal wakeup pipe) exist from here
    fds = _fds()
    check_no_leak(step, n=3000, warmup=300)
    assert _fds() == fds


def test_leak_subprocesses(lp):
    # Pipes, the pidfd watch and the subprocess transport, per process.
    async def one():
        proc = await asyncio.create_subprocess_exec(
            "true", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(b"x")
        assert out == b"" and proc.returncode == 0

    def step(k):
        for _ in range(k):
            lp.run_until_complete(one())

    _run_once(lp)
    fds = _fds()
    # Objects, Handles and fds only: the traced memory of this path moves by
    # ~50-140 KB without a trend (100 KB after 300 processes, 69 KB after
    # 600, the same on repeated runs): freelists and caches of subprocess
    # and of the tuples freed in bulk by the GC, not a per-process leak.
    check_no_leak(step, n=300, warmup=30, memory=False)
    assert _fds() == fds


def test_leak_tls_connections(lp):
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)
            self.transport.close()

    async def main(k, port):
        for _ in range(k):
            tr, pr = await lp.create_connection(lambda: _Plain(lp), "127.0.0.1", port,
                                                ssl=client_ctx, server_hostname="localhost")
            tr.write(b"ping")
            await pr.lost
            tr.close()

    srv = lp.run_until_complete(lp.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx))
    port = srv.sockets[0].getsockname()[1]
    fds = _fds()
    try:
        check_no_leak(lambda k: lp.run_until_complete(main(k, port)), n=400, warmup=50)
    finally:
        srv.close()
        lp.run_until_complete(srv.wait_closed())
    assert _fds() <= fds
