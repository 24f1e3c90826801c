"""loop.sock_* on flaskasync's loop and asyncio's: real sockets on loopback
and socketpairs, same results, same exception types, cancellation that
leaves the fd unwatched, and no fd or object leaks."""

from __future__ import annotations

import asyncio
import errno
import gc
import io
import os
import socket
import ssl
import struct
import tempfile
import warnings
import threading
import time

import pytest

import flaskasync
from flaskasync import _core

HAS_IPV6 = socket.has_ipv6
try:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as _s:
        _s.bind(("::1", 0))
except OSError:
    HAS_IPV6 = False


def run(loop, coro, timeout=20):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def nb(sock):
    sock.setblocking(False)
    return sock


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    nb(a), nb(b)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def listener():
    srv = nb(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield srv
    srv.close()


def tcp_pair(loop, srv, host="127.0.0.1"):
    """A connected (client, server-side) TCP pair made with sock_connect and
    sock_accept."""

    async def main():
        c = nb(socket.socket(srv.family, socket.SOCK_STREAM))
        accept = loop.create_task(loop.sock_accept(srv))
        await loop.sock_connect(c, (host, srv.getsockname()[1]))
        conn, addr = await accept
        return c, conn, addr

    return run(loop, main())


# ------------------------------------------------------------- receive


def test_recv_ready_and_pending(loop, pair):
    a, b = pair

    async def main():
        b.send(b"now")
        assert await loop.sock_recv(a, 100) == b"now"
        task = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        assert not task.done()
        await loop.sock_sendall(b, b"later")
        assert await task == b"later"
        b.shutdown(socket.SHUT_WR)
        assert await loop.sock_recv(a, 100) == b""

    run(loop, main())


def test_recv_into(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(10)
        task = loop.create_task(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0.01)
        b.send(b"abc")
        assert await task == 3
        assert buf[:3] == b"abc"
        b.send(b"0123456789xyz")
        mv = memoryview(buf)[2:6]
        assert await loop.sock_recv_into(a, mv) == 4
        assert buf[2:6] == b"0123"

    run(loop, main())


def test_recv_n_errors(loop, pair):
    a, _ = pair

    async def main():
        with pytest.raises(ValueError, match="negative buffersize"):
            await loop.sock_recv(a, -1)
        with pytest.raises(TypeError):
            await loop.sock_recv(a, "x")
        with pytest.raises(TypeError):
            await loop.sock_recv_into(a, b"immutable")

    run(loop, main())


# ---------------------------------------------------------------- send


def test_sendall_large_to_slow_reader(loop, pair):
    a, b = pair
    data = os.urandom(4 * 1024 * 1024 + 17)

    async def reader():
        chunks = []
        got = 0
        while got < len(data):
            chunk = await loop.sock_recv(b, 65536)
            assert chunk
            chunks.append(chunk)
            got += len(chunk)
            if len(chunks) % 8 == 0:
                await asyncio.sleep(0.001)  # slow
        return b"".join(chunks)

    async def main():
        rt = loop.create_task(reader())
        await loop.sock_sendall(a, data)
        return await rt

    assert run(loop, main()) == data


def test_sendall_accepts_buffers(loop, pair):
    a, b = pair

    async def main():
        await loop.sock_sendall(a, bytearray(b"ba"))
        await loop.sock_sendall(a, memoryview(b"xmvx")[1:3])
        await loop.sock_sendall(a, b"")
        await asyncio.sleep(0.01)
        return b.recv(100)

    assert run(loop, main()) == b"bamv"


def test_sendall_type_error(loop, pair):
    a, _ = pair
    with pytest.raises(TypeError):
        run(loop, loop.sock_sendall(a, "str"))


def test_sendall_broken_pipe(loop, pair):
    a, b = pair
    b.close()

    async def main():
        await loop.sock_sendall(a, b"x" * 100)

    with pytest.raises(BrokenPipeError):
        run(loop, main())


def test_sendall_peer_closes_midway(loop, pair):
    a, b = pair

    async def main():
        task = loop.create_task(loop.sock_sendall(a, b"y" * (8 * 1024 * 1024)))
        await asyncio.sleep(0.01)
        assert not task.done()
        b.close()
        await task

    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        run(loop, main())


# ---------------------------------------------------- accept / connect


def test_accept_connect_round_trip(loop, listener):
    c, conn, addr = tcp_pair(loop, listener)
    try:
        assert conn.gettimeout() == 0.0  # accepted sockets are non-blocking
        assert addr == c.getsockname()
        assert isinstance(conn, socket.socket)

        async def main():
            await loop.sock_sendall(c, b"ping")
            assert await loop.sock_recv(conn, 10) == b"ping"
            await loop.sock_sendall(conn, b"pong")
            assert await loop.sock_recv(c, 10) == b"pong"

        run(loop, main())
    finally:
        c.close()
        conn.close()


def test_connect_resolves_names(loop, listener):
    # "localhost" goes through loop.getaddrinfo(), as _ensure_resolved does.
    c, conn, _ = tcp_pair(loop, listener, host="localhost")
    try:
        assert c.getpeername() == listener.getsockname()
    finally:
        c.close()
        conn.close()


def test_connect_uses_loop_getaddrinfo(loop, listener):
    calls = []
    orig = loop.getaddrinfo

    async def spy(host, port, **kw):
        calls.append((host, port, kw))
        return await orig(host, port, **kw)

    loop.getaddrinfo = spy
    port = listener.getsockname()[1]

    async def main():
        for addr in [("localhost", port), ("127.0.0.1", port), ("127.0.0.1", str(port))]:
            with nb(socket.socket()) as c:
                accept = loop.create_task(loop.sock_accept(listener))
                await loop.sock_connect(c, addr)
                (await accept)[0].close()

    run(loop, main())
    assert len(calls) == 1
    assert calls[0][:2] == ("localhost", port)
    assert calls[0][2] == {
        "family": socket.AF_INET, "type": socket.SOCK_STREAM, "proto": 0, "flags": 0,
    }


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_accept_connect_ipv6(loop):
    srv = nb(socket.socket(socket.AF_INET6))
    srv.bind(("::1", 0))
    srv.listen()
    try:
        c, conn, addr = tcp_pair(loop, srv, host="::1")
        assert addr == c.getsockname()
        assert len(addr) == 4
        c.close()
        conn.close()
    finally:
        srv.close()


def test_connect_refused(loop):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now

    with nb(socket.socket()) as c:
        with pytest.raises(ConnectionRefusedError) as info:
            run(loop, loop.sock_connect(c, ("127.0.0.1", port)))
    assert info.value.errno == errno.ECONNREFUSED


def test_connect_refused_message_matches_asyncio(loop_kind):
    # The same text on both loops (asyncio's f'Connect call failed {address}'
    # when the error comes through SO_ERROR).
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    def attempt(lp):
        try:
            with nb(socket.socket()) as c:
                run(lp, lp.sock_connect(c, ("127.0.0.1", port)))
        except OSError as exc:
            return type(exc), exc.errno, str(exc)
        finally:
            lp.close()

    assert attempt(flaskasync.new_event_loop()) == attempt(asyncio.new_event_loop())


def test_connect_unix(loop):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s")
        srv = nb(socket.socket(socket.AF_UNIX))
        srv.bind(path)
        srv.listen()

        async def main():
            with nb(socket.socket(socket.AF_UNIX)) as c:
                accept = loop.create_task(loop.sock_accept(srv))
                await loop.sock_connect(c, path)
                conn, addr = await accept
                await loop.sock_sendall(c, b"unix")
                assert await loop.sock_recv(conn, 10) == b"unix"
                conn.close()
            with nb(socket.socket(socket.AF_UNIX)) as c:
                with pytest.raises(FileNotFoundError):
                    await loop.sock_connect(c, os.path.join(d, "missing"))

        try:
            run(loop, main())
        finally:
            srv.close()


BAD_ADDRESSES = [
    ("127.0.0.1",),
    ("127.0.0.1", 1, 0, 0, 0),
    ("127.0.0.1", "no-such-service"),
    ("127.0.0.1", None),
    (b"127.0.0.1", 1),
    (None, 1),
    (1, 1),
    "127.0.0.1",
    ("::1%lo", 1),
    ("127.0.0.1\0", 1),
]


@pytest.mark.parametrize("address", BAD_ADDRESSES, ids=[repr(a) for a in BAD_ADDRESSES])
def test_connect_bad_address_matches_asyncio(loop_kind, address):
    def attempt(lp):
        try:
            with nb(socket.socket()) as c:
                run(lp, lp.sock_connect(c, address))
        except Exception as exc:  # noqa: BLE001
            return type(exc), str(exc)
        finally:
            lp.close()

    assert attempt(flaskasync.new_event_loop()) == attempt(asyncio.new_event_loop())


def test_accept_pending_then_connect(loop, listener):
    async def main():
        task = loop.create_task(loop.sock_accept(listener))
        await asyncio.sleep(0.01)
        assert not task.done()
        c = socket.create_connection(listener.getsockname())
        conn, addr = await task
        assert addr == c.getsockname()
        c.close()
        conn.close()

    run(loop, main())


# ------------------------------------------------------------------ UDP


def test_udp_sendto_recvfrom(loop):
    a = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    b = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))

    async def main():
        task = loop.create_task(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0.01)
        assert await loop.sock_sendto(a, b"dgram", b.getsockname()) == 5
        data, addr = await task
        assert (data, addr) == (b"dgram", a.getsockname())
        # recvfrom_into, default and explicit nbytes
        buf = bytearray(64)
        await loop.sock_sendto(a, b"into", b.getsockname())
        assert await loop.sock_recvfrom_into(b, buf) == (4, a.getsockname())
        assert buf[:4] == b"into"
        await loop.sock_sendto(a, b"truncated!", b.getsockname())
        assert await loop.sock_recvfrom_into(b, buf, 5) == (5, a.getsockname())
        assert buf[:5] == b"trunc"
        task = loop.create_task(loop.sock_recvfrom_into(b, buf))
        await asyncio.sleep(0.01)
        a.sendto(b"late", b.getsockname())
        assert await task == (4, a.getsockname())
        # Name resolution is not sock_sendto's job (asyncio passes it on).
        with pytest.raises(TypeError):
            await loop.sock_sendto(a, "str", b.getsockname())

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


