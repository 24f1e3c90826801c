"""Unix socket transports on flaskasync's loop and asyncio's:
create_unix_connection, create_unix_server, open_unix_connection and
start_unix_server, with a path, a sock= or an abstract name, and the socket
file handled as Python 3.11's asyncio does (a stale socket file is replaced
on bind; nothing is unlinked on close)."""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import socket
import stat
import tempfile
import uuid

import pytest

import asyncio_ref
from protocols import Echo, Factory, Proto


# Helpers are defined here, not imported from conftest.


def run(loop, coro, timeout=10):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(predicate, interval=0.002):
    while not predicate():
        await asyncio.sleep(interval)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def tmpdir_path():
    with tempfile.TemporaryDirectory() as d:
        yield d


# ------------------------------------------------------------ with a path


def test_unix_round_trip(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")

    async def main():
        sf = Factory(Echo, loop)
        srv = await loop.create_unix_server(sf, path)
        assert srv.is_serving()
        assert srv.get_loop() is loop
        assert len(srv.sockets) == 1
        assert srv.sockets[0].family == socket.AF_UNIX
        assert srv.sockets[0].getsockname() == path
        assert stat.S_ISSOCK(os.stat(path).st_mode)

        tr, p = await loop.create_unix_connection(lambda: Proto(loop), path)
        assert p.events == ["made"]
        assert p.transport is tr
        tr.write(b"over unix")
        tr.writelines([b" and", bytearray(b" more")])
        await until(lambda: len(p.data) == 18)
        assert bytes(p.data) == b"over unix and more"
        await until(lambda: sf.made)
        sp = sf.made[0]

        assert tr.get_extra_info("peername") == path
        assert tr.get_extra_info("sockname") in ("", None)
        assert tr.get_extra_info("socket").family == socket.AF_UNIX
        assert sp.transport.get_extra_info("sockname") == path
        assert sp.transport.get_extra_info("peername") in ("", None)

        assert tr.can_write_eof()
        tr.write_eof()
        await sp.eof
        assert await sp.lost is None  # eof_received returned None: closed
        assert await p.lost is None
        assert p.events == ["made", "data", "eof", "lost"]
        assert sp.events == ["made", "data", "eof", "lost"]
        assert p.lost_calls == [None] and sp.lost_calls == [None]

        srv.close()
        await srv.wait_closed()
        assert not srv.is_serving()
        assert len(srv.sockets) == 0

    run(loop, main())


def test_unix_socket_file_on_close(loop, tmpdir_path):
    # Closing the server leaves the socket file on 3.11 and 3.12; from 3.13
    # on it is removed (cleanup_socket=True by default).
    path = os.path.join(tmpdir_path, "sock")

    async def main():
        srv = await loop.create_unix_server(lambda: Proto(loop), path)
        srv.close()
        await srv.wait_closed()
        assert os.path.exists(path) is not asyncio_ref.UNIX_SERVER_UNLINKS_SOCKET
        if os.path.exists(path):
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            # Nothing listens any more.
            with pytest.raises(ConnectionRefusedError):
                await loop.create_unix_connection(lambda: Proto(loop), path)

    run(loop, main())


@pytest.mark.skipif(not asyncio_ref.UNIX_SERVER_UNLINKS_SOCKET, reason="cleanup_socket is 3.13+")
def test_unix_server_cleanup_socket_false_keeps_the_file(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")

    async def main():
        srv = await loop.create_unix_server(lambda: Proto(loop), path, cleanup_socket=False)
        srv.close()
        await srv.wait_closed()
        assert stat.S_ISSOCK(os.stat(path).st_mode)

    run(loop, main())


def test_unix_stale_socket_file_is_replaced(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)

    async def main():
        srv = await loop.create_unix_server(lambda: Echo(loop), path)
        tr, p = await loop.create_unix_connection(lambda: Proto(loop), path)
        tr.write(b"fresh")
        await until(lambda: len(p.data) == 5)
        tr.close()
        await p.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_unix_path_is_a_regular_file(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "regular")
    with open(path, "w") as f:
        f.write("not a socket")

    async def main():
        with pytest.raises(OSError):  # warm-up
            await loop.create_unix_server(lambda: Proto(loop), path)
        before = fd_count()
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(lambda: Proto(loop), path)
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == f"[Errno {errno.EADDRINUSE}] Address {path!r} is already in use"
        assert fd_count() == before
        with open(path) as f:
            assert f.read() == "not a socket"  # left alone

    run(loop, main())


def test_unix_path_in_use_by_live_server(loop, tmpdir_path):
    # A live server's socket file is a socket: asyncio removes it and binds
    # anew (the old server keeps its listening socket but loses its name).
    path = os.path.join(tmpdir_path, "sock")

    async def main():
        first = Factory(Echo, loop)
        second = Factory(Echo, loop)
        s1 = await loop.create_unix_server(first, path)
        s2 = await loop.create_unix_server(second, path)
        tr, p = await loop.create_unix_connection(lambda: Proto(loop), path)
        tr.write(b"x")
        await until(lambda: len(p.data) == 1)
        assert len(second.made) == 1 and first.made == []
        tr.close()
        await p.lost
        for s in (s1, s2):
            s.close()
            await s.wait_closed()

    run(loop, main())


def test_unix_pathlike_and_bytes_path(loop, tmpdir_path):
    async def main():
        p1 = pathlib.Path(tmpdir_path) / "pathlib.sock"
        srv = await loop.create_unix_server(lambda: Echo(loop), p1)
        assert srv.sockets[0].getsockname() == str(p1)
        tr, p = await loop.create_unix_connection(lambda: Proto(loop), p1)
        tr.write(b"pathlike")
        await until(lambda: len(p.data) == 8)
        tr.close()
        await p.lost
        srv.close()
        await srv.wait_closed()

        p2 = os.path.join(tmpdir_path, "bytes.sock").encode()
        srv = await loop.create_unix_server(lambda: Echo(loop), p2)
        assert os.path.exists(p2)
        tr, p = await loop.create_unix_connection(lambda: Proto(loop), p2)
        tr.write(b"bytes")
        await until(lambda: len(p.data) == 5)
        tr.close()
        await p.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_unix_connection_missing_path(loop, tmpdir_path):
    async def attempt():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(
                lambda: Proto(loop), os.path.join(tmpdir_path, "missing"))

    async def main():
        await attempt()  # warm-up
        before = fd_count()
        for _ in range(5):
            await attempt()
        assert fd_count() == before  # the sockets were closed

    run(loop, main())


# ------------------------------------------------------------------ sock=


def test_unix_with_sock(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")

    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)  # not listening yet: the server calls listen()
        srv = await loop.create_unix_server(lambda: Echo(loop), sock=lsock)
        assert srv.sockets[0].fileno() == lsock.fileno()
        assert lsock.gettimeout() == 0.0

        csock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        csock.connect(path)
        tr, p = await loop.create_unix_connection(lambda: Proto(loop), sock=csock)
        assert csock.gettimeout() == 0.0
        assert tr.get_extra_info("socket").fileno() == csock.fileno()
        tr.write(b"sock=")
        await until(lambda: len(p.data) == 5)
        assert bytes(p.data) == b"sock="
        tr.close()
        await p.lost
        assert csock.fileno() == -1
        srv.close()
        await srv.wait_closed()
        assert lsock.fileno() == -1

    run(loop, main())


def test_unix_socketpair_via_sock(loop):
    async def main():
        a, b = socket.socketpair()
        ta, pa = await loop.create_unix_connection(lambda: Proto(loop), sock=a)
        tb, pb = await loop.create_unix_connection(lambda: Echo(loop), sock=b)
        ta.write(b"pair")
        await until(lambda: len(pa.data) == 4)
        assert bytes(pa.data) == b"pair"
        tb.close()
        assert await pa.lost is None
        assert pa.events == ["made", "data", "eof", "lost"]
        assert await pb.lost is None

    run(loop, main())


def test_unix_argument_errors(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")
    factory = lambda: Proto(loop)  # noqa: E731

    async def main():
        with socket.socket(socket.AF_UNIX) as s:
            with pytest.raises(ValueError) as info:
                await loop.create_unix_connection(factory, path, sock=s)
            assert str(info.value) == "path and sock can not be specified at the same time"
            with pytest.raises(ValueError) as info:
                await loop.create_unix_server(factory, path, sock=s)
            assert str(info.value) == "path and sock can not be specified at the same time"
        with pytest.raises(ValueError) as info:
            await loop.create_unix_connection(factory)
        assert str(info.value) == "no path and sock were specified"
        with pytest.raises(ValueError) as info:
            await loop.create_unix_server(factory)
        assert str(info.value) == "path was not specified, and no sock specified"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            with pytest.raises(ValueError) as info:
                await loop.create_unix_connection(factory, sock=tcp)
            assert str(info.value).startswith("A UNIX Domain Stream Socket was expected, got ")
            with pytest.raises(ValueError) as info:
                await loop.create_unix_server(factory, sock=tcp)
            assert str(info.value).startswith("A UNIX Domain Stream Socket was expected, got ")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram:
            with pytest.raises(ValueError) as info:
                await loop.create_unix_connection(factory, sock=dgram)
            assert str(info.value).startswith("A UNIX Domain Stream Socket was expected, got ")
        with pytest.raises(ValueError) as info:
            await loop.create_unix_connection(factory, path, server_hostname="x")
        assert str(info.value) == "server_hostname is only meaningful with ssl"
        with pytest.raises(ValueError) as info:
            await loop.create_unix_connection(factory, path, ssl_handshake_timeout=1)
        assert str(info.value) == "ssl_handshake_timeout is only meaningful with ssl"
        with pytest.raises(ValueError) as info:
            await loop.create_unix_connection(factory, path, ssl=True)
        assert str(info.value) == "you have to pass server_hostname when using ssl"
        with pytest.raises(TypeError) as info:
            await loop.create_unix_server(factory, path, ssl=True)
        assert str(info.value) == "ssl argument must be an SSLContext or None"
        with pytest.raises(ValueError) as info:
            await loop.create_unix_server(factory, path, ssl_handshake_timeout=1)
        assert str(info.value) == "ssl_handshake_timeout is only meaningful with ssl"
        assert not os.path.exists(path)

    run(loop, main())


# ------------------------------------------------------- abstract namespace


def test_unix_abstract_namespace(loop):
    name = "\0flaskasync-test-" + uuid.uuid4().hex

    async def main():
        sf = Factory(Echo, loop)
        srv = await loop.create_unix_server(sf, name)
        assert srv.sockets[0].getsockname() == name.encode()
        tr, p = await loop.create_unix_connection(lambda: Proto(loop), name)
        assert tr.get_extra_info("peername") == name.encode()
        tr.write(b"abstract")
        await until(lambda: len(p.data) == 8)
        assert bytes(p.data) == b"abstract"
        tr.close()
        await p.lost
        srv.close()
        await srv.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_unix_connection(lambda: Proto(loop), name)

    run(loop, main())


def test_unix_abstract_namespace_in_use(loop):
    name = "\0flaskasync-test-" + uuid.uuid4().hex

    async def main():
        srv = await loop.create_unix_server(lambda: Proto(loop), name)
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(lambda: Proto(loop), name)
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == f"[Errno {errno.EADDRINUSE}] Address {name!r} is already in use"
        srv.close()
        await srv.wait_closed()

    run(loop, main())


# -------------------------------------------------------------- Server


def test_unix_server_start_serving_false(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")

    async def main():
        srv = await loop.create_unix_server(lambda: Proto(loop), path, start_serving=False)
        assert not srv.is_serving()
        assert os.path.exists(path)
        with pytest.raises(ConnectionRefusedError):  # bound, not listening
            await loop.create_unix_connection(lambda: Proto(loop), path)
        task = loop.create_task(srv.serve_forever())
        await asyncio.sleep(0.01)
        assert srv.is_serving()
        tr, p = await loop.create_unix_connection(lambda: Proto(loop), path)
        tr.close()
        await p.lost
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not srv.is_serving()

    run(loop, main())


def test_unix_server_close_keeps_connections(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")

    async def main():
        sf = Factory(Echo, loop)
        srv = await loop.create_unix_server(sf, path)
        tr, p = await loop.create_unix_connection(lambda: Proto(loop), path)
        await until(lambda: sf.made)
        srv.close()
        assert not srv.is_serving()
        tr.write(b"after server close")
        await until(lambda: len(p.data) == 18)
        tr.close()
        await p.lost
        await sf.made[0].lost
        await asyncio.wait_for(srv.wait_closed(), 1)

    run(loop, main())


def test_unix_flow_control_and_large_transfer(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")
    size = 8 * 1024 * 1024
    data = os.urandom(size)

    class Flow(Proto):
        def __init__(self, loop):
            super().__init__(loop)
            self.flow = []

        def pause_writing(self):
            self.flow.append("pause")

        def resume_writing(self):
            self.flow.append("resume")

    async def main():
        sf = Factory(Proto, loop)
        srv = await loop.create_unix_server(sf, path)
        tr, p = await loop.create_unix_connection(lambda: Flow(loop), path)
        await until(lambda: sf.made)
        sp = sf.made[0]
        await sp.made
        sp.transport.pause_reading()
        tr.write(data)
        assert p.flow == ["pause"]
        assert tr.get_write_buffer_size() > tr.get_write_buffer_limits()[1]
        await asyncio.sleep(0.02)
        assert len(sp.data) == 0
        sp.transport.resume_reading()
        await until(lambda: p.flow == ["pause", "resume"])
        tr.close()  # flushes the rest
        assert await sp.lost is None
        assert bytes(sp.data) == data
        assert await p.lost is None
        srv.close()
        await srv.wait_closed()

    run(loop, main(), timeout=30)


# ------------------------------------------------------------- streams


def test_unix_streams(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")

    async def handler(reader, writer):
        while line := await reader.readline():
            writer.write(line[:-1][::-1] + b"\n")
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        srv = await asyncio.start_unix_server(handler, path)
        reader, writer = await asyncio.open_unix_connection(path)
        for word in (b"alpha", b"beta", b"gamma"):
            writer.write(word + b"\n")
            await writer.drain()
            assert await reader.readline() == word[::-1] + b"\n"
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_unix_streams_with_sock(loop):
    async def main():
        a, b = socket.socketpair()
        r1, w1 = await asyncio.open_unix_connection(sock=a)
        r2, w2 = await asyncio.open_unix_connection(sock=b)
        w1.write(b"one\n")
        assert await r2.readline() == b"one\n"
        w2.write(b"two\n")
        assert await r1.readline() == b"two\n"
        w1.close()
        await w1.wait_closed()
        assert await r2.read() == b""
        w2.close()
        await w2.wait_closed()

    run(loop, main())


def test_unix_no_fd_leak(loop, tmpdir_path):
    path = os.path.join(tmpdir_path, "sock")

    async def main():
        sf = Factory(Echo, loop)
        srv = await loop.create_unix_server(sf, path)

        async def one():
            tr, p = await loop.create_unix_connection(lambda: Proto(loop), path)
            tr.write(b"x")
            await until(lambda: len(p.data) == 1)
            tr.close()
            await p.lost

        await one()
        await asyncio.sleep(0.01)
        before = fd_count()
        for _ in range(100):
            await one()
        await asyncio.gather(*(p.lost for p in sf.made))
        await asyncio.sleep(0.01)
        assert fd_count() == before
        srv.close()
        await srv.wait_closed()

    run(loop, main(), timeout=30)


def _repr_state(tr):
    """repr(transport) after the class name, with the fd number as N."""
    import re

    text = repr(tr)
    assert text.startswith("<") and text.endswith(">")
    return re.sub(r"fd=-?\d+", "fd=N", text[1:-1].split(" ", 1)[1])


def test_unix_transport_repr_says_open_closing_closed_as_asyncio(loop):
    async def main():
        lost = asyncio.Event()

        class Lost(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set()

        a, b = socket.socketpair()
        tr, _ = await loop.connect_accepted_socket(Lost, a)
        seen = [_repr_state(tr)]
        tr.close()
        seen.append(_repr_state(tr))
        await lost.wait()
        seen.append(_repr_state(tr))
        b.close()
        return seen

    assert run(loop, main()) == [
        "fd=N read=polling write=<idle, bufsize=0>",
        "closing fd=N read=idle write=<idle, bufsize=0>",
        "closed fd=N",
    ]
