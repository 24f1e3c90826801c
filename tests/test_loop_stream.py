"""Stream transports over TCP on flaskasync's loop and asyncio's:
create_connection, create_server and Server, connect_accepted_socket,
loop.sendfile, and the asyncio streams on top of them.  Protocol callbacks
in asyncio's order and exactly once, the same exceptions with the same
messages, flow control, and no leaked fds."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import hashlib
import logging
import os
import socket
import struct
import sys
import tempfile
import time
import warnings

import pytest

import asyncio_ref
from protocols import Echo, Proto


# Helpers are defined here, not imported from conftest.


def run(loop, coro, timeout=10):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(predicate, interval=0.002):
    """Poll until predicate() is true (callers bound it with wait_for)."""
    while not predicate():
        await asyncio.sleep(interval)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def closed_port():
    """A port on 127.0.0.1 where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class BufProto(asyncio.BufferedProtocol):
    """A BufferedProtocol with a small buffer, recording like Proto."""

    def __init__(self, loop, size=7):
        self.events = []
        self.buf = bytearray(size)
        self.data = bytearray()
        self.sizehints = []
        self.transport = None
        self.lost_calls = []
        self.made = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def get_buffer(self, sizehint):
        self.sizehints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += self.buf[:nbytes]

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)


class Conn:
    """One TCP connection made with create_server + create_connection."""

    def __init__(self, server, port, ctr, cproto, sproto):
        self.server = server
        self.port = port
        self.ctr = ctr  # client transport
        self.cp = cproto
        self.sp = sproto

    @property
    def str(self):  # server-side transport
        return self.sp.transport


@contextlib.asynccontextmanager
async def tcp_conn(loop, client=None, server=None):
    """Yield a Conn; close everything on exit and let connection_lost run."""
    sprotos = []

    def sfactory():
        p = (server or (lambda: Proto(loop)))()
        sprotos.append(p)
        return p

    srv = await loop.create_server(sfactory, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    ctr, cp = await loop.create_connection(client or (lambda: Proto(loop)), "127.0.0.1", port)
    await until(lambda: sprotos)
    await sprotos[0].made
    try:
        yield Conn(srv, port, ctr, cp, sprotos[0])
    finally:
        ctr.close()
        sprotos[0].transport.close()
        srv.close()
        await srv.wait_closed()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(cp.lost, sprotos[0].lost), 5)


def stall(c):
    """Make the server side of c stop reading, with a small fixed receive
    buffer (no autotuning), so that what the client writes stays buffered."""
    c.str.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.str.pause_reading()


def collect_errors(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    return contexts


# ------------------------------------------------------- basic exchange


def test_echo_round_trip_and_callback_order(loop):
    async def main():
        async with tcp_conn(loop, server=lambda: Echo(loop)) as c:
            assert c.cp.events == ["made"]  # connection_made before create_connection returns
            assert c.cp.transport is c.ctr
            c.ctr.write(b"hello ")
            c.ctr.write(b"world")
            await until(lambda: len(c.cp.data) == 11)
            assert bytes(c.cp.data) == b"hello world"
            assert c.cp.data_types == {bytes}
            assert c.sp.data_types == {bytes}
            c.ctr.close()
            assert await c.cp.lost is None
            assert await c.sp.lost is None
            await asyncio.sleep(0.01)
            assert c.cp.events == ["made", "data", "lost"]
            assert c.cp.lost_calls == [None]
            # The server side saw the client's FIN, its eof_received returned
            # None, so the transport closed itself.
            assert c.sp.events == ["made", "data", "eof", "lost"]
            assert c.sp.lost_calls == [None]

    run(loop, main())


def test_returns_transport_and_factory_protocol(loop):
    made = []

    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]

        def factory():
            p = Proto(loop)
            made.append(p)
            return p

        tr, proto = await loop.create_connection(factory, "127.0.0.1", port)
        assert made == [proto]
        assert proto.transport is tr
        assert tr.get_protocol() is proto
        assert not tr.is_closing()
        tr.close()
        await proto.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_transport_and_server_classes(loop):
    # asyncio's TCP transport is an asyncio.Transport, its Server an
    # asyncio.AbstractServer (isinstance checks in libraries rely on it).
    async def main():
        async with tcp_conn(loop) as c:
            assert isinstance(c.ctr, asyncio.Transport)
            assert isinstance(c.str, asyncio.Transport)
            assert isinstance(c.server, asyncio.AbstractServer)

    run(loop, main())


def test_peer_closes_gives_eof_then_lost_once(loop):
    async def main():
        async with tcp_conn(loop) as c:
            c.str.close()
            assert await c.cp.lost is None
            await asyncio.sleep(0.01)
            assert c.cp.events == ["made", "eof", "lost"]
            assert c.cp.lost_calls == [None]
            assert c.ctr.is_closing()
            c.ctr.close()  # again: no second connection_lost
            c.ctr.abort()
            await asyncio.sleep(0.01)
            assert c.cp.lost_calls == [None]

    run(loop, main())


def test_close_from_connection_made(loop):
    class Closer(Proto):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.close()

    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        tr, p = await loop.create_connection(lambda: Closer(loop), "127.0.0.1", port)
        assert tr.is_closing()
        assert await p.lost is None
        await asyncio.sleep(0.01)
        assert p.events == ["made", "lost"]
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_eof_received_true_keeps_write_side_open(loop):
    class HalfCloser(Proto):
        def eof_received(self):
            super().eof_received()
            # The write side is still open: answer after the peer's EOF.
            self.transport.write(b"reply after eof:" + bytes(self.data))
            self.loop.call_soon(self.transport.close)
            return True

    async def main():
        async with tcp_conn(loop, server=lambda: HalfCloser(loop)) as c:
            c.ctr.write(b"request")
            c.ctr.write_eof()
            await c.sp.eof
            assert not c.str.is_closing()
            assert await c.cp.lost is None
            assert bytes(c.cp.data) == b"reply after eof:request"
            assert c.cp.events == ["made", "data", "eof", "lost"]
            assert await c.sp.lost is None
            assert c.sp.events == ["made", "data", "eof", "lost"]

    run(loop, main())


def test_eof_received_false_closes(loop):
    async def main():
        async with tcp_conn(loop, server=lambda: Proto(loop, eof_result=False)) as c:
            c.ctr.write_eof()
            await c.sp.eof
            assert c.str.is_closing()
            assert await c.sp.lost is None
            # The client kept its read side: it sees the server's close as EOF.
            assert await c.cp.lost is None
            assert c.cp.events == ["made", "eof", "lost"]

    run(loop, main())


def test_client_eof_received_true_then_write(loop):
    async def main():
        async with tcp_conn(loop, client=lambda: Proto(loop, eof_result=True)) as c:
            c.str.write_eof()
            await c.cp.eof
            await asyncio.sleep(0.01)
            assert not c.ctr.is_closing()
            assert c.cp.events == ["made", "eof"]
            c.ctr.write(b"still writable")
            await until(lambda: len(c.sp.data) == 14)
            assert bytes(c.sp.data) == b"still writable"

    run(loop, main())


# ---------------------------------------------------------------- write


def test_write_accepts_bytes_like(loop):
    async def main():
        async with tcp_conn(loop) as c:
            c.ctr.write(b"b1")
            c.ctr.write(bytearray(b"ba"))
            c.ctr.write(memoryview(b"xmvx")[1:3])
            c.ctr.write(b"")
            c.ctr.writelines([b"l1", bytearray(b"l2"), memoryview(b"l3")])
            c.ctr.writelines([])
            await until(lambda: len(c.sp.data) == 12)
            await asyncio.sleep(0.01)
            assert bytes(c.sp.data) == b"b1bamvl1l2l3"

    run(loop, main())


def test_write_str_type_error(loop):
    async def main():
        async with tcp_conn(loop) as c:
            with pytest.raises(TypeError) as info:
                c.ctr.write("text")
            assert str(info.value) == "data argument must be a bytes-like object, not 'str'"
            with pytest.raises(TypeError) as info:
                c.ctr.write(42)
            assert str(info.value) == "data argument must be a bytes-like object, not 'int'"
            with pytest.raises(TypeError):
                c.ctr.writelines(["text"])
            c.ctr.write(b"ok")
            await until(lambda: len(c.sp.data) == 2)
            assert bytes(c.sp.data) == b"ok"

    run(loop, main())