def test_udp_recvfrom_into_too_small(loop):
    b = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    b.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(ValueError, match="nbytes is greater than the length of the buffer"):
            run(loop, loop.sock_recvfrom_into(b, bytearray(4), 10))
    finally:
        b.close()


# --------------------------------------------------------------- errors


def test_blocking_socket_rejected(loop, pair):
    # asyncio checks only in debug mode; flaskasync always checks.
    loop.set_debug(True)
    a, b = pair
    a.setblocking(True)
    calls = [
        lambda: loop.sock_recv(a, 1),
        lambda: loop.sock_recv_into(a, bytearray(1)),
        lambda: loop.sock_recvfrom(a, 1),
        lambda: loop.sock_recvfrom_into(a, bytearray(1)),
        lambda: loop.sock_sendall(a, b"x"),
        lambda: loop.sock_sendto(a, b"x", None),
        lambda: loop.sock_connect(a, ("127.0.0.1", 1)),
        lambda: loop.sock_accept(a),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            run(loop, call())
    a.settimeout(1.0)
    with pytest.raises(ValueError, match="the socket must be non-blocking"):
        run(loop, loop.sock_recv(a, 1))


def test_ssl_socket_rejected(loop):
    ctx = ssl.create_default_context()
    raw = socket.socket()
    s = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    s.setblocking(False)
    try:
        with pytest.raises(TypeError, match="Socket cannot be of type SSLSocket"):
            run(loop, loop.sock_recv(s, 1))
        with pytest.raises(TypeError, match="Socket cannot be of type SSLSocket"):
            run(loop, loop.sock_sendall(s, b"x"))
    finally:
        s.close()


def test_closed_socket(loop, pair):
    a, _ = pair
    a.close()

    async def main():
        for coro in (loop.sock_recv(a, 1), loop.sock_sendall(a, b"x"), loop.sock_accept(a)):
            with pytest.raises(OSError) as info:
                await coro
            assert info.value.errno == errno.EBADF

    run(loop, main())


def test_connection_reset(loop, listener):
    c, conn, _ = tcp_pair(loop, listener)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST

    async def main():
        await asyncio.sleep(0.01)
        await loop.sock_recv(conn, 10)

    try:
        with pytest.raises(ConnectionResetError):
            run(loop, main())
    finally:
        conn.close()


def test_not_a_socket(loop):
    with pytest.raises(AttributeError):
        run(loop, loop.sock_recv(object(), 1))


def test_wrong_arity(loop):
    with pytest.raises(TypeError):
        loop.sock_recv(None)
    with pytest.raises(TypeError):
        loop.sock_accept()
    with pytest.raises(TypeError):
        loop.sock_sendto(None, b"")


# --------------------------------------------------------- cancellation


def test_cancel_recv_removes_watch(loop, pair):
    a, b = pair

    async def main():
        task = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)  # the future's done callback runs
        assert loop.remove_reader(a.fileno()) is False  # no watch left
        # Data sent after the cancellation is still there to read.
        b.send(b"kept")
        await asyncio.sleep(0.01)
        assert await loop.sock_recv(a, 10) == b"kept"

    run(loop, main())


