"""TLS transports on flaskasync's loop and asyncio's: create_connection and
create_server with ssl=, start_tls on both sides, certificate and hostname
verification, handshake timeouts, extra info, close and connection_lost.
Certificates are made by trustme for each test module."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time

import pytest

from protocols import Echo, Factory, Proto

trustme = pytest.importorskip("trustme")


# Helpers are defined here, not imported from conftest.


def run(loop, coro, timeout=10):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(predicate, interval=0.002):
    while not predicate():
        await asyncio.sleep(interval)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def tls_server(loop, server_ctx, cls=Echo, **kw):
    sf = Factory(cls, loop)
    srv = await loop.create_server(sf, "127.0.0.1", 0, ssl=server_ctx, **kw)
    return srv, srv.sockets[0].getsockname()[1], sf


async def close_server(srv):
    srv.close()
    await srv.wait_closed()


# -------------------------------------------------------------- handshake


def test_tls_round_trip(loop, server_ctx, client_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        # The handshake is complete when create_connection returns.
        assert p.events == ["made"]
        assert p.transport is tr
        assert tr.get_protocol() is p
        tr.write(b"hello ")
        tr.writelines([b"tls", bytearray(b" "), memoryview(b"world")])
        await until(lambda: len(p.data) == 15)
        assert bytes(p.data) == b"hello tls world"
        await until(lambda: sf.made)
        sp = sf.made[0]
        assert bytes(sp.data) == b"hello tls world"
        assert sp.events == ["made", "data"]
        srv.close()
        tr.close()
        assert tr.is_closing()
        assert await p.lost is None
        assert await sp.lost is None
        await srv.wait_closed()
        await asyncio.sleep(0.01)
        assert p.lost_calls == [None]
        assert p.events[0] == "made" and p.events[-1] == "lost"
        # The server saw the close_notify as EOF, then closed.
        assert sp.events == ["made", "data", "eof", "lost"]
        assert sp.lost_calls == [None]

    run(loop, main())


def test_tls_server_hostname_defaults_to_host(loop, server_ctx, client_ctx):
    # The certificate has an IP address SAN: host="127.0.0.1" verifies.
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        tr, p = await loop.create_connection(lambda: Proto(loop), "127.0.0.1", port, ssl=client_ctx)
        assert tr.get_extra_info("ssl_object").server_hostname == "127.0.0.1"
        tr.write(b"ip")
        await until(lambda: len(p.data) == 2)
        tr.close()
        await p.lost
        await close_server(srv)

    run(loop, main())


def test_tls_large_transfer(loop, server_ctx, client_ctx):
    size = 4 * 1024 * 1024 + 3
    data = os.urandom(size)

    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        tr.write(data)
        await until(lambda: len(p.data) >= size)
        assert bytes(p.data) == data
        tr.close()
        await p.lost
        await close_server(srv)

    run(loop, main(), timeout=60)


def test_tls_flow_control(loop, server_ctx, client_ctx):
    class Flow(Proto):
        def __init__(self, loop):
            super().__init__(loop)
            self.flow = []

        def pause_writing(self):
            self.flow.append("pause")

        def resume_writing(self):
            self.flow.append("resume")

    async def main():
        srv, port, sf = await tls_server(loop, server_ctx, cls=Proto)
        tr, p = await loop.create_connection(
            lambda: Flow(loop), "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        await until(lambda: sf.made)
        sp = sf.made[0]
        await sp.made
        sp.transport.pause_reading()
        # Write while the peer does not read until the protocol is paused
        # (asyncio's SSL layer pauses once its own outgoing buffer fills,
        # which happens after the raw transport's buffer has filled).
        chunk = b"f" * (1024 * 1024)
        size = 0
        while "pause" not in p.flow:
            assert size < 256 * len(chunk), "pause_writing() never called"
            tr.write(chunk)
            size += len(chunk)
            await asyncio.sleep(0)
        assert tr.get_write_buffer_size() > 0
        sp.transport.resume_reading()
        await until(lambda: len(sp.data) == size)
        await until(lambda: p.flow[-1] == "resume")
        # pause and resume alternate, starting with pause.
        assert p.flow == ["pause", "resume"] * (len(p.flow) // 2)
        assert tr.get_write_buffer_size() == 0
        tr.close()
        await p.lost
        await close_server(srv)

    run(loop, main(), timeout=30)


def test_tls_can_write_eof_false(loop, server_ctx, client_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        assert tr.can_write_eof() is False
        with pytest.raises(NotImplementedError):
            tr.write_eof()
        tr.close()
        await p.lost
        await close_server(srv)

    run(loop, main())


def test_tls_write_str_type_error(loop, server_ctx, client_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        with pytest.raises(TypeError) as info:
            tr.write("text")
        assert str(info.value) == "data: expecting a bytes-like instance, got str"
        tr.close()
        await p.lost
        await close_server(srv)

    run(loop, main())


# ---------------------------------------------------------- verification


def test_tls_wrong_hostname(loop, server_ctx, client_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)

        async def attempt():
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await loop.create_connection(
                    lambda: Proto(loop), "127.0.0.1", port,
                    ssl=client_ctx, server_hostname="wrong.example")
            assert "wrong.example" in str(info.value)
            await asyncio.sleep(0.05)

        await attempt()
        before = fd_count()
        for _ in range(3):
            await attempt()
        # No application connection on either side.
        assert len(sf.made) == 4
        assert all(p.events == [] for p in sf.made)
        assert fd_count() == before
        await close_server(srv)

    run(loop, main())


def test_tls_untrusted_certificate(loop, server_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(
                lambda: Proto(loop), "127.0.0.1", port,
                ssl=ssl.create_default_context(), server_hostname="localhost")
        # ssl=True means a default context: the trustme CA is not trusted.
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(
                lambda: Proto(loop), "127.0.0.1", port, ssl=True, server_hostname="localhost")
        await close_server(srv)

    run(loop, main())


def test_tls_no_verification(loop, server_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        # server_hostname='' skips the hostname (asyncio's documented escape).
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, ssl=ctx, server_hostname="")
        tr.write(b"unverified")
        await until(lambda: len(p.data) == 10)
        tr.close()
        await p.lost
        await close_server(srv)

    run(loop, main())


def test_tls_client_certificate(loop, ca, client_ctx):
    async def main():
        sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(sctx)
        sctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(sctx)
        cctx = ssl.create_default_context()
        ca.configure_trust(cctx)
        ca.issue_cert("client.example").configure_cert(cctx)

        srv, port, sf = await tls_server(loop, sctx)
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, ssl=cctx, server_hostname="localhost")
        tr.write(b"x")
        await until(lambda: len(p.data) == 1)
        sp = sf.made[0]
        peercert = sp.transport.get_extra_info("peercert")
        assert ("DNS", "client.example") in peercert["subjectAltName"]
        tr.close()
        await p.lost
        await close_server(srv)

    run(loop, main())


# ------------------------------------------------------------- timeouts


def test_tls_handshake_timeout_client(loop, client_ctx):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()  # accepts (in the kernel), never answers

    async def attempt():
        t0 = time.monotonic()
        with pytest.raises(ConnectionAbortedError) as info:
            await loop.create_connection(
                lambda: Proto(loop), *lsock.getsockname(),
                ssl=client_ctx, server_hostname="localhost", ssl_handshake_timeout=0.2)
        elapsed = time.monotonic() - t0
        assert str(info.value) == (
            "SSL handshake is taking longer than 0.2 seconds: aborting the connection")
        assert 0.18 <= elapsed < 2

    async def main():
        await attempt()
        before = fd_count()
        await attempt()
        assert fd_count() == before

    try:
        run(loop, main())
    finally:
        lsock.close()


def test_tls_handshake_timeout_server(loop, server_ctx):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        srv, port, sf = await tls_server(loop, server_ctx, ssl_handshake_timeout=0.2)
        # A plain client that never starts the handshake.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        assert await reader.read() == b""  # the server gave up and closed
        assert 0.18 <= time.monotonic() - t0 < 2
        assert [p.events for p in sf.made] == [[]]
        writer.close()
        await writer.wait_closed()
        await close_server(srv)

    run(loop, main())
    # asyncio reports the failed handshake only in debug mode.
    expected = ["Error on transport creation for incoming connection"] if loop.get_debug() else []
    assert [ctx["message"] for ctx in contexts] == expected


def test_tls_handshake_timeout_validation(loop, client_ctx, server_ctx):
    # Validated when the SSL protocol is built, after connecting: use a
    # listening port so the connection itself succeeds.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    port = lsock.getsockname()[1]

    async def main_port():
        for kw, msg in (
            ({"ssl_handshake_timeout": 0},
             "ssl_handshake_timeout should be a positive number, got 0"),
            ({"ssl_shutdown_timeout": -1},
             "ssl_shutdown_timeout should be a positive number, got -1"),
        ):
            with pytest.raises(ValueError) as info:
                await loop.create_connection(
                    lambda: Proto(loop), "127.0.0.1", port,
                    ssl=client_ctx, server_hostname="localhost", **kw)
            assert str(info.value) == msg

    try:
        run(loop, main_port())
    finally:
        lsock.close()


# ------------------------------------------------------------ extra info


def test_tls_extra_info(loop, server_ctx, client_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        assert tr.get_extra_info("sslcontext") is client_ctx
        sslobj = tr.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert sslobj.server_hostname == "localhost"
        assert sslobj.server_side is False
        assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
        peercert = tr.get_extra_info("peercert")
        assert ("DNS", "localhost") in peercert["subjectAltName"]
        assert ("IP Address", "127.0.0.1") in peercert["subjectAltName"]
        cipher = tr.get_extra_info("cipher")
        assert isinstance(cipher, tuple) and len(cipher) == 3
        assert cipher == sslobj.cipher()
        assert tr.get_extra_info("compression") is None
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        sockname = tr.get_extra_info("sockname")
        assert sockname[0] == "127.0.0.1"
        sock = tr.get_extra_info("socket")
        assert sock.getpeername() == ("127.0.0.1", port)
        assert tr.get_extra_info("no such key", 42) == 42

        tr.write(b"x")
        await until(lambda: len(p.data) == 1)
        st = sf.made[0].transport
        assert st.get_extra_info("sslcontext") is server_ctx
        assert st.get_extra_info("ssl_object").server_side is True
        assert st.get_extra_info("peercert") is None  # no client certificate
        assert st.get_extra_info("peername") == sockname
        tr.close()
        await p.lost
        await close_server(srv)

    run(loop, main())


# ---------------------------------------------------------- close/abort


def test_tls_server_closes(loop, server_ctx, client_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        tr.write(b"ping")
        await until(lambda: len(p.data) == 4)
        sp = sf.made[0]
        sp.transport.write(b"bye")
        sp.transport.close()
        assert await p.lost is None
        assert bytes(p.data) == b"pingbye"
        assert p.events == ["made", "data", "eof", "lost"]
        assert p.lost_calls == [None]
        assert await sp.lost is None
        assert sp.lost_calls == [None]
        await close_server(srv)

    run(loop, main())


def test_tls_abort(loop, server_ctx, client_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)
        tr, p = await loop.create_connection(
            lambda: Proto(loop), "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        tr.write(b"x")
        await until(lambda: len(p.data) == 1)
        tr.abort()
        assert tr.is_closing()
        assert await p.lost is None
        assert p.events == ["made", "data", "lost"]
        sp = sf.made[0]
        exc = await sp.lost
        assert exc is None or isinstance(exc, OSError)
        assert sp.events[-1] == "lost" and sp.events.count("lost") == 1
        await close_server(srv)

    run(loop, main())


def test_tls_no_fd_leak(loop, server_ctx, client_ctx):
    async def main():
        srv, port, sf = await tls_server(loop, server_ctx)

        async def one():
            tr, p = await loop.create_connection(
                lambda: Proto(loop), "127.0.0.1", port,
                ssl=client_ctx, server_hostname="localhost")
            tr.write(b"x")
            await until(lambda: len(p.data) == 1)
            tr.close()
            await p.lost

        await one()
        await asyncio.gather(*(p.lost for p in sf.made))
        await asyncio.sleep(0.01)
        before = fd_count()
        for _ in range(30):
            await one()
        await asyncio.gather(*(p.lost for p in sf.made))
        await asyncio.sleep(0.05)
        assert fd_count() == before
        await close_server(srv)

    run(loop, main(), timeout=30)


# ------------------------------------------------------------- start_tls


class StartTLSServer(Proto):
    """Plain protocol: on b"STARTTLS\\n" answers b"OK\\n" and upgrades."""

    def __init__(self, loop, ctx):
        super().__init__(loop)
        self.ctx = ctx
        self.tls_transport = loop.create_future()

    def data_received(self, data):
        super().data_received(data)
        if bytes(self.data) == b"STARTTLS\n":
            self.transport.pause_reading()  # nothing is read before the upgrade
            self.transport.write(b"OK\n")
            self.loop.create_task(self.upgrade())

    async def upgrade(self):
        try:
            tr = await self.loop.start_tls(self.transport, self, self.ctx, server_side=True)
        except Exception as exc:
            self.tls_transport.set_exception(exc)
            return
        self.data.clear()
        self.tls_transport.set_result(tr)


def test_start_tls_both_sides(loop, server_ctx, client_ctx):
    async def main():
        sf = Factory(lambda lp: StartTLSServer(lp, server_ctx), loop)
        srv = await loop.create_server(sf, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        plain, p = await loop.create_connection(lambda: Proto(loop), "127.0.0.1", port)
        assert plain.get_extra_info("sslcontext") is None
        plain.write(b"STARTTLS\n")
        await until(lambda: bytes(p.data) == b"OK\n")
        p.data.clear()

        tls = await loop.start_tls(plain, p, client_ctx, server_hostname="localhost")
        assert tls is not plain
        assert tls.get_protocol() is p
        assert plain.get_protocol() is not p  # the SSL protocol sits in between
        assert p.events == ["made", "data"]  # connection_made is not called again
        assert tls.get_extra_info("sslcontext") is client_ctx
        assert isinstance(tls.get_extra_info("ssl_object"), ssl.SSLObject)
        assert ("DNS", "localhost") in tls.get_extra_info("peercert")["subjectAltName"]

        sp = sf.made[0]
        stls = await sp.tls_transport
        assert stls.get_extra_info("sslcontext") is server_ctx
        tls.write(b"secret")
        await until(lambda: bytes(sp.data) == b"secret")
        stls.write(b"reply")
        await until(lambda: bytes(p.data) == b"reply")

        tls.close()
        assert await p.lost is None
        assert p.lost_calls == [None]
        assert await sp.lost is None
        assert sp.events[-2:] == ["eof", "lost"]
        assert plain.is_closing()
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_start_tls_wrong_hostname(loop, server_ctx, client_ctx):
    async def main():
        sf = Factory(lambda lp: StartTLSServer(lp, server_ctx), loop)
        srv = await loop.create_server(sf, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        plain, p = await loop.create_connection(lambda: Proto(loop), "127.0.0.1", port)
        plain.write(b"STARTTLS\n")
        await until(lambda: bytes(p.data) == b"OK\n")
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.start_tls(plain, p, client_ctx, server_hostname="wrong.example")
        # start_tls closes the transport on failure.
        assert plain.is_closing()
        # The server's handshake fails too (the client aborts it).
        with pytest.raises(OSError):
            await sf.made[0].tls_transport
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_start_tls_argument_errors(loop, client_ctx):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        try:
            plain, p = await loop.create_connection(lambda: Proto(loop), *lsock.getsockname())
            with pytest.raises(TypeError) as info:
                await loop.start_tls(plain, p, "not a context")
            assert str(info.value).startswith(
                "sslcontext is expected to be an instance of ssl.SSLContext, got ")
            plain.close()
            await p.lost
        finally:
            lsock.close()

    run(loop, main())


def test_start_tls_on_streams(loop, server_ctx, client_ctx):
    # StreamWriter.start_tls (3.11) calls loop.start_tls on both sides.
    async def handler(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        line = await reader.readline()
        writer.write(b"tls:" + line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*srv.sockets[0].getsockname())
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        await writer.start_tls(client_ctx, server_hostname="localhost")
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"hello\n")
        assert await reader.readline() == b"tls:hello\n"
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(loop, main())


# --------------------------------------------------------------- streams


def test_tls_streams(loop, server_ctx, client_ctx):
    async def handler(reader, writer):
        data = await reader.readexactly(5)
        writer.write(data.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        srv = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"HELLO"
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(loop, main())