def test_write_copies_buffered_data(loop, loop_kind, request):
    # Data left in the transport's buffer must be a copy: mutating the
    # caller's bytearray afterwards changes nothing.
    asyncio_ref.asyncio_bug(
        request, loop_kind, asyncio_ref.PY >= (3, 12),
        "from 3.12 the socket transport buffers a view of a bytearray passed to write() "
        "instead of a copy, so changing it afterwards changes what is sent (zero-copy "
        "write, GH-91166)")
    async def main():
        async with tcp_conn(loop) as c:
            stall(c)
            big = bytearray(b"a" * (16 * 1024 * 1024))
            c.ctr.write(big)
            assert c.ctr.get_write_buffer_size() > 0
            big[:] = b"b" * len(big)
            c.str.resume_reading()
            await until(lambda: len(c.sp.data) == len(big))
            assert c.sp.data.count(b"a") == len(big)

    run(loop, main(), timeout=30)


def test_write_after_write_eof_raises(loop):
    async def main():
        async with tcp_conn(loop) as c:
            assert c.ctr.can_write_eof() is True
            c.ctr.write(b"before")
            c.ctr.write_eof()
            c.ctr.write_eof()  # twice is harmless
            with pytest.raises(RuntimeError) as info:
                c.ctr.write(b"after")
            assert str(info.value) == "Cannot call write() after write_eof()"
            await c.sp.eof
            assert bytes(c.sp.data) == b"before"

    run(loop, main())


def test_write_eof_after_buffered_data(loop):
    # write_eof() with data still buffered: the EOF goes out after all of it.
    size = 8 * 1024 * 1024

    async def main():
        async with tcp_conn(loop, server=lambda: Proto(loop, eof_result=True)) as c:
            stall(c)
            data = os.urandom(size)
            c.ctr.write(data)
            assert c.ctr.get_write_buffer_size() > 0
            c.ctr.write_eof()
            assert not c.ctr.is_closing()
            c.str.resume_reading()
            await c.sp.eof
            assert len(c.sp.data) == size
            assert bytes(c.sp.data) == data
            # The client can still read what the server writes.
            c.str.write(b"back")
            await until(lambda: len(c.cp.data) == 4)
            assert bytes(c.cp.data) == b"back"

    run(loop, main(), timeout=30)


def test_write_after_close_is_ignored(loop, loop_kind, request):
    asyncio_ref.asyncio_bug(
        request, loop_kind, asyncio_ref.PY >= (3, 12),
        "from 3.12 writelines() after close() raises TypeError ('NoneType' object is not "
        "callable): close() drops the transport's _write_ready (gh-136234)")
    async def main():
        async with tcp_conn(loop) as c:
            c.ctr.write(b"first")
            c.ctr.close()
            c.ctr.write(b"ignored")  # no exception
            c.ctr.writelines([b"ignored too"])
            assert await c.cp.lost is None
            c.ctr.write(b"after lost")  # still no exception
            await c.sp.eof
            assert bytes(c.sp.data) == b"first"
            assert c.cp.lost_calls == [None]

    run(loop, main())


def test_close_flushes_buffer_before_connection_lost(loop):
    size = 8 * 1024 * 1024

    async def main():
        async with tcp_conn(loop) as c:
            stall(c)
            data = os.urandom(size)
            c.ctr.write(data)
            assert c.ctr.get_write_buffer_size() > 0
            c.ctr.close()
            assert c.ctr.is_closing()
            await asyncio.sleep(0.05)
            # Not flushed yet (the server does not read): not lost either.
            assert not c.cp.lost.done()
            assert c.cp.events == ["made"]
            c.str.resume_reading()
            await c.sp.eof
            assert bytes(c.sp.data) == data
            assert await c.cp.lost is None
            assert c.cp.lost_calls == [None]

    run(loop, main(), timeout=30)


def test_abort_drops_buffer(loop):
    size = 16 * 1024 * 1024

    async def main():
        async with tcp_conn(loop) as c:
            stall(c)
            c.ctr.write(b"x" * size)
            assert c.ctr.get_write_buffer_size() > 0
            c.ctr.abort()
            assert c.ctr.is_closing()
            assert c.ctr.get_write_buffer_size() == 0
            assert await c.cp.lost is None
            c.str.resume_reading()
            await c.sp.lost
            assert len(c.sp.data) < size
            await asyncio.sleep(0.01)
            assert c.cp.lost_calls == [None]
            assert c.cp.events == ["made", "lost"]

    run(loop, main(), timeout=30)


def test_is_closing(loop):
    async def main():
        async with tcp_conn(loop) as c:
            assert c.ctr.is_closing() is False
            assert c.str.is_closing() is False
            c.ctr.close()
            assert c.ctr.is_closing() is True
            await c.cp.lost
            assert c.ctr.is_closing() is True

    run(loop, main())


# ----------------------------------------------------------- extra info


def test_get_extra_info(loop):
    async def main():
        async with tcp_conn(loop) as c:
            csock = c.ctr.get_extra_info("socket")
            ssock = c.str.get_extra_info("socket")
            assert csock.family == socket.AF_INET
            assert csock.type == socket.SOCK_STREAM
            assert csock.fileno() >= 0
            assert c.ctr.get_extra_info("peername") == ("127.0.0.1", c.port)
            assert csock.getpeername() == ("127.0.0.1", c.port)
            sockname = c.ctr.get_extra_info("sockname")
            assert sockname[0] == "127.0.0.1" and sockname[1] > 0
            assert csock.getsockname() == sockname
            assert c.str.get_extra_info("peername") == sockname
            assert c.str.get_extra_info("sockname") == ("127.0.0.1", c.port)
            assert ssock.getpeername() == sockname
            assert c.ctr.get_extra_info("no such key") is None
            assert c.ctr.get_extra_info("no such key", "dflt") == "dflt"
            assert c.ctr.get_extra_info("sslcontext") is None
            assert c.ctr.get_extra_info("peercert") is None
            # asyncio sets TCP_NODELAY on TCP transports.
            assert csock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert ssock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    run(loop, main())


def test_get_extra_info_arguments(loop):
    async def main():
        async with tcp_conn(loop) as c:
            tr = c.ctr
            assert tr.get_extra_info(name="peername") == ("127.0.0.1", c.port)
            assert tr.get_extra_info("no such key", default="dflt") == "dflt"
            assert tr.get_extra_info(default="dflt", name="no such key") == "dflt"
            for bad in [
                lambda: tr.get_extra_info(),                     # name missing
                lambda: tr.get_extra_info(default=1),
                lambda: tr.get_extra_info("peername", None, 1),  # too many
                lambda: tr.get_extra_info("peername", name="x"),  # twice
                lambda: tr.get_extra_info("peername", dflt=1),   # not a parameter
            ]:
                with pytest.raises(TypeError):
                    bad()

    run(loop, main())


def test_fatal_error_message(loop, errors):
    # asyncio's _fatal_error(exc, message='Fatal error on transport'): an
    # exception that is not an OSError goes to the exception handler with
    # the message; the transport closes.
    async def main():
        async with tcp_conn(loop) as c:
            c.ctr._fatal_error(RuntimeError("boom"), "custom message")
            assert c.ctr.is_closing()
            await c.cp.lost
        async with tcp_conn(loop) as c:
            c.ctr._fatal_error(RuntimeError("boom"))
            await c.cp.lost

    run(loop, main())
    assert errors.messages == ["custom message", "Fatal error on transport"]


def test_fatal_error_arguments(fa_loop):
    # flaskasync: positional only, the message a str without NULs (asyncio
    # formats whatever it gets).
    async def main():
        async with tcp_conn(fa_loop) as c:
            exc = RuntimeError("boom")
            for bad, kind in [
                (lambda: c.ctr._fatal_error(), TypeError),
                (lambda: c.ctr._fatal_error(exc, "m", 1), TypeError),
                (lambda: c.ctr._fatal_error(exc, message="m"), TypeError),
                (lambda: c.ctr._fatal_error(exc, 1), TypeError),
                (lambda: c.ctr._fatal_error(exc, b"m"), TypeError),
                (lambda: c.ctr._fatal_error(exc, "a\0b"), ValueError),
            ]:
                with pytest.raises(kind):
                    bad()
            assert not c.ctr.is_closing()

    run(fa_loop, main())