def test_cancel_before_start(loop, pair):
    a, b = pair
    b.send(b"data")

    async def main():
        task = loop.create_task(loop.sock_recv(a, 10))
        task.cancel()  # before the coroutine ever runs: nothing is read
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await loop.sock_recv(a, 10) == b"data"

    run(loop, main())


def test_cancel_sendall_midway(loop, pair):
    a, b = pair

    async def main():
        task = loop.create_task(loop.sock_sendall(a, b"z" * (8 * 1024 * 1024)))
        await asyncio.sleep(0.01)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert loop.remove_writer(a.fileno()) is False

    run(loop, main())


def test_cancel_accept(loop, listener):
    async def main():
        task = loop.create_task(loop.sock_accept(listener))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert loop.remove_reader(listener.fileno()) is False

    run(loop, main())


def test_wait_for_timeout(loop, pair):
    a, _ = pair

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 10), 0.02)

    run(loop, main())


def test_second_reader_replaces_first(loop, pair):
    # One reader per fd, as in asyncio's selector loop: the second
    # sock_recv replaces the first one's watch.
    a, b = pair

    async def main():
        first = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        second = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        b.send(b"one")
        assert await second == b"one"
        await asyncio.sleep(0.01)
        assert not first.done()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first

    run(loop, main())


