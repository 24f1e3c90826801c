"""loop.getaddrinfo() and loop.getnameinfo(), on flaskasync's loop (libuv's
threadpool) and on asyncio's (its executor): the values and the exceptions
must be the socket module's own.

No test leaves the machine: names are "localhost" (from /etc/hosts) and
numeric addresses, and the failures are ones getaddrinfo() detects locally
(AI_NUMERICHOST, unknown services, bad arguments)."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading

import pytest

import flaskasync
from flaskasync import _core

HAS_IPV6 = socket.has_ipv6
try:
    socket.getaddrinfo("::1", 0, flags=socket.AI_NUMERICHOST)
except OSError:
    HAS_IPV6 = False


def run(loop, coro, timeout=10):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def outcome(fn):
    """(True, value) or (False, (exception type, args)) of fn()."""
    try:
        return True, fn()
    except Exception as exc:  # noqa: BLE001 - the outcome is what we compare
        return False, (type(exc), exc.args)


GAI_CASES = [
    (("localhost", 80), {}),
    (("localhost", 80), {"type": socket.SOCK_STREAM}),
    (("localhost", 53), {"type": socket.SOCK_DGRAM}),
    (("localhost", "80"), {"family": socket.AF_INET}),
    (("localhost", b"80"), {}),
    (("localhost", None), {"type": socket.SOCK_STREAM}),
    ((b"localhost", 0), {}),
    (("127.0.0.1", 8080), {"proto": socket.IPPROTO_TCP}),
    (("127.0.0.1", "http"), {"type": socket.SOCK_STREAM}),
    ((None, 8080), {"flags": socket.AI_PASSIVE, "type": socket.SOCK_STREAM}),
    ((None, 8080), {"type": socket.SOCK_STREAM}),
    (("127.0.0.1", 2**40), {"type": socket.SOCK_STREAM}),
    (("LOCALHOST", 1), {"flags": socket.AI_CANONNAME, "type": socket.SOCK_STREAM}),
]
if HAS_IPV6:
    GAI_CASES += [
        (("::1", 443), {"type": socket.SOCK_STREAM}),
        (("::1", 443), {"family": socket.AF_INET6, "flags": socket.AI_NUMERICHOST}),
    ]

GAI_ERRORS = [
    ((None, None), {}),                                  # gaierror EAI_NONAME
    (("localhost", 80), {"flags": socket.AI_NUMERICHOST}),  # EAI_NONAME, no lookup
    (("127.0.0.1", "no-such-service"), {}),              # EAI_SERVICE
    (("127.0.0.1", -1), {"type": socket.SOCK_STREAM}),   # EAI_SERVICE
    (("127.0.0.1", 80), {"family": 12345}),              # EAI_FAMILY
    (("127.0.0.1", 80), {"type": 12345}),                # EAI_SOCKTYPE
    (("127.0.0.1", 80), {"flags": -1}),                  # EAI_BADFLAGS
    ((b"\xff", 80), {}),                                 # raw bytes, not a name
    ((b"a" * 300, 80), {}),                              # too long for a name
    ((123, 80), {}),                                     # TypeError
    (("localhost", 80.5), {}),                           # OSError "Int or String expected"
    (("a" * 300, 80), {}),                               # UnicodeError from the idna codec
    (("a..b", 80), {}),                                  # UnicodeError: empty label
    (("localhost", 80), {"family": "x"}),                # TypeError from the int converter
    (("localhost", 2**70), {}),  # OverflowError on 3.11, gaierror EAI_SERVICE from 3.12
]

# Ports beyond a C long: 3.11's socket module raises OverflowError; from 3.12
# (gh-74895) it hands the digits to getaddrinfo(), which fails or, within an
# unsigned long, wraps (2**63 is port 0 with glibc).  Whatever this
# interpreter does, both loops must do.
BIG_PORTS = [2**63, 2**64 + 80, 2**70, -(2**70), 10**40]


@pytest.mark.parametrize("args,kwargs", GAI_CASES, ids=[repr(c) for c in GAI_CASES])
def test_getaddrinfo_matches_socket_module(loop, args, kwargs):
    expected = socket.getaddrinfo(*args, **kwargs)
    got = run(loop, loop.getaddrinfo(*args, **kwargs))
    assert got == expected
    # The same element types: AddressFamily / SocketKind enums, int, str.
    assert [tuple(map(type, g)) for g in got] == [tuple(map(type, e)) for e in expected]
    assert [tuple(map(type, g[4])) for g in got] == [tuple(map(type, e[4])) for e in expected]


@pytest.mark.parametrize("args,kwargs", GAI_ERRORS, ids=[repr(c)[:60] for c in GAI_ERRORS])
def test_getaddrinfo_errors_match_socket_module(loop, args, kwargs):
    expected = outcome(lambda: socket.getaddrinfo(*args, **kwargs))
    got = outcome(lambda: run(loop, loop.getaddrinfo(*args, **kwargs)))
    assert not expected[0]
    assert got == expected


@pytest.mark.parametrize("port", BIG_PORTS, ids=[str(p)[:8] for p in BIG_PORTS])
def test_getaddrinfo_big_ports_match_socket_module(loop, port):
    kw = {"type": socket.SOCK_STREAM}
    expected = outcome(lambda: socket.getaddrinfo("127.0.0.1", port, **kw))
    got = outcome(lambda: run(loop, loop.getaddrinfo("127.0.0.1", port, **kw)))
    assert got == expected


def test_getaddrinfo_gaierror_shape(loop):
    with pytest.raises(socket.gaierror) as info:
        run(loop, loop.getaddrinfo("localhost", 80, flags=socket.AI_NUMERICHOST))
    assert info.value.errno == socket.EAI_NONAME
    assert isinstance(info.value.strerror, str) and info.value.strerror
    assert str(info.value) == f"[Errno {socket.EAI_NONAME}] {info.value.strerror}"


def test_getaddrinfo_keyword_only_and_arity(loop):
    with pytest.raises(TypeError):
        loop.getaddrinfo("localhost")
    with pytest.raises(TypeError):
        loop.getaddrinfo("localhost", 80, 0)
    coro = loop.getaddrinfo(host="localhost", port=80, family=socket.AF_INET)
    assert run(loop, coro) == socket.getaddrinfo("localhost", 80, socket.AF_INET)
    for bad in [
        lambda: loop.getaddrinfo(port=80),                          # host missing
        lambda: loop.getaddrinfo("localhost", 80, 0, 0, 0, 0),      # family & co. keyword-only
        lambda: loop.getaddrinfo("localhost", 80, host="x"),        # host twice
        lambda: loop.getaddrinfo("localhost", 80, socktype=0),      # not a parameter
    ]:
        with pytest.raises(TypeError):
            bad()
    coro = loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM, proto=0, flags=0)
    assert run(loop, coro) == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)


def test_getnameinfo_arguments(loop):
    sa = ("127.0.0.1", 80)
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    assert run(loop, loop.getnameinfo(sockaddr=sa, flags=flags)) == socket.getnameinfo(sa, flags)
    assert run(loop, loop.getnameinfo(sa, flags=flags)) == socket.getnameinfo(sa, flags)
    for bad in [
        lambda: loop.getnameinfo(),                 # sockaddr missing
        lambda: loop.getnameinfo(flags=0),
        lambda: loop.getnameinfo(sa, 0, 0),         # too many
        lambda: loop.getnameinfo(sa, sockaddr=sa),  # twice
        lambda: loop.getnameinfo(sa, flag=0),       # not a parameter
    ]:
        with pytest.raises(TypeError):
            bad()


def test_getaddrinfo_is_a_lazy_coroutine(loop):
    # Like an `async def` method: a coroutine, accepted by create_task, and
    # nothing happens until it runs.
    coro = loop.getaddrinfo(None, None)  # would fail if it started
    assert asyncio.iscoroutine(coro)
    coro.close()
    task = loop.create_task(loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
    assert run(loop, task) == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)


def test_getaddrinfo_concurrent(loop):
    async def main():
        return await asyncio.gather(
            *[loop.getaddrinfo("localhost", port, type=socket.SOCK_STREAM) for port in range(50)]
        )

    results = run(loop, main())
    assert results == [socket.getaddrinfo("localhost", p, type=socket.SOCK_STREAM) for p in range(50)]


def test_getaddrinfo_cancel(loop):
    async def main():
        tasks = [loop.create_task(loop.getaddrinfo("localhost", p)) for p in range(40)]
        await asyncio.sleep(0)  # let every request start
        for t in tasks[::2]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, r in enumerate(results):
            if i % 2 == 0:
                assert isinstance(r, asyncio.CancelledError)
            else:
                assert r == socket.getaddrinfo("localhost", i)
        # Cancelled before it starts: the request is never made.
        t = loop.create_task(loop.getaddrinfo("localhost", 1))
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        # The loop still works, and late completions crash nothing.
        await asyncio.sleep(0.05)
        return await loop.getaddrinfo("127.0.0.1", 1)

    assert run(loop, main()) == socket.getaddrinfo("127.0.0.1", 1)


def test_getaddrinfo_wait_for_timeout(loop):
    # asyncio.wait_for(getaddrinfo, tiny timeout): TimeoutError or the
    # result, never a hang or a stray callback error.
    async def main():
        for _ in range(20):
            try:
                await asyncio.wait_for(loop.getaddrinfo("localhost", 80), 1e-6)
            except asyncio.TimeoutError:
                pass

    run(loop, main())


def test_getaddrinfo_debug_mode(loop):
    loop.set_debug(True)
    assert run(loop, loop.getaddrinfo("127.0.0.1", 80)) == socket.getaddrinfo("127.0.0.1", 80)


def test_getaddrinfo_closed_loop(loop_factory):
    lp = loop_factory()
    coro = lp.getaddrinfo("localhost", 80)
    lp.close()
    with pytest.raises(RuntimeError, match="closed"):
        coro.send(None)


GNI_CASES = [
    (("127.0.0.1", 80), 0),
    (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("127.0.0.1", 53), socket.NI_DGRAM),
    (("127.0.0.1", 70000), 0),
    (("127.0.0.1", 1), socket.NI_NUMERICSERV),
]
if HAS_IPV6:
    GNI_CASES += [(("::1", 80, 0, 0), 0), (("::1", 22), socket.NI_NUMERICHOST)]

GNI_ERRORS = [
    ("x", 0),                              # TypeError: not a tuple
    (("127.0.0.1",), 0),                   # TypeError: illegal sockaddr argument
    ((b"127.0.0.1", 80), 0),               # TypeError
    (("127.0.0.1", 80, 1), 0),             # OSError: IPv4 sockaddr must be 2 tuple
    (("::1", 80, 2**21, 0), 0),            # OverflowError: flowinfo
    (("localhost", 80), 0),                # gaierror: numeric host only
    (("x\0", 80), 0),                      # ValueError: embedded null character
    (("127.0.0.1", 80), socket.NI_NAMEREQD | socket.NI_NUMERICHOST),  # gaierror
    (("127.0.0.1", 80), "x"),              # TypeError
]


@pytest.mark.parametrize("sa,flags", GNI_CASES, ids=[repr(c) for c in GNI_CASES])
def test_getnameinfo_matches_socket_module(loop, sa, flags):
    assert run(loop, loop.getnameinfo(sa, flags)) == socket.getnameinfo(sa, flags)


@pytest.mark.parametrize("sa,flags", GNI_ERRORS, ids=[repr(c) for c in GNI_ERRORS])
def test_getnameinfo_errors_match_socket_module(loop, sa, flags):
    expected = outcome(lambda: socket.getnameinfo(sa, flags))
    got = outcome(lambda: run(loop, loop.getnameinfo(sa, flags)))
    assert not expected[0]
    assert got == expected


def test_getnameinfo_default_flags_and_cancel(loop):
    async def main():
        assert await loop.getnameinfo(("127.0.0.1", 80)) == socket.getnameinfo(("127.0.0.1", 80), 0)
        tasks = [loop.create_task(loop.getnameinfo(("127.0.0.1", p))) for p in range(1, 30)]
        await asyncio.sleep(0)
        for t in tasks[::3]:
            t.cancel()
        res = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(r, asyncio.CancelledError) for r in res) == len(tasks[::3])

    run(loop, main())


# ------------------------------------------------- flaskasync specifics


def test_close_with_requests_in_flight(loop_factory):
    # Closing the loop while lookups are queued or running neither hangs nor
    # crashes; the lookups' late completions are dropped.
    lp = flaskasync.new_event_loop()
    tasks = [lp.create_task(lp.getaddrinfo("localhost", p)) for p in range(30)]
    lp.run_until_complete(asyncio.sleep(0))
    for t in tasks:
        t.cancel()
    lp.run_until_complete(asyncio.sleep(0))
    lp.close()
    del tasks
    gc.collect()


def test_app_loop_getaddrinfo_from_threads():
    # On the app loop the home thread must collect completions that arrive
    # when no request drives the loop (the request counts in n_io).
    async def lookup(port):
        loop = asyncio.get_running_loop()
        res = await loop.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)
        name = await loop.getnameinfo(("127.0.0.1", port), socket.NI_NUMERICSERV)
        return res, name

    out = {}

    def worker(i):
        out[i] = flaskasync.run(lookup(1000 + i), timeout=10)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        res, name = out[i]
        assert res == socket.getaddrinfo("localhost", 1000 + i, type=socket.SOCK_STREAM)
        assert name == socket.getnameinfo(("127.0.0.1", 1000 + i), socket.NI_NUMERICSERV)


def _fd_count():
    return len(os.listdir("/proc/self/fd"))


def test_dns_no_leak(fa_loop):
    loop = fa_loop

    async def step(n):
        for i in range(n):
            await loop.getaddrinfo("127.0.0.1", i % 100)
            await loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICSERV)
            with pytest.raises(socket.gaierror):
                await loop.getaddrinfo("localhost", 1, flags=socket.AI_NUMERICHOST)
            t = loop.create_task(loop.getaddrinfo("localhost", 1))
            await asyncio.sleep(0)
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
        await asyncio.sleep(0.02)  # let cancelled requests come back

    loop.run_until_complete(step(200))
    gc.collect()
    objs0, handles0, fds0 = len(gc.get_objects()), _core._live_handles(), _fd_count()
    loop.run_until_complete(step(1000))
    gc.collect()
    objs1, handles1, fds1 = len(gc.get_objects()), _core._live_handles(), _fd_count()
    assert fds1 == fds0
    assert handles1 <= handles0
    assert objs1 - objs0 < 100


def test_getaddrinfo_port_must_be_exactly_int_or_str(loop):
    # The socket module takes an int (not a bool or other int subclass), a
    # str, bytes or None as the port.
    with pytest.raises(OSError, match="Int or String expected"):
        loop.run_until_complete(loop.getaddrinfo("127.0.0.1", True))
    with pytest.raises(OSError, match="Int or String expected"):
        loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80.0))
    infos = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
    assert infos[0][4] == ("127.0.0.1", 80)