# ---------------------------------------------------------- pause reading


def test_pause_resume_reading(loop):
    async def main():
        async with tcp_conn(loop) as c:
            assert c.ctr.is_reading() is True
            c.ctr.pause_reading()
            c.ctr.pause_reading()  # idempotent
            assert c.ctr.is_reading() is False
            c.str.write(b"while paused")
            await asyncio.sleep(0.05)
            assert c.cp.data == b""
            c.ctr.resume_reading()
            c.ctr.resume_reading()
            assert c.ctr.is_reading() is True
            await until(lambda: len(c.cp.data) == 12)
            assert bytes(c.cp.data) == b"while paused"
            # EOF is not delivered while paused either.
            c.ctr.pause_reading()
            c.str.close()
            await asyncio.sleep(0.05)
            assert c.cp.events == ["made", "data"]
            c.ctr.resume_reading()
            assert await c.cp.lost is None
            assert c.cp.events == ["made", "data", "eof", "lost"]
            assert c.ctr.is_reading() is False  # closed
            c.ctr.pause_reading()  # no error on a closed transport
            c.ctr.resume_reading()

    run(loop, main())


# ----------------------------------------------------------- flow control


def test_write_buffer_limits(loop):
    async def main():
        async with tcp_conn(loop) as c:
            tr = c.ctr
            assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            assert tr.get_write_buffer_size() == 0
            tr.set_write_buffer_limits(high=100)
            assert tr.get_write_buffer_limits() == (25, 100)
            tr.set_write_buffer_limits(low=10)
            assert tr.get_write_buffer_limits() == (10, 40)
            tr.set_write_buffer_limits(high=50, low=50)
            assert tr.get_write_buffer_limits() == (50, 50)
            tr.set_write_buffer_limits(0, 0)
            assert tr.get_write_buffer_limits() == (0, 0)
            tr.set_write_buffer_limits()
            assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            with pytest.raises(ValueError) as info:
                tr.set_write_buffer_limits(high=10, low=20)
            assert str(info.value) == "high (10) must be >= low (20) must be >= 0"
            with pytest.raises(ValueError) as info:
                tr.set_write_buffer_limits(high=-1)
            assert str(info.value) == "high (-1) must be >= low (-1) must be >= 0"
            assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            tr.set_write_buffer_limits(100)
            assert tr.get_write_buffer_limits() == (25, 100)
            tr.set_write_buffer_limits(None, low=10)
            assert tr.get_write_buffer_limits() == (10, 40)
            for bad in [
                lambda: tr.set_write_buffer_limits(1, 1, 1),     # too many
                lambda: tr.set_write_buffer_limits(1, high=1),   # twice
                lambda: tr.set_write_buffer_limits(hi=1),        # not a parameter
            ]:
                with pytest.raises(TypeError):
                    bad()
            assert tr.get_write_buffer_limits() == (10, 40)

    run(loop, main())


def test_pause_and_resume_writing(loop):
    size = 16 * 1024 * 1024

    async def main():
        async with tcp_conn(loop) as c:
            stall(c)  # the peer does not read
            data = os.urandom(size)
            c.ctr.write(data)
            # pause_writing() is called from within write() (drain() relies on it).
            assert c.cp.flow == ["pause"]
            low, high = c.ctr.get_write_buffer_limits()
            assert c.ctr.get_write_buffer_size() > high
            await asyncio.sleep(0.05)
            assert c.cp.flow == ["pause"]
            c.str.resume_reading()  # the peer reads: the buffer drains
            await until(lambda: c.cp.flow == ["pause", "resume"])
            assert c.ctr.get_write_buffer_size() <= low
            await until(lambda: len(c.sp.data) == size)
            assert bytes(c.sp.data) == data
            assert c.cp.flow == ["pause", "resume"]

    run(loop, main(), timeout=30)


def test_resume_writing_at_the_low_water_mark_not_at_empty(loop):
    """resume_writing() comes as soon as the buffer is down to the low-water
    mark, with data still buffered, as asyncio's _maybe_resume_protocol
    does; not only once the buffer is empty."""
    sizes = []

    class Recording(Proto):
        def resume_writing(self):
            super().resume_writing()
            sizes.append(self.transport.get_write_buffer_size())

    async def main():
        async with tcp_conn(loop, client=lambda: Recording(loop)) as c:
            stall(c)
            # The marks are far above what one send() takes (the kernel's
            # send buffer is at most a few MiB), so the buffer passes the
            # low-water mark with data left.
            c.ctr.set_write_buffer_limits(high=12 << 20, low=8 << 20)
            c.ctr.write(b"w" * (24 << 20))
            assert c.cp.flow == ["pause"]
            c.str.resume_reading()
            await until(lambda: c.cp.flow == ["pause", "resume"])
            assert 0 < sizes[0] <= 8 << 20, sizes
            await until(lambda: len(c.sp.data) == 24 << 20)

    run(loop, main(), timeout=30)


def test_resume_reading_on_a_closing_transport_reads_nothing(loop):
    """resume_reading() after close() is a no-op (asyncio's checks
    _closing): while the close waits for the write buffer to flush, data the
    peer sent is not delivered and is_reading() stays False."""

    async def main():
        async with tcp_conn(loop) as c:
            c.ctr.pause_reading()
            c.str.write(b"sent while paused")
            stall(c)
            c.ctr.write(b"x" * (8 << 20))  # the peer does not read: close() must wait
            await asyncio.sleep(0.05)
            c.ctr.close()
            assert c.ctr.is_closing()
            c.ctr.resume_reading()
            assert c.ctr.is_reading() is False
            await asyncio.sleep(0.1)
            assert c.cp.data == b"" and c.cp.events == ["made"]
            c.ctr.abort()
            await c.cp.lost

    run(loop, main(), timeout=30)


def test_writes_after_connection_lost_warn_from_the_fifth(loop, caplog):
    """Writes to a transport whose connection is gone are dropped; from the
    fifth on each one logs asyncio's warning (LOG_THRESHOLD_FOR_CONNLOST_WRITES),
    as asyncio's socket transport does."""

    async def main():
        async with tcp_conn(loop) as c:
            c.ctr.abort()
            await c.cp.lost
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(7):
                    c.ctr.write(b"late")
            warned = [r for r in caplog.records
                      if r.getMessage() == "socket.send() raised exception."]
            assert len(warned) == 3
            assert c.ctr.get_write_buffer_size() == 0

    run(loop, main())


def test_resume_reading_after_the_fd_was_closed_behind_the_transport(loop, loop_kind):
    """A paused transport whose fd user code closed, then resume_reading():
    asyncio's epoll registration raises OSError(EBADF) out of
    resume_reading(); flaskasync's ends the connection instead
    (connection_lost(OSError(EBADF)), documented in docs/architecture.md),
    as it does when its periodic fd check finds the fd gone."""

    async def main():
        async with tcp_conn(loop) as c:
            c.ctr.pause_reading()
            sock = c.ctr.get_extra_info("socket")
            number = sock.fileno()
            os.close(number)  # behind the transport's back
            try:
                c.ctr.resume_reading()
            except OSError as e:
                raised = e.errno
            else:
                raised = None
            if loop_kind == "asyncio":
                assert raised == errno.EBADF
                # asyncio's socket still owns the number and closes it on
                # abort(): give it a file of its own to close.
                placeholder = os.open(os.devnull, os.O_RDONLY)
                os.dup2(placeholder, number)
                os.close(placeholder)
                c.ctr.abort()
            else:
                assert raised is None
                exc = await asyncio.wait_for(c.cp.lost, 5)
                assert isinstance(exc, OSError) and exc.errno == errno.EBADF
            await c.cp.lost

    run(loop, main())