def test_coroutine_protocol(loop, pair):
    a, b = pair
    coro = loop.sock_recv(a, 10)
    assert asyncio.iscoroutine(coro)
    assert "sock_recv" in repr(coro)
    coro.close()
    # gather accepts them; they interleave.
    b.send(b"x")

    async def main():
        return await asyncio.gather(loop.sock_recv(a, 10), loop.sock_sendall(b, b""))

    assert run(loop, main()) == [b"x", None]


def test_coroutine_send_throw_close(loop, pair):
    # Driven by hand, the coroutine behaves like asyncio's `async def` one.
    a, b = pair
    b.send(b"ready")
    coro = loop.sock_recv(a, 10)
    with pytest.raises(TypeError, match="non-None value"):
        coro.send(1)
    coro.close()
    coro = loop.sock_recv(a, 10)
    with pytest.raises(StopIteration) as info:
        coro.send(None)
    assert info.value.value == b"ready"
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        coro.send(None)

    coro = loop.sock_recv(a, 10)  # not started: throw raises at once
    with pytest.raises(KeyError):
        coro.throw(KeyError("k"))
    with pytest.raises(RuntimeError, match="cannot reuse"):
        coro.send(None)

    coro = loop.sock_recvfrom(a, 10)
    coro.close()
    coro.close()
    with pytest.raises(RuntimeError, match="cannot reuse"):
        coro.send(None)

    async def main():
        # A tuple result survives StopIteration intact.
        u = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        u.bind(("127.0.0.1", 0))
        u.sendto(b"t", u.getsockname())
        await asyncio.sleep(0.01)
        try:
            return await loop.sock_recvfrom(u, 10)
        finally:
            u.close()

    data, addr = run(loop, main())
    assert data == b"t" and isinstance(addr, tuple)


def test_coroutine_close_while_waiting(fa_loop, pair):
    # flaskasync: closing a coroutine that waits on the fd cancels its
    # future, so the watch goes away instead of lingering until data
    # arrives (asyncio leaves its reader registered).
    loop = fa_loop
    a, b = pair
    coro = loop.sock_recv(a, 10)
    fut = coro.send(None)
    assert isinstance(fut, asyncio.Future) and not fut.done()
    assert coro.cr_await is not None
    coro.close()
    assert fut.cancelled()
    loop.run_until_complete(asyncio.sleep(0))
    assert loop.remove_reader(a.fileno()) is False
    b.send(b"kept")
    assert run(loop, loop.sock_recv(a, 10)) == b"kept"


