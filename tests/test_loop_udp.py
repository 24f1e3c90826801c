"""Datagram endpoints on flaskasync's loop and asyncio's:
create_datagram_endpoint with local_addr, remote_addr, sock=, reuse_port,
allow_broadcast and family; sendto with and without an address,
datagram_received / error_received / connection_lost, extra info, and the
argument errors of Python 3.11's asyncio."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import tempfile
import time

import pytest

import asyncio_ref


# Helpers are defined here, not imported from conftest.


def run(loop, coro, timeout=10):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(predicate, interval=0.002):
    while not predicate():
        await asyncio.sleep(interval)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def closed_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class DProto(asyncio.DatagramProtocol):
    """Records every callback it receives, in order."""

    def __init__(self, loop):
        self.events = []
        self.datagrams = []
        self.errors = []
        self.transport = None
        self.lost_calls = []
        self.made = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def datagram_received(self, data, addr):
        assert type(data) is bytes
        if not self.events or self.events[-1] != "datagram":
            self.events.append("datagram")
        self.datagrams.append((data, addr))

    def error_received(self, exc):
        self.events.append("error")
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)


class EchoD(DProto):
    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self.transport.sendto(data, addr)


async def endpoint(loop, cls=DProto, **kw):
    return await loop.create_datagram_endpoint(lambda: cls(loop), **kw)


# ------------------------------------------------------------ basics


def test_udp_local_addr_sendto(loop):
    async def main():
        ta, pa = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tb, pb = await endpoint(loop, local_addr=("127.0.0.1", 0))
        assert pa.events == ["made"]
        assert pa.transport is ta
        a_addr = ta.get_extra_info("sockname")
        b_addr = tb.get_extra_info("sockname")
        assert a_addr[0] == "127.0.0.1" and a_addr[1] > 0
        assert ta.get_extra_info("peername") is None
        sock = ta.get_extra_info("socket")
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_DGRAM
        assert sock.getsockname() == a_addr

        ta.sendto(b"one", b_addr)
        ta.sendto(bytearray(b"two"), b_addr)
        ta.sendto(memoryview(b"xthreex")[1:6], b_addr)
        await until(lambda: len(pb.datagrams) == 3)
        assert pb.datagrams == [(b"one", a_addr), (b"two", a_addr), (b"three", a_addr)]
        tb.sendto(b"back", a_addr)
        await until(lambda: pa.datagrams)
        assert pa.datagrams == [(b"back", b_addr)]

        assert not ta.is_closing()
        ta.close()
        assert ta.is_closing()
        assert await pa.lost is None
        ta.close()
        await asyncio.sleep(0.01)
        assert pa.lost_calls == [None]
        assert pa.events == ["made", "datagram", "lost"]
        tb.close()
        await pb.lost

    run(loop, main())


def test_udp_remote_addr(loop):
    async def main():
        ts, ps = await endpoint(loop, cls=EchoD, local_addr=("127.0.0.1", 0))
        server_addr = ts.get_extra_info("sockname")
        tc, pc = await endpoint(loop, remote_addr=server_addr)
        assert tc.get_extra_info("peername") == server_addr
        assert tc.get_extra_info("socket").getpeername() == server_addr
        client_addr = tc.get_extra_info("sockname")
        assert client_addr[0] == "127.0.0.1"
        tc.sendto(b"no address")
        tc.sendto(b"same address", server_addr)
        await until(lambda: len(pc.datagrams) == 2)
        assert pc.datagrams == [(b"no address", server_addr), (b"same address", server_addr)]
        assert ps.datagrams == [(b"no address", client_addr), (b"same address", client_addr)]
        with pytest.raises(ValueError) as info:
            tc.sendto(b"elsewhere", ("127.0.0.1", 9))
        assert str(info.value) == f"Invalid address: must be None or {server_addr}"
        tc.close()
        ts.close()
        await pc.lost
        await ps.lost

    run(loop, main())


def test_udp_local_and_remote_addr(loop):
    async def main():
        ts, ps = await endpoint(loop, local_addr=("127.0.0.1", 0))
        server_addr = ts.get_extra_info("sockname")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()
        s.close()
        tc, pc = await endpoint(loop, local_addr=local, remote_addr=server_addr)
        assert tc.get_extra_info("sockname") == local
        assert tc.get_extra_info("peername") == server_addr
        tc.sendto(b"hi")
        await until(lambda: ps.datagrams)
        assert ps.datagrams == [(b"hi", local)]
        tc.close()
        ts.close()
        await pc.lost
        await ps.lost

    run(loop, main())


def test_udp_sendto_type_error_and_empty(loop):
    async def main():
        ta, pa = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tb, pb = await endpoint(loop, local_addr=("127.0.0.1", 0))
        b_addr = tb.get_extra_info("sockname")
        with pytest.raises(TypeError) as info:
            ta.sendto("text", b_addr)
        assert str(info.value) == "data argument must be a bytes-like object, not 'str'"
        # An empty datagram: sent from 3.13 on, dropped by 3.11 and 3.12.
        ta.sendto(b"", b_addr)
        ta.sendto(b"marker", b_addr)
        await until(lambda: len(pb.datagrams) == 1 + asyncio_ref.DATAGRAM_SENDS_EMPTY)
        await asyncio.sleep(0.02)
        sender = ta.get_extra_info("sockname")
        assert pb.datagrams == [(b"", sender)] * asyncio_ref.DATAGRAM_SENDS_EMPTY + [
            (b"marker", sender)]
        ta.close()
        tb.close()
        await pa.lost
        await pb.lost

    run(loop, main())


def test_udp_large_datagram_and_buffer_size(loop):
    async def main():
        ta, pa = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tb, pb = await endpoint(loop, local_addr=("127.0.0.1", 0))
        b_addr = tb.get_extra_info("sockname")
        assert ta.get_write_buffer_size() == 0
        assert ta.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        big = os.urandom(65507)  # the IPv4 maximum
        ta.sendto(big, b_addr)
        await until(lambda: pb.datagrams)
        assert pb.datagrams[0][0] == big
        assert ta.get_write_buffer_size() == 0
        # Too big for one datagram: error_received, the transport stays open.
        ta.sendto(b"x" * 70000, b_addr)
        await until(lambda: pa.errors)
        assert isinstance(pa.errors[0], OSError)
        assert not ta.is_closing()
        ta.sendto(b"after", b_addr)
        await until(lambda: len(pb.datagrams) == 2)
        assert pb.datagrams[1][0] == b"after"
        ta.close()
        tb.close()
        await pa.lost
        await pb.lost

    run(loop, main())


def test_udp_many_datagrams(loop):
    n = 500

    async def main():
        ta, pa = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tb, pb = await endpoint(loop, cls=EchoD, local_addr=("127.0.0.1", 0))
        b_addr = tb.get_extra_info("sockname")
        # In batches small enough for the socket buffers: UDP may drop.
        for i in range(n):
            ta.sendto(b"%d" % i, b_addr)
            if i % 20 == 19:
                await until(lambda: len(pa.datagrams) == i + 1)
        await until(lambda: len(pa.datagrams) == n)
        assert sorted(int(d) for d, _ in pa.datagrams) == list(range(n))
        ta.close()
        tb.close()
        await pa.lost
        await pb.lost

    run(loop, main())


# ------------------------------------------------------------- errors


def test_udp_error_received_connection_refused(loop):
    port = closed_udp_port()

    async def main():
        tr, p = await endpoint(loop, remote_addr=("127.0.0.1", port))
        for _ in range(3):
            tr.sendto(b"anyone?")
            await asyncio.sleep(0.02)
        await until(lambda: p.errors)
        assert all(isinstance(e, ConnectionRefusedError) for e in p.errors)
        # error_received does not close the endpoint.
        assert not tr.is_closing()
        assert not p.lost.done()
        assert p.events[0] == "made" and "lost" not in p.events
        tr.close()
        assert await p.lost is None

    run(loop, main())


def test_udp_exception_in_datagram_received_goes_to_handler(loop):
    # Python 3.11's datagram transport does not catch it: the loop's handler
    # gets it (as a callback error) and the endpoint stays open.
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    boom = ValueError("boom in datagram_received")

    class Bad(DProto):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            raise boom

    async def main():
        ta, pa = await endpoint(loop, cls=Bad, local_addr=("127.0.0.1", 0))
        tb, pb = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tb.sendto(b"x", ta.get_extra_info("sockname"))
        await until(lambda: contexts)
        assert not ta.is_closing()
        tb.sendto(b"y", ta.get_extra_info("sockname"))
        await until(lambda: len(pa.datagrams) == 2)
        assert [d for d, _ in pa.datagrams] == [b"x", b"y"]
        assert not pa.lost.done()
        ta.close()
        tb.close()
        await pa.lost
        await pb.lost

    run(loop, main())
    assert len(contexts) == 2
    assert all(c["exception"] is boom for c in contexts)


def test_udp_abort(loop):
    async def main():
        tr, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tr.abort()
        assert tr.is_closing()
        assert await p.lost is None
        assert p.events == ["made", "lost"]
        await asyncio.sleep(0.01)
        assert p.lost_calls == [None]

    run(loop, main())


def test_udp_argument_errors(loop):
    factory = lambda: DProto(loop)  # noqa: E731

    async def main():
        with pytest.raises(ValueError) as info:
            await loop.create_datagram_endpoint(factory)
        assert str(info.value) == "unexpected address family"
        with pytest.raises(TypeError) as info:
            await loop.create_datagram_endpoint(factory, local_addr="127.0.0.1")
        assert str(info.value) == "2-tuple is expected"
        with pytest.raises(TypeError) as info:
            await loop.create_datagram_endpoint(factory, remote_addr=("127.0.0.1", 1, 2))
        assert str(info.value) == "2-tuple is expected"
        # reuse_address was removed in Python 3.11 (it was a ValueError
        # from 3.8.1 to 3.10).
        with pytest.raises(TypeError) as info:
            await loop.create_datagram_endpoint(
                factory, local_addr=("127.0.0.1", 0), reuse_address=True)
        assert "reuse_address" in str(info.value)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            with pytest.raises(ValueError) as info:
                await loop.create_datagram_endpoint(factory, sock=tcp)
            assert str(info.value) == asyncio_ref.datagram_socket_expected(tcp)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError) as info:
                await loop.create_datagram_endpoint(
                    factory, sock=udp, local_addr=("127.0.0.1", 0))
            assert str(info.value) == (
                "socket modifier keyword arguments can not be used when sock is "
                "specified. (local_addr=('127.0.0.1', 0))")
            with pytest.raises(ValueError) as info:
                await loop.create_datagram_endpoint(
                    factory, sock=udp, reuse_port=True, allow_broadcast=True)
            assert str(info.value) == (
                "socket modifier keyword arguments can not be used when sock is "
                "specified. (reuse_port=True, allow_broadcast=True)")
            assert udp.fileno() != -1
        with pytest.raises(socket.gaierror):
            await loop.create_datagram_endpoint(factory, local_addr=("no-such-host.invalid", 0))

    run(loop, main())


def test_udp_bind_in_use(loop):
    async def main():
        ta, pa = await endpoint(loop, local_addr=("127.0.0.1", 0))
        for i in range(3):
            if i == 1:
                before = fd_count()  # after a warm-up
            with pytest.raises(OSError) as info:
                await endpoint(loop, local_addr=ta.get_extra_info("sockname"))
            assert info.value.errno == errno.EADDRINUSE
        assert fd_count() == before
        ta.close()
        await pa.lost

    run(loop, main())


# ------------------------------------------------------------- options


def test_udp_sock(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        addr = sock.getsockname()
        tr, p = await loop.create_datagram_endpoint(lambda: DProto(loop), sock=sock)
        assert sock.gettimeout() == 0.0
        assert tr.get_extra_info("socket").fileno() == sock.fileno()
        assert tr.get_extra_info("sockname") == addr
        tb, pb = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tb.sendto(b"to sock", addr)
        await until(lambda: p.datagrams)
        assert p.datagrams == [(b"to sock", tb.get_extra_info("sockname"))]
        tr.close()
        await p.lost
        assert sock.fileno() == -1
        tb.close()
        await pb.lost

    run(loop, main())


def test_udp_reuse_port(loop):
    async def main():
        ta, pa = await endpoint(loop, local_addr=("127.0.0.1", 0), reuse_port=True)
        sock = ta.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        addr = ta.get_extra_info("sockname")
        tb, pb = await endpoint(loop, local_addr=addr, reuse_port=True)
        assert tb.get_extra_info("sockname") == addr
        for t, p in ((ta, pa), (tb, pb)):
            t.close()
            await p.lost

    run(loop, main())


def test_udp_allow_broadcast(loop):
    async def main():
        ts, ps = await endpoint(loop, local_addr=("127.0.0.1", 0))
        server_addr = ts.get_extra_info("sockname")
        tr, p = await endpoint(loop, remote_addr=server_addr, allow_broadcast=True)
        sock = tr.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) != 0
        # With allow_broadcast the socket is not connected: no peername, but
        # sendto() without an address still goes to remote_addr.
        assert tr.get_extra_info("peername") is None
        tr.sendto(b"bcast")
        await until(lambda: ps.datagrams)
        assert ps.datagrams[0][0] == b"bcast"
        tr.close()
        ts.close()
        await p.lost
        await ps.lost

    run(loop, main())


def test_udp_family_only(loop):
    async def main():
        tr, p = await endpoint(loop, family=socket.AF_INET)
        assert tr.get_extra_info("sockname") == ("0.0.0.0", 0)  # not bound yet
        assert tr.get_extra_info("peername") is None
        tb, pb = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tr.sendto(b"auto-bound", tb.get_extra_info("sockname"))
        await until(lambda: pb.datagrams)
        sender = pb.datagrams[0][1]
        assert sender[1] != 0
        assert tr.get_extra_info("socket").getsockname()[1] == sender[1]
        tr.close()
        tb.close()
        await p.lost
        await pb.lost

    run(loop, main())


def test_udp_family_mismatch(loop):
    async def main():
        with pytest.raises((socket.gaierror, ValueError, OSError)):
            await endpoint(loop, local_addr=("127.0.0.1", 0), family=socket.AF_INET6)

    run(loop, main())


def test_udp_resolves_localhost(loop):
    async def main():
        tr, p = await endpoint(loop, local_addr=("localhost", 0), family=socket.AF_INET)
        assert tr.get_extra_info("sockname")[0] == "127.0.0.1"
        tr.close()
        await p.lost

    run(loop, main())


def test_udp_unix_datagram(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            a_path = os.path.join(d, "a")
            b_path = os.path.join(d, "b")
            tb, pb = await endpoint(loop, family=socket.AF_UNIX, local_addr=b_path)
            ta, pa = await endpoint(loop, family=socket.AF_UNIX, local_addr=a_path,
                                    remote_addr=b_path)
            assert ta.get_extra_info("peername") == b_path
            ta.sendto(b"unix dgram")
            await until(lambda: pb.datagrams)
            assert pb.datagrams == [(b"unix dgram", a_path)]
            ta.close()
            tb.close()
            await pa.lost
            await pb.lost
            # A stale socket file at local_addr is removed before binding.
            tb, pb = await endpoint(loop, family=socket.AF_UNIX, local_addr=b_path)
            tb.close()
            await pb.lost
            with pytest.raises(TypeError) as info:
                await endpoint(loop, family=socket.AF_UNIX, local_addr=("127.0.0.1", 0))
            assert str(info.value) == "string is expected"

    run(loop, main())


def test_udp_no_fd_leak(loop):
    async def one():
        ta, pa = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tb, pb = await endpoint(loop, remote_addr=ta.get_extra_info("sockname"))
        tb.sendto(b"x")
        await until(lambda: pa.datagrams)
        ta.close()
        tb.close()
        await pa.lost
        await pb.lost

    async def main():
        await one()
        before = fd_count()
        for _ in range(100):
            await one()
        assert fd_count() == before

    run(loop, main(), timeout=30)


# ------------------------------------------------ more asyncio behaviour
#
# The tests below were added with flaskasync's C datagram transport.  Each
# runs on both loops unless it measures flaskasync's own objects.

import gc  # noqa: E402
import logging  # noqa: E402
import warnings  # noqa: E402


class FlowProto(DProto):
    """Also records pause_writing / resume_writing."""

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")


def _unix_receiver(d):
    """A bound Unix datagram socket that nobody reads (yet)."""
    path = os.path.join(d, "rx")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.setblocking(False)
    return rx, path


async def _fill(tr, n, size=1000):
    """sendto() n numbered datagrams; the receiver is not reading, so the
    kernel refuses some (EAGAIN) and the transport queues them."""
    for i in range(n):
        tr.sendto(b"%d:" % i + b"x" * (size - 8))


async def _drain(loop, rx, n):
    got = []
    while len(got) < n:
        data = await loop.sock_recv(rx, 4096)
        got.append(int(data.split(b":")[0]))
    return got


def test_udp_queued_datagrams_count_their_header(loop):
    # Each datagram queued behind a full socket counts len(data) plus the
    # interpreter's header size (8 from 3.13 on, so that b"" counts too).
    async def main():
        with tempfile.TemporaryDirectory() as d:
            rx, path = _unix_receiver(d)
            tr, p = await endpoint(loop, family=socket.AF_UNIX, remote_addr=path)
            tr.set_write_buffer_limits(high=10**9)
            await _fill(tr, 300)
            before = tr.get_write_buffer_size()
            assert before > 0
            header = asyncio_ref.DATAGRAM_HEADER_BYTES
            tr.sendto(b"x" * 100)
            assert tr.get_write_buffer_size() == before + 100 + header
            if asyncio_ref.DATAGRAM_SENDS_EMPTY:
                tr.sendto(b"")
                assert tr.get_write_buffer_size() == before + 100 + 2 * header
            tr.abort()
            await p.lost
            rx.close()

    run(loop, main())


def test_udp_send_queue_flow_control_and_close_drains(loop, loop_kind, request):
    asyncio_ref.asyncio_bug(
        request, loop_kind, asyncio_ref.PY >= (3, 13),
        "3.13 counts 8 header bytes per datagram when queueing it but not when sending it, "
        "so the buffer size never drains to 0 and resume_writing() is never called "
        "(gh-135444)")
    async def main():
        with tempfile.TemporaryDirectory() as d:
            rx, path = _unix_receiver(d)
            tr, p = await endpoint(loop, cls=FlowProto, family=socket.AF_UNIX,
                                   remote_addr=path)
            assert tr.get_extra_info("peername") == path
            tr.set_write_buffer_limits(high=2000)
            assert tr.get_write_buffer_limits() == (500, 2000)
            await _fill(tr, 200)
            queued = tr.get_write_buffer_size()
            assert queued > 2000
            assert tr._buffer_size == queued
            assert p.events == ["made", "pause"]
            tr.close()
            assert tr.is_closing()
            await asyncio.sleep(0.05)
            # close() waits for the queue to be sent.
            assert not p.lost.done()
            got = await _drain(loop, rx, 200)
            assert got == list(range(200))
            assert await p.lost is None
            assert p.events == ["made", "pause", "resume", "lost"]
            assert tr.get_write_buffer_size() == 0
            rx.close()

    run(loop, main())


def test_udp_pause_writing_as_soon_as_the_queue_passes_high(loop):
    """pause_writing() comes from the sendto() that takes the queue above the
    high-water mark, not later (asyncio's _maybe_pause_protocol)."""
    async def main():
        with tempfile.TemporaryDirectory() as d:
            rx, path = _unix_receiver(d)
            tr, p = await endpoint(loop, cls=FlowProto, family=socket.AF_UNIX,
                                   remote_addr=path)
            tr.set_write_buffer_limits(high=5000)
            for i in range(1000):
                tr.sendto(b"%d:" % i + b"x" * 992)
                if tr.get_write_buffer_size() > 5000:
                    break
                assert "pause" not in p.events, (i, tr.get_write_buffer_size())
            assert tr.get_write_buffer_size() > 5000
            assert p.events == ["made", "pause"]
            tr.abort()
            await p.lost
            rx.close()

    run(loop, main())


def test_udp_abort_drops_the_queue(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            rx, path = _unix_receiver(d)
            tr, p = await endpoint(loop, family=socket.AF_UNIX, remote_addr=path)
            await _fill(tr, 200)
            assert tr.get_write_buffer_size() > 0
            tr.abort()
            assert await p.lost is None
            await asyncio.sleep(0.02)
            sent = []
            while True:
                try:
                    sent.append(rx.recv(4096))
                except BlockingIOError:
                    break
            assert 0 < len(sent) < 200
            assert p.lost_calls == [None]
            rx.close()

    run(loop, main())


def test_udp_sendto_after_close_dropped_with_warning(loop, caplog):
    async def main():
        ts, ps = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tr, p = await endpoint(loop, remote_addr=ts.get_extra_info("sockname"))
        tr.close()
        await p.lost
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(7):
                tr.sendto(b"late")
        warned = [r for r in caplog.records if r.getMessage() == "socket.send() raised exception."]
        assert len(warned) == 3
        await asyncio.sleep(0.02)
        assert ps.datagrams == []
        assert p.lost_calls == [None]
        ts.close()
        await ps.lost

    run(loop, main())


def test_udp_close_then_abort_connection_lost_once(loop):
    async def main():
        tr, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tr.close()
        tr.abort()
        tr.close()
        assert await p.lost is None
        await asyncio.sleep(0.01)
        tr.abort()
        tr.close()
        await asyncio.sleep(0.01)
        assert p.lost_calls == [None]
        assert "closed" in repr(tr)

    run(loop, main())


def test_udp_close_in_datagram_received_stops_reading(loop):
    class CloseOnFirst(DProto):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            self.transport.close()

    async def main():
        ta, pa = await endpoint(loop, cls=CloseOnFirst, local_addr=("127.0.0.1", 0))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(3):
            s.sendto(b"%d" % i, ta.get_extra_info("sockname"))
        assert await pa.lost is None
        await asyncio.sleep(0.02)
        assert pa.datagrams == [(b"0", ("127.0.0.1", s.getsockname()[1]))]
        assert pa.events == ["made", "datagram", "lost"]
        s.close()

    run(loop, main())


def test_udp_bad_port_is_a_fatal_error(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        tr, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tr.sendto(b"x", ("127.0.0.1", 70000))  # the socket module's OverflowError
        exc = await p.lost
        assert isinstance(exc, OverflowError)
        assert tr.is_closing()
        assert len(contexts) == 1
        assert contexts[0]["message"] == "Fatal write error on datagram transport"
        assert contexts[0]["exception"] is exc
        assert contexts[0]["transport"] is tr
        assert contexts[0]["protocol"] is p

    run(loop, main())


def test_udp_sendto_without_address_when_unconnected(loop):
    # asyncio calls sock.sendto(data, None): a TypeError, fatal.
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        tr, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tr.sendto(b"where to?")
        exc = await p.lost
        assert isinstance(exc, TypeError)
        assert [c["message"] for c in contexts] == ["Fatal write error on datagram transport"]

    run(loop, main())


def test_udp_sendto_host_name_and_empty_host(loop):
    # Addresses the socket module resolves itself ("localhost") or maps
    # ("" is INADDR_ANY, which reaches the local host).
    async def main():
        tb, pb = await endpoint(loop, local_addr=("127.0.0.1", 0))
        port = tb.get_extra_info("sockname")[1]
        ta, pa = await endpoint(loop, family=socket.AF_INET)
        ta.sendto(b"by name", ("localhost", port))
        await until(lambda: pb.datagrams)
        ta.sendto(b"numeric", ("127.0.0.1", port))
        await until(lambda: len(pb.datagrams) == 2)
        assert [d for d, _ in pb.datagrams] == [b"by name", b"numeric"]
        assert pb.datagrams[0][1] == pb.datagrams[1][1]
        ta.close()
        tb.close()
        await pa.lost
        await pb.lost

    run(loop, main())


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_udp_ipv6_addresses(loop):
    async def main():
        ta, pa = await endpoint(loop, cls=EchoD, local_addr=("::1", 0))
        a_addr = ta.get_extra_info("sockname")
        assert len(a_addr) == 4 and a_addr[0] == "::1"
        assert ta.get_extra_info("socket").family == socket.AF_INET6
        # A raw socket's own view of its address is what the transport
        # must report as the sender.
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.setblocking(False)
        s.sendto(b"v6", a_addr)
        await until(lambda: pa.datagrams)
        assert pa.datagrams == [(b"v6", s.getsockname())]
        data, addr = await loop.sock_recvfrom(s, 100)
        assert (data, addr) == (b"v6", a_addr)
        # Tuples of 2, 3 and 4 items as destinations.
        tb, pb = await endpoint(loop, local_addr=("::1", 0))
        for dest in (a_addr[:2], a_addr[:3], a_addr):
            tb.sendto(b"%d" % len(dest), dest)
        await until(lambda: len(pb.datagrams) == 3)
        assert sorted(d for d, _ in pb.datagrams) == [b"2", b"3", b"4"]
        assert all(addr == a_addr for _, addr in pb.datagrams)
        s.close()
        for t, p in ((ta, pa), (tb, pb)):
            t.close()
            await p.lost

    run(loop, main())


def test_udp_unix_sender_addresses(loop):
    # The address datagram_received gets is socket.recvfrom()'s: None for
    # an unbound sender, bytes for the abstract namespace, else the path.
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "server")
            tr, p = await endpoint(loop, family=socket.AF_UNIX, local_addr=path)
            unbound = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            abstract.bind(b"\0flaskasync-udp-test-%d" % os.getpid())
            named = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            named.bind(os.path.join(d, "named"))
            for s in (unbound, abstract, named):
                s.sendto(b"hi", path)
                await until(lambda: len(p.datagrams) == 1)
                (data, addr), = p.datagrams
                p.datagrams.clear()
                assert data == b"hi"
                want = None if s is unbound else s.getsockname()
                assert addr == want and type(addr) is type(want)
                s.close()
            tr.close()
            await p.lost

    run(loop, main())


def test_udp_large_unix_datagram(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "server")
            tr, p = await endpoint(loop, family=socket.AF_UNIX, local_addr=path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            big = os.urandom(200_000)  # more than 64 KiB, less than max_size
            s.sendto(big, path)
            await until(lambda: p.datagrams)
            assert p.datagrams[0][0] == big
            s.close()
            tr.close()
            await p.lost

    run(loop, main())


def test_udp_socketpair_without_peer_name(loop):
    # A socketpair's peer name is '' (false): asyncio then uses sendto()
    # with the given address, and receives from an unnamed peer.
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tr, p = await loop.create_datagram_endpoint(lambda: DProto(loop), sock=a)
        assert tr.get_extra_info("peername") == ""
        b.send(b"from b")
        await until(lambda: p.datagrams)
        assert p.datagrams == [(b"from b", None)]
        tr.sendto(b"no address")  # sock.sendto(data, None): TypeError, fatal
        assert isinstance(await p.lost, TypeError)
        assert len(contexts) == 1
        b.close()

    run(loop, main())


def test_udp_error_received_exception_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    boom = RuntimeError("boom in error_received")

    class Bad(DProto):
        def error_received(self, exc):
            super().error_received(exc)
            raise boom

    async def main():
        tr, p = await endpoint(loop, cls=Bad, remote_addr=("127.0.0.1", closed_udp_port()))
        tr.sendto(b"ping")  # the ICMP error comes back through the read side
        await until(lambda: contexts)
        assert contexts[0]["exception"] is boom
        assert isinstance(p.errors[0], ConnectionRefusedError)
        assert not tr.is_closing()
        tr.close()
        assert await p.lost is None

    run(loop, main())


def test_udp_error_received_exception_from_sendto_propagates(loop):
    boom = RuntimeError("boom in error_received")

    class Bad(DProto):
        def error_received(self, exc):
            super().error_received(exc)
            raise boom

    async def main():
        ta, pa = await endpoint(loop, cls=Bad, local_addr=("127.0.0.1", 0))
        with pytest.raises(RuntimeError) as info:
            ta.sendto(b"x" * 70000, ("127.0.0.1", 9))  # EMSGSIZE, at once
        assert info.value is boom
        assert pa.errors[0].errno == errno.EMSGSIZE
        assert not ta.is_closing()
        ta.close()
        await pa.lost

    run(loop, main())


def test_udp_transport_api(loop):
    async def main():
        tr, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        assert isinstance(tr, asyncio.BaseTransport)
        assert isinstance(tr, asyncio.Transport)  # asyncio's is one too
        assert tr.get_protocol() is p
        assert tr.get_extra_info("nope") is None
        assert tr.get_extra_info("nope", 5) == 5
        assert f"fd={tr.get_extra_info('socket').fileno()}" in repr(tr)
        with pytest.raises(ValueError) as info:
            tr.set_write_buffer_limits(high=1, low=2)
        assert str(info.value) == "high (1) must be >= low (2) must be >= 0"
        tr.set_write_buffer_limits(low=100)
        assert tr.get_write_buffer_limits() == (100, 400)
        other = DProto(loop)
        tr.set_protocol(other)
        assert tr.get_protocol() is other
        tr.set_protocol(p)
        with pytest.raises(TypeError):
            tr.sendto()
        with pytest.raises(TypeError):
            tr.sendto(b"x", ("127.0.0.1", 9), 1)
        with pytest.raises(TypeError):
            tr.sendto(addr=("127.0.0.1", 9))  # data missing
        with pytest.raises(TypeError):
            tr.sendto(b"x", data=b"y")
        with pytest.raises(TypeError):
            tr.sendto(b"x", address=("127.0.0.1", 9))
        tr.sendto(data=b"kw", addr=tr.get_extra_info("sockname"))
        await until(lambda: p.datagrams)
        assert p.datagrams[0][0] == b"kw"
        tr.close()
        await p.lost

    run(loop, main())


def test_udp_sock_already_connected(loop):
    async def main():
        ts, ps = await endpoint(loop, local_addr=("127.0.0.1", 0))
        server = ts.get_extra_info("sockname")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(server)
        tr, p = await loop.create_datagram_endpoint(lambda: DProto(loop), sock=sock)
        assert tr.get_extra_info("peername") == server
        # Connected: send() is used, whatever the address (no remote_addr).
        tr.sendto(b"one")
        tr.sendto(b"two", ("127.0.0.1", 9))
        await until(lambda: len(ps.datagrams) == 2)
        assert [d for d, _ in ps.datagrams] == [b"one", b"two"]
        tr.close()
        ts.close()
        await p.lost
        await ps.lost

    run(loop, main())


def test_udp_remote_addr_by_name(loop):
    async def main():
        ts, ps = await endpoint(loop, local_addr=("127.0.0.1", 0))
        port = ts.get_extra_info("sockname")[1]
        tr, p = await endpoint(loop, remote_addr=("localhost", port), family=socket.AF_INET)
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        tr.sendto(b"hello")
        await until(lambda: ps.datagrams)
        with pytest.raises(ValueError):
            tr.sendto(b"x", ("localhost", port))  # not the resolved address
        tr.close()
        ts.close()
        await p.lost
        await ps.lost

    run(loop, main())


def test_udp_cancelled_while_waiting(loop):
    protocols = []

    def factory():
        protocols.append(DProto(loop))
        return protocols[-1]

    async def main():
        before = fd_count()
        task = loop.create_task(
            loop.create_datagram_endpoint(factory, local_addr=("127.0.0.1", 0)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.02)
        assert len(protocols) == 1
        events = protocols[0].events
        assert events in ([], ["made", "lost"])
        assert fd_count() == before

    run(loop, main())


def test_udp_protocol_factory_raises(loop):
    boom = ValueError("factory")

    def factory():
        raise boom

    async def main():
        with pytest.raises(ValueError) as info:
            await loop.create_datagram_endpoint(factory, local_addr=("127.0.0.1", 0))
        assert info.value is boom
        boom.__traceback__ = None  # its frames hold asyncio's socket

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # asyncio leaves the socket
        run(loop, main())
        gc.collect()


def test_udp_unclosed_transport_warns_when_loop_closes(loop_factory):
    lp = loop_factory()

    async def main():
        tr, p = await lp.create_datagram_endpoint(lambda: DProto(lp),
                                                  local_addr=("127.0.0.1", 0))
        return tr.get_extra_info("socket").fileno()

    try:
        fd = lp.run_until_complete(main())
    finally:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lp.close()
            gc.collect()
    assert any(issubclass(w.category, ResourceWarning) and "unclosed transport" in str(w.message)
               for w in caught), caught
    with pytest.raises(OSError):
        os.fstat(fd)  # the socket was closed


# ------------------------------------------------- flaskasync only


def test_udp_transport_type(fa_loop):
    from flaskasync import _core

    async def main():
        tr, p = await endpoint(fa_loop, local_addr=("127.0.0.1", 0))
        assert isinstance(tr, _core.DatagramTransport)
        assert isinstance(tr, asyncio.DatagramTransport)
        tr.close()
        await p.lost

    run(fa_loop, main())


def test_udp_protocol_factory_raises_closes_socket(fa_loop):
    def factory():
        raise ValueError("factory")

    async def main():
        before = fd_count()
        for _ in range(5):
            with pytest.raises(ValueError):
                await fa_loop.create_datagram_endpoint(factory, local_addr=("127.0.0.1", 0))
        assert fd_count() == before

    run(fa_loop, main())


def test_udp_endpoints_do_not_leak(fa_loop):
    from flaskasync import _core

    fa_loop.set_debug(False)

    async def one():
        ta, pa = await endpoint(fa_loop, local_addr=("127.0.0.1", 0))
        tb, pb = await endpoint(fa_loop, remote_addr=ta.get_extra_info("sockname"))
        tb.sendto(b"x")
        ta.sendto(b"y", tb.get_extra_info("sockname"))
        await until(lambda: pa.datagrams and pb.datagrams, interval=0)
        ta.close()
        tb.abort()
        await pa.lost
        await pb.lost

    async def steps(n):
        for _ in range(n):
            await one()

    def counts():
        gc.collect()
        gc.collect()
        return len(gc.get_objects()), _core._live_handles(), fd_count()

    run(fa_loop, steps(100), timeout=60)
    objs0, handles0, fds0 = counts()
    run(fa_loop, steps(1000), timeout=120)
    objs1, handles1, fds1 = counts()
    assert fds1 == fds0
    assert handles1 <= handles0, f"{handles1 - handles0} Handles leaked"
    assert objs1 - objs0 < 100, f"{objs1 - objs0} objects more after 1000 endpoints"
    alive = [o for o in gc.get_objects() if isinstance(o, _core.DatagramTransport)]
    assert alive == []


class PauseAtOnce(DProto):
    """Pauses reading as soon as it is connected."""

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()


def test_udp_pause_and_resume_reading(loop):
    # Python 3.11.3+: datagram transports can pause reading.
    async def main():
        tr, p = await endpoint(loop, cls=PauseAtOnce, local_addr=("127.0.0.1", 0))
        assert not tr.is_reading()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"1", tr.get_extra_info("sockname"))
        await asyncio.sleep(0.02)
        assert p.datagrams == []
        tr.resume_reading()
        assert tr.is_reading()
        await until(lambda: p.datagrams)
        tr.pause_reading()
        tr.pause_reading()
        s.sendto(b"2", tr.get_extra_info("sockname"))
        await asyncio.sleep(0.02)
        assert [d for d, _ in p.datagrams] == [b"1"]
        tr.resume_reading()
        tr.resume_reading()
        await until(lambda: len(p.datagrams) == 2)
        assert [d for d, _ in p.datagrams] == [b"1", b"2"]
        tr.close()
        assert not tr.is_reading()
        tr.resume_reading()
        assert not tr.is_reading()
        await p.lost
        s.close()

    run(loop, main())


def test_udp_paused_with_a_datagram_waiting_does_not_spin(loop):
    """A paused datagram transport stops watching its fd: a datagram waiting
    in the socket does not wake the loop over and over (level-triggered
    readiness would), so the loop sleeps."""

    async def main():
        tr, p = await endpoint(loop, cls=PauseAtOnce, local_addr=("127.0.0.1", 0))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"waiting", tr.get_extra_info("sockname"))
        await asyncio.sleep(0.02)
        cpu0 = time.thread_time()
        await asyncio.sleep(0.3)
        spent = time.thread_time() - cpu0
        assert p.datagrams == []
        assert spent < 0.1, f"the loop spent {spent:.3f} s of CPU in a 0.3 s sleep"
        tr.resume_reading()
        await until(lambda: p.datagrams)
        tr.close()
        await p.lost
        s.close()

    run(loop, main())


def _netlink_socket():
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    except (AttributeError, OSError):
        return None
    s.bind((0, 0))
    return s


def test_udp_other_family_netlink(loop):
    # A family without a fast path: sendto and recvfrom go through the
    # socket object, with its address format ((pid, groups) here).
    sock = _netlink_socket()
    if sock is None:
        pytest.skip("no AF_NETLINK")
    import struct

    async def main():
        tr, p = await loop.create_datagram_endpoint(lambda: DProto(loop), sock=sock)
        assert tr.get_extra_info("sockname")[0] > 0
        # RTM_GETLINK dump request: the kernel answers from (0, 0).
        msg = struct.pack("=IHHII", 32, 18, 0x301, 1, 0) + bytes(16)
        tr.sendto(msg, (0, 0))
        await until(lambda: p.datagrams)
        data, addr = p.datagrams[0]
        assert addr == (0, 0)
        assert struct.unpack_from("=I", data)[0] <= len(data)
        tr.close()
        await p.lost

    run(loop, main())


_AUDIT_SCRIPT = r"""
import asyncio, sys, flaskasync
events = []
sys.addaudithook(lambda ev, args: ev == "socket.sendto" and events.append(args[1]))
loop = {factory}()

class P(asyncio.DatagramProtocol):
    def __init__(self): self.got = loop.create_future()
    def datagram_received(self, data, addr): self.got.set_result(data)

async def main():
    tb, pb = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
    ta, pa = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
    dest = tb.get_extra_info("sockname")
    ta.sendto(b"audited", dest)
    assert await pb.got == b"audited"
    ta.close(); tb.close()
    await asyncio.sleep(0)
    return dest

dest = loop.run_until_complete(main())
loop.close()
assert events == [dest], events
print("ok")
"""


def test_udp_sendto_raises_the_audit_event(loop_kind):
    import subprocess
    import sys

    factory = "flaskasync.new_event_loop" if loop_kind == "flaskasync" else "asyncio.new_event_loop"
    out = subprocess.run([sys.executable, "-c", _AUDIT_SCRIPT.format(factory=factory)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_udp_fd_cannot_be_watched_by_add_reader(loop):
    async def main():
        tr, p = await endpoint(loop, local_addr=("127.0.0.1", 0))
        fd = tr.get_extra_info("socket").fileno()
        try:
            for method in (loop.add_reader, loop.add_writer):
                with pytest.raises(RuntimeError) as info:
                    method(fd, lambda: None)
                assert str(info.value).startswith(f"File descriptor {fd} is used by transport ")
        finally:
            tr.close()
            await p.lost

    run(loop, main())


# ------------------------------------------------ regressions (review)


def test_udp_close_after_loop_closed_raises(loop):
    tr, proto = loop.run_until_complete(endpoint(loop, local_addr=("127.0.0.1", 0)))
    sock = tr.get_extra_info("socket")
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        tr.close()
    del tr, proto
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
        gc.collect()
    assert sock.fileno() == -1  # collected, socket closed


def test_udp_remove_reader_on_transport_fd_raises(loop):
    async def main():
        tr, _ = await endpoint(loop, local_addr=("127.0.0.1", 0))
        fd = tr.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.remove_reader(fd)
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.remove_writer(fd)
        tr.close()
        await asyncio.sleep(0)

    run(loop, main())


def test_udp_huge_buffer_limits_accepted(loop):
    async def main():
        tr, _ = await endpoint(loop, local_addr=("127.0.0.1", 0))
        tr.set_write_buffer_limits(low=2**62)
        low, high = tr.get_write_buffer_limits()
        assert low == 2**62 and high >= 2**62
        tr.set_write_buffer_limits(high=2**63)
        assert tr.get_write_buffer_limits()[1] >= 2**63 - 1
        tr.close()
        await asyncio.sleep(0)

    run(loop, main())


def test_udp_max_size_is_read_only(fa_loop):
    # flaskasync only: the receive buffer is C's; setting max_size raises
    # rather than being silently ignored (asyncio reads it per datagram).
    async def main():
        tr, _ = await endpoint(fa_loop, local_addr=("127.0.0.1", 0))
        assert tr.max_size == 256 * 1024
        with pytest.raises(AttributeError):
            tr.max_size = 4
        tr.close()
        await asyncio.sleep(0)

    run(fa_loop, main())


def _repr_state(tr):
    """repr(transport) after the class name, with the fd number as N."""
    import re

    text = repr(tr)
    assert text.startswith("<") and text.endswith(">")
    return re.sub(r"fd=-?\d+", "fd=N", text[1:-1].split(" ", 1)[1])


def test_udp_transport_repr_says_open_closing_closed_as_asyncio(loop):
    async def main():
        lost = asyncio.Event()

        class Lost(asyncio.DatagramProtocol):
            def connection_lost(self, exc):
                lost.set()

        tr, _ = await loop.create_datagram_endpoint(Lost, local_addr=("127.0.0.1", 0))
        seen = [_repr_state(tr)]
        tr.close()
        seen.append(_repr_state(tr))
        await lost.wait()
        seen.append(_repr_state(tr))
        return seen

    assert run(loop, main()) == [
        "fd=N read=polling write=<idle, bufsize=0>",
        "closing fd=N read=idle write=<idle, bufsize=0>",
        "closed fd=N",
    ]