def test_set_write_buffer_limits_pauses_at_once(loop):
    async def main():
        async with tcp_conn(loop) as c:
            stall(c)
            c.ctr.write(b"z" * (16 * 1024 * 1024))
            assert c.cp.flow == ["pause"]
            c.str.resume_reading()
            await until(lambda: c.cp.flow == ["pause", "resume"])
            await until(lambda: c.ctr.get_write_buffer_size() == 0)
            stall(c)
            c.ctr.set_write_buffer_limits(high=1 << 30)
            c.ctr.write(b"y" * (8 * 1024 * 1024))
            assert c.cp.flow == ["pause", "resume"]  # under the new high-water mark
            size = c.ctr.get_write_buffer_size()
            assert size > 0
            # Lowering the mark below the buffered size pauses immediately.
            c.ctr.set_write_buffer_limits(high=size // 2)
            assert c.cp.flow == ["pause", "resume", "pause"]
            c.str.resume_reading()
            await until(lambda: len(c.sp.data) == 24 * 1024 * 1024)

    run(loop, main(), timeout=30)


def test_large_transfer_intact(loop):
    size = 10 * 1024 * 1024
    data = os.urandom(size)

    async def main():
        async with tcp_conn(loop, server=lambda: Echo(loop)) as c:
            c.ctr.write(data)
            c.ctr.write_eof()
            await until(lambda: len(c.cp.data) >= size)
            assert hashlib.sha256(c.cp.data).digest() == hashlib.sha256(data).digest()
            assert hashlib.sha256(c.sp.data).digest() == hashlib.sha256(data).digest()

    run(loop, main(), timeout=60)


# ------------------------------------------------------------- errors


def test_peer_reset_gives_connection_reset_error(loop):
    contexts = collect_errors(loop)

    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        lsock.setblocking(False)
        try:
            tr, p = await loop.create_connection(
                lambda: Proto(loop), "127.0.0.1", lsock.getsockname()[1])
            conn, _ = await loop.sock_accept(lsock)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST
            exc = await p.lost
            assert isinstance(exc, ConnectionResetError)
            assert exc.errno == errno.ECONNRESET
            await asyncio.sleep(0.01)
            assert p.events == ["made", "lost"]
            assert p.lost_calls == [exc]
            assert tr.is_closing()
        finally:
            lsock.close()

    run(loop, main())
    assert contexts == []  # OSErrors are not reported to the handler


def test_exception_in_data_received_goes_to_handler(loop):
    contexts = collect_errors(loop)
    boom = ValueError("boom in data_received")

    class Bad(Proto):
        def data_received(self, data):
            super().data_received(data)
            raise boom

    async def main():
        async with tcp_conn(loop, server=lambda: Bad(loop)) as c:
            c.ctr.write(b"x")
            assert await c.sp.lost is boom
            assert c.sp.lost_calls == [boom]
            assert await c.cp.lost is None
            return c.str, c.sp

    tr, proto = run(loop, main())
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"] == "Fatal error: protocol.data_received() call failed."
    assert ctx["exception"] is boom
    assert ctx["transport"] is tr
    assert ctx["protocol"] is proto


def test_exception_in_eof_received_goes_to_handler(loop):
    contexts = collect_errors(loop)
    boom = KeyError("boom in eof_received")

    class Bad(Proto):
        def eof_received(self):
            super().eof_received()
            raise boom

    async def main():
        async with tcp_conn(loop, server=lambda: Bad(loop)) as c:
            c.ctr.write_eof()
            assert await c.sp.lost is boom
            return c.str, c.sp

    tr, proto = run(loop, main())
    assert [c["message"] for c in contexts] == [
        "Fatal error: protocol.eof_received() call failed."]
    assert contexts[0]["exception"] is boom
    assert contexts[0]["transport"] is tr
    assert contexts[0]["protocol"] is proto


def test_exception_in_get_buffer_goes_to_handler(loop):
    contexts = collect_errors(loop)
    boom = RuntimeError("boom in get_buffer")

    class Bad(BufProto):
        def get_buffer(self, sizehint):
            raise boom

    async def main():
        async with tcp_conn(loop, server=lambda: Bad(loop)) as c:
            c.ctr.write(b"x")
            assert await c.sp.lost is boom
            assert c.sp.events == ["made", "lost"]
            return c.str, c.sp

    tr, proto = run(loop, main())
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Fatal error: protocol.get_buffer() call failed."
    assert contexts[0]["exception"] is boom
    assert contexts[0]["transport"] is tr
    assert contexts[0]["protocol"] is proto


def test_empty_buffer_from_get_buffer_is_an_error(loop):
    contexts = collect_errors(loop)

    class Empty(BufProto):
        def get_buffer(self, sizehint):
            return bytearray()

    async def main():
        async with tcp_conn(loop, server=lambda: Empty(loop)) as c:
            c.ctr.write(b"x")
            exc = await c.sp.lost
            assert isinstance(exc, RuntimeError)
            assert str(exc) == "get_buffer() returned an empty buffer"

    run(loop, main())
    assert [c["message"] for c in contexts] == [
        "Fatal error: protocol.get_buffer() call failed."]


def test_exception_in_buffer_updated_goes_to_handler(loop):
    contexts = collect_errors(loop)
    boom = ZeroDivisionError("boom in buffer_updated")

    class Bad(BufProto):
        def buffer_updated(self, nbytes):
            raise boom

    async def main():
        async with tcp_conn(loop, server=lambda: Bad(loop)) as c:
            c.ctr.write(b"x")
            assert await c.sp.lost is boom

    run(loop, main())
    assert [c["message"] for c in contexts] == [
        "Fatal error: protocol.buffer_updated() call failed."]
    assert contexts[0]["exception"] is boom


def test_exception_in_pause_writing_goes_to_handler(loop):
    contexts = collect_errors(loop)
    boom = ValueError("boom in pause_writing")

    class Bad(Proto):
        def pause_writing(self):
            raise boom

    async def main():
        async with tcp_conn(loop, client=lambda: Bad(loop)) as c:
            stall(c)
            c.ctr.write(b"p" * (16 * 1024 * 1024))  # does not raise
            assert not c.ctr.is_closing()
            c.str.resume_reading()
            await until(lambda: len(c.sp.data) == 16 * 1024 * 1024)
            return c.ctr, c.cp

    tr, proto = run(loop, main(), timeout=30)
    assert [c["message"] for c in contexts] == ["protocol.pause_writing() failed"]
    assert contexts[0]["exception"] is boom
    assert contexts[0]["transport"] is tr
    assert contexts[0]["protocol"] is proto


# ---------------------------------------------------- BufferedProtocol


def test_buffered_protocol(loop):
    size = 100_003
    data = os.urandom(size)

    async def main():
        async with tcp_conn(loop, client=lambda: BufProto(loop, size=7)) as c:
            c.str.write(data)
            c.str.close()
            assert await c.cp.lost is None
            assert bytes(c.cp.data) == data
            assert c.cp.events == ["made", "data", "eof", "lost"]
            assert c.cp.lost_calls == [None]
            assert all(isinstance(h, int) for h in c.cp.sizehints)

    run(loop, main())


def test_buffered_protocol_memoryview_buffer(loop):
    class MV(BufProto):
        def __init__(self, loop):
            super().__init__(loop, size=64)
            self.store = bytearray(1024)
            self.pos = 0

        def get_buffer(self, sizehint):
            return memoryview(self.store)[self.pos:self.pos + 10]

        def buffer_updated(self, nbytes):
            self.pos += nbytes

    async def main():
        async with tcp_conn(loop, client=lambda: MV(loop)) as c:
            c.str.write(b"0123456789abcdefghij-memoryview")
            await until(lambda: c.cp.pos == 31)
            assert bytes(c.cp.store[:31]) == b"0123456789abcdefghij-memoryview"

    run(loop, main())


def test_set_protocol_get_protocol(loop):
    async def main():
        async with tcp_conn(loop) as c:
            first = c.cp
            assert c.ctr.get_protocol() is first
            c.str.write(b"one")
            await until(lambda: len(first.data) == 3)

            second = Proto(loop)
            c.ctr.set_protocol(second)
            assert c.ctr.get_protocol() is second
            c.str.write(b"two")
            await until(lambda: len(second.data) == 3)
            assert bytes(first.data) == b"one"
            assert bytes(second.data) == b"two"

            # Switching to a BufferedProtocol switches the read path too.
            third = BufProto(loop, size=4)
            c.ctr.set_protocol(third)
            c.str.write(b"three")
            await until(lambda: len(third.data) == 5)
            assert bytes(third.data) == b"three"
            assert bytes(second.data) == b"two"

            c.str.close()
            assert await third.lost is None
            assert third.events == ["data", "eof", "lost"]  # no connection_made
            assert not first.lost.done() and not second.lost.done()
            c.cp.lost.set_result(None)  # for tcp_conn's cleanup

    run(loop, main())


# ------------------------------------------------- create_connection


def test_create_connection_with_sock(loop):
    async def main():
        srv = await loop.create_server(lambda: Echo(loop), "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        sock = socket.create_connection(addr)  # blocking, connected
        fd = sock.fileno()
        tr, p = await loop.create_connection(lambda: Proto(loop), sock=sock)
        assert sock.gettimeout() == 0.0  # made non-blocking by the loop
        assert tr.get_extra_info("socket").fileno() == fd
        assert tr.get_extra_info("peername") == addr
        tr.write(b"via sock")
        await until(lambda: len(p.data) == 8)
        assert bytes(p.data) == b"via sock"
        tr.close()
        await p.lost
        assert sock.fileno() == -1  # the transport closed it
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_create_connection_local_addr(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        local_port = closed_port()
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, local_addr=("127.0.0.1", local_port))
        assert tr.get_extra_info("sockname") == ("127.0.0.1", local_port)
        tr.close()
        await p.lost
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, local_addr=("127.0.0.1", 0))
        assert tr.get_extra_info("sockname")[0] == "127.0.0.1"
        tr.close()
        await p.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_create_connection_local_addr_in_use(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        try:
            with pytest.raises(OSError) as info:
                await loop.create_connection(
                    lambda: Proto(loop), "127.0.0.1", port,
                    local_addr=busy.getsockname())
            assert info.value.errno == errno.EADDRINUSE
            assert str(info.value) == asyncio_ref.bind_error(
                busy.getsockname(), OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)))
        finally:
            busy.close()
            srv.close()
            await srv.wait_closed()

    run(loop, main())