def test_coroutine_throw_while_waiting(loop, pair):
    a, b = pair

    async def main():
        coro = loop.sock_recv(a, 10)
        fut = coro.send(None)
        assert isinstance(fut, asyncio.Future)
        with pytest.raises(ZeroDivisionError):
            coro.throw(ZeroDivisionError)
        fut.cancel()
        await asyncio.sleep(0)
        b.send(b"x")
        assert await loop.sock_recv(a, 10) == b"x"

    run(loop, main())


# ------------------------------------------------------------- sendfile


@pytest.fixture
def datafile():
    data = os.urandom(300_000)
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        with open(f.name, "rb") as rf:
            yield rf, data


def _drain(loop, sock, n):
    async def reader():
        out = bytearray()
        while len(out) < n:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            out += chunk
        return bytes(out)

    return loop.create_task(reader())


def test_sock_sendfile(loop, pair, datafile):
    a, b = pair
    f, data = datafile

    async def main():
        rt = _drain(loop, b, len(data))
        assert await loop.sock_sendfile(a, f) == len(data)
        assert await rt == data
        assert f.tell() == len(data)
        # offset and count
        rt = _drain(loop, b, 1000)
        assert await loop.sock_sendfile(a, f, 5000, 1000) == 1000
        assert await rt == data[5000:6000]
        assert f.tell() == 6000

    run(loop, main())


def test_sock_sendfile_fallback(loop, pair):
    a, b = pair
    data = os.urandom(600_000)

    async def main():
        rt = _drain(loop, b, len(data) - 10)
        bio = io.BytesIO(data)
        assert await loop.sock_sendfile(a, bio, 10) == len(data) - 10
        assert await rt == data[10:]
        assert bio.tell() == len(data)
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sock_sendfile(a, io.BytesIO(data), fallback=False)

    run(loop, main())


def test_sock_sendfile_params(loop, pair, datafile):
    a, _ = pair
    f, _ = datafile
    u = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    async def main():
        with open(f.name) as text:
            with pytest.raises(ValueError, match="binary mode"):
                await loop.sock_sendfile(a, text)
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            await loop.sock_sendfile(u, f)
        with pytest.raises(ValueError, match="count must be a positive integer"):
            await loop.sock_sendfile(a, f, 0, 0)
        with pytest.raises(TypeError, match="count must be a positive integer"):
            await loop.sock_sendfile(a, f, 0, 1.5)
        with pytest.raises(ValueError, match="offset must be a non-negative integer"):
            await loop.sock_sendfile(a, f, -1)
        with pytest.raises(TypeError, match="offset must be a non-negative integer"):
            await loop.sock_sendfile(a, f, "0")

    try:
        run(loop, main())
    finally:
        u.close()


@pytest.mark.parametrize("offset,count", [(0, 2**70), (0, -(2**70)), (2**70, None), (-(2**70), None)],
                         ids=["count-huge", "count-very-negative", "offset-huge", "offset-very-negative"])
def test_sock_sendfile_huge_numbers_match_asyncio(loop, datafile, offset, count):
    # What a count or offset beyond any C integer does changed with the
    # version (3.13 clamps the block size, gh-82500): compared with a fresh
    # asyncio loop on this interpreter.
    f, data = datafile

    def outcome(lp):
        a, b = socket.socketpair()
        nb(a), nb(b)

        async def main():
            rt = _drain(lp, b, len(data))
            try:
                return "ok", await lp.sock_sendfile(a, f, offset, count)
            except Exception as e:  # noqa: BLE001 - the outcome is compared
                return type(e).__name__, str(e)
            finally:
                a.close()
                await rt

        try:
            f.seek(0)
            return run(lp, main())
        finally:
            b.close()

    reference = asyncio.new_event_loop()
    try:
        expected = outcome(reference)
    finally:
        reference.close()
    assert outcome(loop) == expected


# ------------------------------------------------------- the app loop