def test_create_connection_refused(loop):
    port = closed_port()

    async def main():
        with pytest.raises(ConnectionRefusedError) as info:
            await loop.create_connection(lambda: Proto(loop), "127.0.0.1", port)
        assert info.value.errno == errno.ECONNREFUSED
        assert str(info.value) == (
            f"[Errno {errno.ECONNREFUSED}] Connect call failed ('127.0.0.1', {port})")

    run(loop, main())


def fake_getaddrinfo(loop, ports):
    """Make loop.getaddrinfo return one 127.0.0.1 entry per port."""

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", p))
                for p in ports]

    loop.getaddrinfo = getaddrinfo


def test_create_connection_multiple_errors(loop):
    p1, p2 = closed_port(), closed_port()
    while p2 == p1:
        p2 = closed_port()
    fake_getaddrinfo(loop, [p1, p2])

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_connection(lambda: Proto(loop), "multi.example", 80)
        assert type(info.value) is OSError
        assert info.value.errno is None
        assert str(info.value) == (
            f"Multiple exceptions: [Errno {errno.ECONNREFUSED}] Connect call failed "
            f"('127.0.0.1', {p1}), [Errno {errno.ECONNREFUSED}] Connect call failed "
            f"('127.0.0.1', {p2})")

    run(loop, main())


def test_create_connection_same_error_twice_raises_it(loop):
    p1 = closed_port()
    fake_getaddrinfo(loop, [p1, p1])

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(lambda: Proto(loop), "twice.example", 80)

    run(loop, main())


def test_create_connection_tries_next_address(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        fake_getaddrinfo(loop, [closed_port(), port])
        tr, p = await loop.create_connection(lambda: Proto(loop), "fallback.example", 80)
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        tr.close()
        await p.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_create_connection_empty_getaddrinfo(loop):
    fake_getaddrinfo(loop, [])

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_connection(lambda: Proto(loop), "empty.example", 80)
        assert str(info.value) == "getaddrinfo() returned empty list"

    run(loop, main())


def test_create_connection_argument_errors(loop):
    async def main():
        factory = lambda: Proto(loop)  # noqa: E731
        with socket.socket() as sock:
            with pytest.raises(ValueError) as info:
                await loop.create_connection(factory, "127.0.0.1", 80, sock=sock)
            assert str(info.value) == "host/port and sock can not be specified at the same time"
            assert sock.fileno() != -1  # not closed
        with pytest.raises(ValueError) as info:
            await loop.create_connection(factory)
        assert str(info.value) == "host and port was not specified and no sock specified"
        with pytest.raises(ValueError) as info:
            await loop.create_connection(factory, "127.0.0.1", 80, server_hostname="x")
        assert str(info.value) == "server_hostname is only meaningful with ssl"
        with pytest.raises(ValueError) as info:
            await loop.create_connection(factory, "127.0.0.1", 80, ssl_handshake_timeout=1)
        assert str(info.value) == "ssl_handshake_timeout is only meaningful with ssl"
        with pytest.raises(ValueError) as info:
            await loop.create_connection(factory, "127.0.0.1", 80, ssl_shutdown_timeout=1)
        assert str(info.value) == "ssl_shutdown_timeout is only meaningful with ssl"
        with pytest.raises(ValueError) as info:
            await loop.create_connection(factory, port=80, ssl=True)
        assert str(info.value) == "You must set server_hostname when using ssl without a host"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError) as info:
                await loop.create_connection(factory, sock=udp)
            assert str(info.value).startswith("A Stream Socket was expected, got ")

    run(loop, main())


def test_create_connection_happy_eyeballs_and_interleave(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        for kw in ({"happy_eyeballs_delay": 0.25}, {"interleave": 1},
                   {"happy_eyeballs_delay": 0.05, "interleave": 2}):
            tr, p = await loop.create_connection(lambda: Proto(loop), "127.0.0.1", port, **kw)
            assert tr.get_extra_info("peername") == ("127.0.0.1", port)
            tr.close()
            await p.lost
        # With happy eyeballs a refused first address falls back to the next.
        fake_getaddrinfo(loop, [closed_port(), port])
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "he.example", 80, happy_eyeballs_delay=0.1)
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        tr.close()
        await p.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_create_connection_unknown_host(loop):
    async def main():
        with pytest.raises(socket.gaierror):
            await loop.create_connection(lambda: Proto(loop), "no-such-host.invalid", 80)
        with pytest.raises(socket.gaierror):
            await loop.create_connection(
                lambda: Proto(loop), "localhost", 80, flags=socket.AI_NUMERICHOST)

    run(loop, main())


def test_create_connection_resolves_localhost(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "localhost", port, family=socket.AF_INET)
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        tr.close()
        await p.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_create_connection_cancelled_leaks_no_fd(loop):
    # Cancelled while resolving (through a getaddrinfo that never answers):
    # no socket is left open.
    gate = loop.create_future()

    async def slow_getaddrinfo(*args, **kwargs):
        await gate
        return []

    loop.getaddrinfo = slow_getaddrinfo

    async def attempt():
        task = loop.create_task(loop.create_connection(lambda: Proto(loop), "slow.example", 80))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def main():
        await attempt()  # warm-up
        before = fd_count()
        for _ in range(5):
            await attempt()
        assert fd_count() == before

    run(loop, main())


# ------------------------------------------------------- create_server


def test_server_object(loop):
    async def main():
        srv = await loop.create_server(lambda: Echo(loop), "127.0.0.1", 0)
        assert srv.get_loop() is loop
        assert srv.is_serving() is True
        socks = srv.sockets
        assert isinstance(socks, tuple) and len(socks) == 1
        addr = socks[0].getsockname()
        assert addr[0] == "127.0.0.1" and addr[1] > 0
        assert socks[0].family == socket.AF_INET
        assert socks[0].type == socket.SOCK_STREAM
        assert socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0

        tr, p = await loop.create_connection(lambda: Proto(loop), *addr)
        tr.write(b"served")
        await until(lambda: len(p.data) == 6)

        srv.close()
        assert srv.is_serving() is False
        assert srv.sockets == ()
        srv.close()  # twice is fine
        closed = asyncio.ensure_future(srv.wait_closed())
        await asyncio.sleep(0.05)
        # 3.12.1+: wait_closed() waits for the open connection.
        assert closed.done() is not asyncio_ref.WAIT_CLOSED_WAITS_FOR_CONNECTIONS
        # The existing connection is not closed by server.close().
        tr.write(b"still")
        await until(lambda: len(p.data) == 11)
        assert bytes(p.data) == b"servedstill"
        tr.close()
        await p.lost
        await asyncio.wait_for(closed, 1)
        # Nothing listens any more.
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(lambda: Proto(loop), *addr)

    run(loop, main())


def test_server_start_serving_false(loop):
    async def main():
        srv = await loop.create_server(
            lambda: Proto(loop), "127.0.0.1", 0, start_serving=False)
        try:
            assert srv.is_serving() is False
            addr = srv.sockets[0].getsockname()
            assert addr[1] > 0  # bound already...
            # ...but not listening: listen() is called by start_serving.
            with pytest.raises(ConnectionRefusedError):
                await loop.create_connection(lambda: Proto(loop), *addr)
            await srv.start_serving()
            assert srv.is_serving() is True
            await srv.start_serving()  # again: no-op
            tr, p = await loop.create_connection(lambda: Proto(loop), *addr)
            tr.close()
            await p.lost
        finally:
            srv.close()
            await srv.wait_closed()

    run(loop, main())


def test_server_serve_forever_cancelled(loop):
    async def main():
        srv = await loop.create_server(
            lambda: Proto(loop), "127.0.0.1", 0, start_serving=False)
        addr = srv.sockets[0].getsockname()
        task = loop.create_task(srv.serve_forever())
        await asyncio.sleep(0.01)
        assert srv.is_serving() is True
        with pytest.raises(RuntimeError) as info:
            await srv.serve_forever()
        assert "is already being awaited on serve_forever()" in str(info.value)
        tr, p = await loop.create_connection(lambda: Proto(loop), *addr)
        tr.close()
        await p.lost
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert srv.is_serving() is False
        assert len(srv.sockets) == 0
        with pytest.raises(RuntimeError) as info:
            await srv.serve_forever()
        assert str(info.value).endswith("is closed")

    run(loop, main())


def test_server_close_ends_serve_forever(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0)
        task = loop.create_task(srv.serve_forever())
        await asyncio.sleep(0.01)
        srv.close()
        # close() cancels serve_forever's future: the task ends cancelled.
        with pytest.raises(asyncio.CancelledError):
            await task

    run(loop, main())


def test_server_async_with(loop):
    async def main():
        async with await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0) as srv:
            assert srv.is_serving()
            addr = srv.sockets[0].getsockname()
        assert not srv.is_serving()
        assert len(srv.sockets) == 0
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(lambda: Proto(loop), *addr)

    run(loop, main())


def test_server_wait_closed_waits_for_connections(loop):
    # wait_closed() called before close() waits for the connections to end.
    async def main():
        sprotos = []

        def factory():
            sprotos.append(Proto(loop))
            return sprotos[-1]

        srv = await loop.create_server(factory, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        tr, p = await loop.create_connection(lambda: Proto(loop), *addr)
        await until(lambda: sprotos)
        await sprotos[0].made
        waiter = loop.create_task(srv.wait_closed())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        srv.close()
        await asyncio.sleep(0.02)
        assert not waiter.done()  # a connection is still open
        tr.close()
        await sprotos[0].lost
        await asyncio.wait_for(waiter, 2)
        await p.lost

    run(loop, main())


def test_server_wait_closed_after_close_and_open_connections(loop):
    # After close(), wait_closed() returns at once with a connection still
    # open on 3.11 and 3.12.0, and waits for it from 3.12.1 on.
    async def main():
        sprotos = []

        def factory():
            sprotos.append(Proto(loop))
            return sprotos[-1]

        srv = await loop.create_server(factory, "127.0.0.1", 0)
        tr, p = await loop.create_connection(lambda: Proto(loop), *srv.sockets[0].getsockname())
        await until(lambda: sprotos)
        srv.close()
        closed = asyncio.ensure_future(srv.wait_closed())
        await asyncio.sleep(0.05)
        assert closed.done() is not asyncio_ref.WAIT_CLOSED_WAITS_FOR_CONNECTIONS
        assert not sprotos[0].lost.done()
        tr.close()
        await sprotos[0].lost
        await asyncio.wait_for(closed, 1)

    run(loop, main())


def test_server_reuse_address_and_port(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0, reuse_address=False)
        assert srv.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        port = srv.sockets[0].getsockname()[1]
        # The port is taken: binding again fails with asyncio's message.
        with pytest.raises(OSError) as info:
            await loop.create_server(lambda: Proto(loop), "127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == asyncio_ref.bind_error(
            ("127.0.0.1", port), OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)))
        srv.close()
        await srv.wait_closed()

        a = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0,
                                     reuse_address=True, reuse_port=True)
        assert a.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        assert a.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        port = a.sockets[0].getsockname()[1]
        b = await loop.create_server(lambda: Proto(loop), "127.0.0.1", port, reuse_port=True)
        assert b.sockets[0].getsockname() == ("127.0.0.1", port)
        for s in (a, b):
            s.close()
            await s.wait_closed()

    run(loop, main())


def test_server_backlog(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0, backlog=1)
        addr = srv.sockets[0].getsockname()
        for _ in range(3):
            tr, p = await loop.create_connection(lambda: Proto(loop), *addr)
            tr.close()
            await p.lost
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_server_many_clients(loop):
    n = 50

    async def main():
        sprotos = []

        def factory():
            p = Echo(loop)
            sprotos.append(p)
            return p

        srv = await loop.create_server(factory, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        conns = await asyncio.gather(*(
            loop.create_connection(lambda: Proto(loop), *addr) for _ in range(n)))
        for i, (tr, _) in enumerate(conns):
            tr.write(b"client %d" % i)
        for i, (_, p) in enumerate(conns):
            await until(lambda: len(p.data) == len(b"client %d" % i))
            assert bytes(p.data) == b"client %d" % i
        assert len(sprotos) == n
        for tr, _ in conns:
            tr.close()
        await asyncio.gather(*(p.lost for p in sprotos))
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_server_host_list_and_port_zero(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), ["127.0.0.1", "127.0.0.1"], 0)
        # The same address twice is bound once.
        assert len(srv.sockets) == 1
        assert srv.sockets[0].getsockname()[1] != 0
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_server_with_sock(loop):
    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # bound, not listening
        addr = sock.getsockname()
        srv = await loop.create_server(lambda: Echo(loop), sock=sock)
        assert srv.sockets[0].fileno() == sock.fileno()
        assert srv.sockets[0].getsockname() == addr
        assert sock.gettimeout() == 0.0
        tr, p = await loop.create_connection(lambda: Proto(loop), *addr)
        tr.write(b"on sock")
        await until(lambda: len(p.data) == 7)
        tr.close()
        await p.lost
        srv.close()
        await srv.wait_closed()
        assert sock.fileno() == -1  # closed by server.close()

    run(loop, main())


def test_server_argument_errors(loop):
    async def main():
        factory = lambda: Proto(loop)  # noqa: E731
        with socket.socket() as sock:
            with pytest.raises(ValueError) as info:
                await loop.create_server(factory, "127.0.0.1", 0, sock=sock)
            assert str(info.value) == "host/port and sock can not be specified at the same time"
        with pytest.raises(ValueError) as info:
            await loop.create_server(factory)
        assert str(info.value) == "Neither host/port nor sock were specified"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError) as info:
                await loop.create_server(factory, sock=udp)
            assert str(info.value).startswith("A Stream Socket was expected, got ")
        with pytest.raises(TypeError) as info:
            await loop.create_server(factory, "127.0.0.1", 0, ssl=True)
        assert str(info.value) == "ssl argument must be an SSLContext or None"
        with pytest.raises(ValueError) as info:
            await loop.create_server(factory, "127.0.0.1", 0, ssl_handshake_timeout=1)
        assert str(info.value) == "ssl_handshake_timeout is only meaningful with ssl"
        with pytest.raises(socket.gaierror):
            await loop.create_server(factory, "no-such-host.invalid", 0)

    run(loop, main())