def test_app_loop_sock_ops_from_threads():
    # flaskasync.run(): the waits are serviced by the home thread when no
    # request drives the loop.
    def worker(i, results):
        a, b = socket.socketpair()
        nb(a), nb(b)

        async def echo():
            loop = asyncio.get_running_loop()
            t = threading.Timer(0.02, b.send, args=(b"msg%d" % i,))
            t.start()
            data = await loop.sock_recv(a, 100)
            await loop.sock_sendall(a, data * 2)
            t.join()
            return data

        try:
            results[i] = (flaskasync.run(echo(), timeout=10), b.recv(100))
        finally:
            a.close()
            b.close()

    results = {}
    threads = [threading.Thread(target=worker, args=(i, results)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        assert results[i] == (b"msg%d" % i, b"msg%d" % i * 2)


# ---------------------------------------------------------------- leaks


def _fd_count():
    return len(os.listdir("/proc/self/fd"))


def test_sock_no_leak(loop, listener):
    a, b = socket.socketpair()
    nb(a), nb(b)
    udp = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    udp.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    async def step(n):
        buf = bytearray(16)
        for i in range(n):
            b.send(b"ready")
            await loop.sock_recv(a, 16)
            task = loop.create_task(loop.sock_recv_into(a, buf))
            await asyncio.sleep(0)
            await loop.sock_sendall(b, b"pending")
            await task
            await loop.sock_sendto(udp, b"u", udp.getsockname())
            await loop.sock_recvfrom(udp, 16)
            task = loop.create_task(loop.sock_recv(a, 16))
            await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            if i % 10 == 0:
                with nb(socket.socket()) as c:
                    accept = loop.create_task(loop.sock_accept(listener))
                    await loop.sock_connect(c, ("127.0.0.1", port))
                    conn, _ = await accept
                    conn.close()
        await asyncio.sleep(0)

    try:
        loop.run_until_complete(step(100))
        gc.collect()
        objs0, handles0, fds0 = len(gc.get_objects()), _core._live_handles(), _fd_count()
        loop.run_until_complete(step(1000))
        gc.collect()
        objs1, handles1, fds1 = len(gc.get_objects()), _core._live_handles(), _fd_count()
    finally:
        a.close()
        b.close()
        udp.close()
    assert fds1 == fds0
    assert handles1 <= handles0
    assert objs1 - objs0 < 100


# ------------------------------------------------- regressions from review


class _RecordingSocket(socket.socket):
    """A socket whose send() keeps every buffer it was given, as a logging
    or mocking wrapper might."""

    kept: list

    def send(self, data, *args):
        # Keep the retries' views only: keeping the original object would
        # keep its memory alive and hide a view that does not own it.
        if isinstance(data, memoryview):
            self.kept.append(data)
        return super().send(data, *args)


def test_sendall_retry_buffers_outlive_the_operation(loop):
    # The views passed to send() on retries must own their buffer: reading
    # one after sendall finished and the data was dropped must not crash.
    a, b = socket.socketpair()
    rec = _RecordingSocket(fileno=a.detach())
    rec.kept = []
    rec.setblocking(False)
    b.setblocking(False)
    rec.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def reader():
        got = 0
        while got < len(payload):
            chunk = await loop.sock_recv(b, 65536)
            got += len(chunk)
        return got

    async def main():
        r = loop.create_task(reader())
        await loop.sock_sendall(rec, bytearray(payload))
        return await r

    try:
        assert run(loop, main()) == len(payload)
        assert rec.kept, "the test needs at least one retry"
        gc.collect()
        # Every buffer send() got is a tail of the payload, still readable
        # (and still holding the right bytes) after the operation ended.
        for view in rec.kept:
            tail = bytes(memoryview(view))
            assert tail == payload[len(payload) - len(tail):]
    finally:
        rec.close()
        b.close()


class _StopIterSocket(socket.socket):
    def recv(self, *args):
        raise StopIteration


def test_stopiteration_in_a_sock_method_becomes_runtimeerror(loop):
    # PEP 479: a StopIteration escaping a coroutine must not look like a
    # return (the Task would hang); asyncio raises RuntimeError.
    a, b = socket.socketpair()
    s = _StopIterSocket(fileno=a.detach())
    s.setblocking(False)
    try:
        task = loop.create_task(loop.sock_recv(s, 10))
        with pytest.raises(RuntimeError, match="StopIteration"):
            run(loop, task, timeout=5)
    finally:
        s.close()
        b.close()


def test_sock_coroutine_never_awaited_warns(loop):
    # As for any `async def` method: collected without being awaited (or
    # closed), the coroutine warns; a closed one does not.
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        with pytest.warns(RuntimeWarning, match="sock_recv' was never awaited"):
            coro = loop.sock_recv(a, 10)
            del coro
            gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            coro = loop.sock_recv(a, 10)
            coro.close()
            del coro
            gc.collect()
    finally:
        a.close()
        b.close()


def test_sock_coroutine_awaited_twice_raises(loop):
    # A second task awaiting the same waiting coroutine gets RuntimeError,
    # as with any coroutine; the first one still gets the data.
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main():
        coro = loop.sock_recv(a, 10)
        first = loop.create_task(coro)
        await asyncio.sleep(0)  # first is now waiting inside coro

        async def second():
            return await coro

        with pytest.raises(RuntimeError, match="being awaited already"):
            await second()
        b.send(b"data")
        assert await asyncio.wait_for(first, 5) == b"data"

    try:
        loop.run_until_complete(main())
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------- arguments
# The sock_* methods take their arguments as asyncio's `async def`s do:
# by position or by name, fallback only by name; a wrong call raises
# TypeError when made, before any coroutine exists.


def test_sock_methods_take_keywords(loop):
    async def main():
        a, b = socket.socketpair()
        nb(a), nb(b)
        with a, b:
            await loop.sock_sendall(sock=a, data=b"hello")
            assert await loop.sock_recv(sock=b, n=2) == b"he"
            buf = bytearray(3)
            assert await loop.sock_recv_into(sock=b, buf=buf) == 3
            assert buf == b"llo"
        u1 = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        u2 = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        with u1, u2:
            u1.bind(("127.0.0.1", 0))
            u2.bind(("127.0.0.1", 0))
            sent = await loop.sock_sendto(sock=u1, data=b"dgram", address=u2.getsockname())
            assert sent == 5
            assert await loop.sock_recvfrom(sock=u2, bufsize=100) == (b"dgram", u1.getsockname())
            await loop.sock_sendto(u1, b"truncated", u2.getsockname())
            buf = bytearray(10)
            got = await loop.sock_recvfrom_into(sock=u2, buf=buf, nbytes=5)
            assert got == (5, u1.getsockname()) and buf[:5] == b"trunc"
        srv = nb(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        c = nb(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        with srv, c:
            srv.bind(("127.0.0.1", 0))
            srv.listen(1)
            accept = loop.create_task(loop.sock_accept(sock=srv))
            await loop.sock_connect(sock=c, address=srv.getsockname())
            conn, _ = await accept
            with conn, tempfile.TemporaryFile() as f:
                f.write(b"0123456789")
                f.flush()
                sent = await loop.sock_sendfile(sock=c, file=f, offset=2, count=3, fallback=True)
                assert sent == 3
                assert await loop.sock_recv(conn, 10) == b"234"

    run(loop, main())


@pytest.mark.parametrize(
    "call",
    [
        # missing a required argument
        lambda loop, s: loop.sock_recv(s),
        lambda loop, s: loop.sock_recv_into(sock=s),
        lambda loop, s: loop.sock_recvfrom(s),
        lambda loop, s: loop.sock_recvfrom_into(s),
        lambda loop, s: loop.sock_sendall(s),
        lambda loop, s: loop.sock_sendto(s, b"x"),
        lambda loop, s: loop.sock_connect(s),
        lambda loop, s: loop.sock_accept(),
        lambda loop, s: loop.sock_sendfile(s),
        lambda loop, s: loop.sock_sendfile(file=None, offset=0),
        # too many positional arguments (fallback is keyword-only)
        lambda loop, s: loop.sock_recv(s, 1, 2),
        lambda loop, s: loop.sock_recv_into(s, bytearray(1), 1),
        lambda loop, s: loop.sock_recvfrom(s, 1, 2),
        lambda loop, s: loop.sock_recvfrom_into(s, bytearray(1), 1, 2),
        lambda loop, s: loop.sock_sendall(s, b"", 1),
        lambda loop, s: loop.sock_sendto(s, b"", None, 1),
        lambda loop, s: loop.sock_connect(s, None, 1),
        lambda loop, s: loop.sock_accept(s, 1),
        lambda loop, s: loop.sock_sendfile(s, None, 0, None, True),
        # an unknown keyword; a value given twice
        lambda loop, s: loop.sock_recv(s, 1, flags=0),
        lambda loop, s: loop.sock_accept(s, sock=s),
        lambda loop, s: loop.sock_sendfile(s, None, file=None),
    ],
)
def test_sock_methods_reject_wrong_calls(loop, pair, call):
    with pytest.raises(TypeError):
        call(loop, pair[0])