def test_server_factory_error_keeps_serving(loop):
    # An exception from the protocol factory for one connection does not
    # stop the server.
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("factory failed")
        return Echo(loop)

    async def main():
        srv = await loop.create_server(factory, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        tr1, p1 = await loop.create_connection(lambda: Proto(loop), *addr)
        await until(lambda: calls)
        tr2, p2 = await loop.create_connection(lambda: Proto(loop), *addr)
        tr2.write(b"second")
        await until(lambda: len(p2.data) == 6)
        assert bytes(p2.data) == b"second"
        tr2.close()
        tr1.close()
        await p2.lost
        await p1.lost
        assert srv.is_serving()
        srv.close()
        await srv.wait_closed()

    run(loop, main())
    assert len(calls) == 2
    gc.collect()


# ----------------------------------------------- connect_accepted_socket


def test_connect_accepted_socket(loop):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        try:
            client = socket.create_connection(lsock.getsockname())
            conn, peer = lsock.accept()  # blocking: the loop makes it non-blocking
            tr, p = await loop.connect_accepted_socket(lambda: Echo(loop), conn)
            assert p.events == ["made"]
            assert conn.gettimeout() == 0.0
            assert tr.get_extra_info("peername") == peer
            assert tr.get_extra_info("sockname") == lsock.getsockname()
            await loop.sock_sendall(nb(client), b"accepted")
            got = b""
            while len(got) < 8:
                got += await loop.sock_recv(client, 100)
            assert got == b"accepted"
            client.close()
            assert await p.lost is None
            assert p.events == ["made", "data", "eof", "lost"]
            assert conn.fileno() == -1
        finally:
            lsock.close()

    run(loop, main())


def nb(sock):
    sock.setblocking(False)
    return sock


def test_connect_accepted_socket_errors(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError) as info:
                await loop.connect_accepted_socket(lambda: Proto(loop), udp)
            assert str(info.value).startswith("A Stream Socket was expected, got ")
        a, b = socket.socketpair()
        with a, b:
            with pytest.raises(ValueError) as info:
                await loop.connect_accepted_socket(
                    lambda: Proto(loop), a, ssl_handshake_timeout=1)
            assert str(info.value) == "ssl_handshake_timeout is only meaningful with ssl"

    run(loop, main())


def test_connect_accepted_socketpair(loop):
    # Any stream socket works, AF_UNIX socketpairs included.
    async def main():
        a, b = socket.socketpair()
        ta, pa = await loop.connect_accepted_socket(lambda: Proto(loop), a)
        tb, pb = await loop.connect_accepted_socket(lambda: Echo(loop), b)
        ta.write(b"pair")
        await until(lambda: len(pa.data) == 4)
        assert bytes(pa.data) == b"pair"
        ta.close()
        await pa.lost
        await pb.lost

    run(loop, main())


# -------------------------------------------------------------- sendfile


def test_sendfile(loop):
    content = os.urandom(3 * 1024 * 1024 + 5)

    async def main():
        with tempfile.TemporaryFile() as f:
            f.write(content)
            f.flush()
            f.seek(0)
            async with tcp_conn(loop) as c:
                sent = await loop.sendfile(c.ctr, f)
                assert sent == len(content)
                assert f.tell() == len(content)
                await until(lambda: len(c.sp.data) == len(content))
                assert bytes(c.sp.data) == content
                # offset and count
                sent = await loop.sendfile(c.ctr, f, offset=100, count=1000)
                assert sent == 1000
                assert f.tell() == 1100
                await until(lambda: len(c.sp.data) == len(content) + 1000)
                assert bytes(c.sp.data[len(content):]) == content[100:1100]
                # The transport still works afterwards.
                c.ctr.write(b"end")
                await until(lambda: c.sp.data.endswith(b"end"))
                assert c.cp.events == ["made"]

    run(loop, main(), timeout=30)


def test_sendfile_errors(loop):
    async def main():
        async with tcp_conn(loop) as c:
            with tempfile.TemporaryFile("w+") as text:
                with pytest.raises(ValueError) as info:
                    await loop.sendfile(c.ctr, text)
                assert str(info.value) == "file should be opened in binary mode"
            with tempfile.TemporaryFile() as f:
                f.write(b"data")
                with pytest.raises(ValueError):
                    await loop.sendfile(c.ctr, f, offset=-1)
                with pytest.raises(ValueError):
                    await loop.sendfile(c.ctr, f, count=0)
                c.ctr.close()
                with pytest.raises(RuntimeError) as info:
                    await loop.sendfile(c.ctr, f)
                assert str(info.value) == "Transport is closing"

    run(loop, main())


# --------------------------------------------------------------- streams


def test_streams_round_trip(loop):
    async def handler(reader, writer):
        line = await reader.readline()
        writer.write(line.upper())
        data = await reader.readexactly(5)
        writer.write(data[::-1])
        await writer.drain()
        rest = await reader.read()  # until EOF
        writer.write(b"rest=" + rest)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        host, port = srv.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(host, port)
        assert writer.get_extra_info("peername") == (host, port)
        writer.write(b"hello line\n")
        assert await reader.readline() == b"HELLO LINE\n"
        writer.write(b"abcde")
        await writer.drain()
        assert await reader.readexactly(5) == b"edcba"
        writer.write(b"tail")
        assert writer.can_write_eof()
        writer.write_eof()
        assert await reader.read() == b"rest=tail"
        assert reader.at_eof()
        writer.close()
        assert writer.is_closing()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_streams_incomplete_read(loop):
    async def handler(reader, writer):
        writer.write(b"abc")
        writer.close()
        await writer.wait_closed()

    async def main():
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*srv.sockets[0].getsockname())
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readexactly(10)
        assert info.value.partial == b"abc"
        assert info.value.expected == 10
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_streams_drain_waits_for_slow_reader(loop):
    size = 16 * 1024 * 1024
    received = []

    async def handler(reader, writer):
        total = 0
        while True:
            chunk = await reader.read(256 * 1024)
            if not chunk:
                break
            total += len(chunk)
            await asyncio.sleep(0.001)
        received.append(total)
        writer.close()
        await writer.wait_closed()

    async def main():
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*srv.sockets[0].getsockname())
        writer.write(b"d" * size)
        assert writer.transport.get_write_buffer_size() > 0
        await writer.drain()
        # drain() returned: the buffer is at or below the low-water mark.
        low, _ = writer.transport.get_write_buffer_limits()
        assert writer.transport.get_write_buffer_size() <= low
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(loop, main(), timeout=30)
    assert received == [size]


def test_streams_many_connections(loop):
    async def handler(reader, writer):
        data = await reader.readline()
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def client(port, i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"%d\n" % i)
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line

    async def main():
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        lines = await asyncio.gather(*(client(port, i) for i in range(100)))
        assert lines == [b"%d\n" % i for i in range(100)]
        srv.close()
        await srv.wait_closed()

    run(loop, main(), timeout=30)


# ------------------------------------------------------------- resources


def test_unclosed_transport_resource_warning(loop):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()

    async def main():
        tr, p = await loop.create_connection(
            lambda: Proto(loop), *lsock.getsockname())
        return tr.get_extra_info("socket").fileno()

    try:
        fd = run(loop, main())
        peer, _ = lsock.accept()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop.close()
            gc.collect()
            gc.collect()
            # The transport's finalizer closed the socket.
            with pytest.raises(OSError) as info:
                os.fstat(fd)
            assert info.value.errno == errno.EBADF
        peer.close()
        messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert any(m.startswith("unclosed transport") for m in messages), messages
    finally:
        lsock.close()


def test_no_fd_leak_many_connections(loop):
    async def one_round(srv_addr):
        tr, p = await loop.create_connection(lambda: Proto(loop), *srv_addr)
        tr.write(b"ping")
        await until(lambda: len(p.data) == 4)
        tr.close()
        await p.lost

    async def refused(port):
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(lambda: Proto(loop), "127.0.0.1", port)

    async def main():
        sprotos = []

        def factory():
            sprotos.append(Echo(loop))
            return sprotos[-1]

        srv = await loop.create_server(factory, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        dead = closed_port()
        await one_round(addr)  # warm-up
        await refused(dead)
        await asyncio.sleep(0.01)
        before = fd_count()
        for _ in range(200):
            await one_round(addr)
        for _ in range(50):
            await refused(dead)
        await asyncio.gather(*(p.lost for p in sprotos))
        await asyncio.sleep(0.01)
        assert fd_count() == before
        srv.close()
        await srv.wait_closed()
        await asyncio.sleep(0.01)
        assert fd_count() == before - 1  # the listening socket

    run(loop, main(), timeout=60)


def test_no_fd_leak_after_abort_and_reset(loop):
    async def main():
        srv = await loop.create_server(lambda: Proto(loop), "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        tr, p = await loop.create_connection(lambda: Proto(loop), *addr)
        tr.abort()
        await p.lost
        await asyncio.sleep(0.01)
        before = fd_count()
        for _ in range(100):
            tr, p = await loop.create_connection(lambda: Proto(loop), *addr)
            tr.abort()
            await p.lost
        await asyncio.sleep(0.05)
        assert fd_count() == before
        srv.close()
        await srv.wait_closed()

    run(loop, main(), timeout=60)


def test_transport_time_to_first_byte_is_quick(loop):
    # A sanity check that data is delivered promptly, not on a timer tick.
    async def main():
        async with tcp_conn(loop, server=lambda: Echo(loop)) as c:
            t0 = time.monotonic()
            for i in range(200):
                c.ctr.write(b"x")
                await until(lambda: len(c.cp.data) == i + 1, interval=0)
            return time.monotonic() - t0

    assert run(loop, main()) < 2.0


def test_fd_used_by_transport_cannot_be_watched(loop):
    # add_reader/add_writer and a sock_* wait on a transport's fd raise
    # RuntimeError naming the transport, as asyncio does.
    async def main():
        a, b = socket.socketpair()
        tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(a.fileno(), lambda: None)
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_writer(a.fileno(), lambda: None)
        with pytest.raises(RuntimeError, match="is used by transport"):
            await loop.sock_recv(a, 10)
        tr.close()
        await asyncio.sleep(0)
        b.close()

    run(loop, main())


# ------------------------------------------------ regressions (review)


def test_sendfile_fails_when_transport_aborted_while_draining(loop, tmp_path):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        tr, _ = await loop.create_connection(asyncio.Protocol, *lsock.getsockname())
        peer, _ = lsock.accept()  # never reads
        tr.set_write_buffer_limits(high=10**9)
        tr.write(b"x" * 50_000_000)
        await asyncio.sleep(0.05)
        assert tr.get_write_buffer_size() > 0
        path = tmp_path / "f"
        path.write_bytes(b"y" * 1000)
        with open(path, "rb") as f:
            task = loop.create_task(loop.sendfile(tr, f))
            await asyncio.sleep(0.05)
            tr.abort()
            with pytest.raises(ConnectionError, match="closed by peer"):
                await asyncio.wait_for(task, 5)
        peer.close()
        lsock.close()

    run(loop, main())


def test_server_closed_before_accepted_connection_is_set_up(loop, loop_kind):
    # The accept happened, then the server closed before the connection's
    # set-up ran: the protocol never hears of it, nothing is reported.
    events, errors = [], []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class P(asyncio.Protocol):
        def connection_made(self, tr):
            events.append("made")
            tr.close()

        def connection_lost(self, exc):
            events.append("lost")

    async def main():
        srv = await loop.create_server(P, "127.0.0.1", 0)
        c = socket.create_connection(srv.sockets[0].getsockname())
        loop.call_soon(lambda: loop.call_soon(srv.close))
        await asyncio.sleep(0.2)
        c.close()

    with warnings.catch_warnings(), asyncio_ref.record_unraisable() as unraisable:
        warnings.simplefilter("ignore", ResourceWarning)  # asyncio's __del__ warns
        run(loop, main())
        gc.collect()
    if loop_kind == "asyncio" and asyncio_ref.PY >= (3, 13):
        # asyncio 3.13's transport __del__ detaches from the closed server,
        # whose _wakeup() then iterates its waiters a second time (None).
        assert all(isinstance(e, TypeError) for e in unraisable.seen), unraisable.seen
    else:
        assert unraisable.seen == []
    assert events == []
    # asyncio reports the failed set-up only in debug mode.
    expected = ["Error on transport creation for incoming connection"] if loop.get_debug() else []
    assert [ctx["message"] for ctx in errors] == expected


def test_close_after_loop_closed_raises(loop):
    a, b = socket.socketpair()
    tr, _ = loop.run_until_complete(loop.connect_accepted_socket(asyncio.Protocol, a))
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        tr.close()
    del tr
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert a.fileno() == -1  # the transport's socket was closed when collected
    b.close()


def test_write_released_memoryview_raises(loop):
    async def main():
        a, b = socket.socketpair()
        tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        m = memoryview(b"abc")
        m.release()
        with pytest.raises(ValueError, match="released"):
            tr.write(m)
        tr.close()
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="released"):
            tr.write(m)  # also once closing
        b.close()

    run(loop, main())


def test_writelines_with_a_bad_item_writes_nothing(loop):
    async def main():
        a, b = socket.socketpair()
        tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        with pytest.raises(TypeError):
            tr.writelines([b"a" * 10, "x"])
        assert tr.get_write_buffer_size() == 0
        tr.write(b"ok")
        await asyncio.sleep(0.01)
        b.setblocking(False)
        assert b.recv(100) == b"ok"
        tr.close()
        await asyncio.sleep(0)
        b.close()

    run(loop, main())


def test_reset_behind_unread_data_is_reported(loop):
    # Data and a reset arrive together while the loop is busy: the data is
    # delivered, then the reset (libuv stops the watch on POLLERR; the
    # transport must watch again for the error behind the data).
    async def main():
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        reader, writer = await asyncio.open_connection(*srv.getsockname())
        peer, _ = srv.accept()
        writer.write(b"request the server never reads")
        await writer.drain()
        time.sleep(0.05)
        peer.sendall(b"reply")
        peer.close()  # unread data in its buffer: the kernel sends a reset
        time.sleep(0.1)  # the loop is busy while both arrive
        assert await asyncio.wait_for(reader.read(100), 5) == b"reply"
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(100), 5)
        writer.close()
        srv.close()

    run(loop, main())


def test_numeric_host_protocol_follows_socket_type(loop):
    # asyncio's numeric-address shortcut takes the protocol from the socket
    # type (proto=IPPROTO_UDP on a stream is made TCP), without a lookup.
    async def main():
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                             proto=socket.IPPROTO_UDP)
        assert tr.get_extra_info("socket").proto == socket.IPPROTO_TCP
        tr.close()
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def _repr_state(tr):
    """repr(transport) after the class name, with the fd number as N."""
    import re

    text = repr(tr)
    assert text.startswith("<") and text.endswith(">")
    return re.sub(r"fd=-?\d+", "fd=N", text[1:-1].split(" ", 1)[1])


def test_transport_repr_says_open_closing_closed_as_asyncio(loop):
    # asyncio's _SelectorSocketTransport: "closing"/"closed", the fd, and
    # the polling state until connection_lost ran.
    async def main():
        lost = asyncio.Event()

        class Lost(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set()

        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        tr, _ = await loop.create_connection(Lost, "127.0.0.1", port)
        seen = [_repr_state(tr)]
        tr.pause_reading()
        seen.append(_repr_state(tr))
        tr.resume_reading()
        tr.close()
        seen.append(_repr_state(tr))
        await lost.wait()
        seen.append(_repr_state(tr))
        srv.close()
        await srv.wait_closed()
        return seen

    assert run(loop, main()) == [
        "fd=N read=polling write=<idle, bufsize=0>",
        "fd=N read=idle write=<idle, bufsize=0>",
        "closing fd=N read=idle write=<idle, bufsize=0>",
        "closed fd=N",
    ]
