"""Fault injection: no user mistake may abort the process.

Every case runs on flaskasync's loop and on asyncio's, each in its own
subprocess (a case that aborts the interpreter cannot take the test run
down), and asserts:

- no crash: the child exits normally;
- no hang: each wait in a case is bounded, and the child has a deadline;
- no leak: after the case the loop watches no fd, has no pending task or
  timer, and once it is closed the process has the fds it had before and
  (flaskasync) no live Handle;
- the outcome asyncio's loop gives.  Where asyncio's loop waits forever
  (a fd closed while an operation waits on it: epoll silently forgets a
  closed fd), flaskasync ends the operation with OSError(EBADF) instead:
  those cases say so with ``differs(...)``, and docs/architecture.md lists
  them.

To add a case: an ``async def`` taking a ``Ctx`` and returning something
JSON-able that describes the outcome, decorated with ``@case(expected)``.
``expected`` is that outcome on both loops, or ``differs(asyncio=...,
flaskasync=...)``.  ``outcome(aw)`` turns an awaitable into "ok", "hang"
(it did not finish within HANG seconds) or the name of the exception it
raised.  Cases receive their own loop (flaskasync's with a 50 ms fd check
interval, so that a lost fd is found quickly), and can read the contexts
the loop's exception handler got in ``ctx.errors``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import gc
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest

HANG = 0.6             # seconds a bounded wait gives an operation before it counts as a hang
CHILD_DEADLINE = 60    # seconds a whole case may take in its subprocess

CASES: dict = {}


@dataclass
class Case:
    fn: object
    expected: dict
    timeout: float
    env: dict = field(default_factory=dict)
    asan_options: str = ""


class Differs(dict):
    """An outcome (or part of one) that is not the same on both loops."""


def differs(*, asyncio, flaskasync):
    """The outcome on each loop, where flaskasync deliberately differs."""
    return Differs(asyncio=asyncio, flaskasync=flaskasync)


def pick(expected, kind):
    """expected as seen on the loop `kind`."""
    if isinstance(expected, Differs):
        return pick(expected[kind], kind)
    if isinstance(expected, dict):
        return {k: pick(v, kind) for k, v in expected.items()}
    return expected


def case(expected, *, timeout=CHILD_DEADLINE, env=None, asan_options=""):
    """A case; asan_options are added to ASAN_OPTIONS when the run is under
    ASan (scripts/asan.sh)."""
    def deco(fn):
        assert fn.__name__ not in CASES, fn.__name__
        CASES[fn.__name__] = Case(fn, {k: pick(expected, k) for k in ("asyncio", "flaskasync")},
                                  timeout, env or {}, asan_options)
        return fn

    return deco


class Ctx:
    def __init__(self, loop, kind):
        self.loop = loop
        self.kind = kind
        self.errors = []


async def outcome(aw, timeout=HANG):
    try:
        await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        return "hang"
    except BaseException as e:  # noqa: BLE001 - the outcome is the exception
        return type(e).__name__
    return "ok"


def nb_socketpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def quietly(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass


# ------------------------------------------------------------ closers
#
# What user code does to a fd the loop watches.  Each takes the socket (or
# file) object and returns a cleanup function.  The replacement files that
# dup2/reopen put under the number have data waiting, so a loop that
# watched them by mistake would run the old callback.


def close_object(sock):
    sock.close()
    return lambda: None


def close_fd(sock):
    # Under the object's feet: the object still believes it owns the number.
    fd = sock.fileno()
    os.close(fd)
    return lambda: quietly(sock.detach) if hasattr(sock, "detach") else None


def dup2_over(sock):
    fd = sock.fileno()
    c, d = socket.socketpair()
    d.send(b"data for the new file")
    os.dup2(c.fileno(), fd)  # closes the watched file, puts c's under its number
    c.close()

    def cleanup():
        if hasattr(sock, "detach"):
            quietly(sock.detach)
        quietly(os.close, fd)
        d.close()
    return cleanup


def reopen(sock):
    # Close, then the next socket takes the same (lowest free) number.
    fd = sock.fileno()
    sock.close()
    made = []
    while True:
        c, d = socket.socketpair()
        made.append((c, d))
        if fd in (c.fileno(), d.fileno()):
            break
        if len(made) > 64:
            raise AssertionError("the number was not reused")
    d.send(b"data for the new file") if c.fileno() == fd else c.send(b"data for the new file")

    def cleanup():
        for c, d in made:
            quietly(c.close)
            quietly(d.close)
    return cleanup


CLOSERS = {"close_object": close_object, "close_fd": close_fd, "dup2_over": dup2_over,
           "reopen": reopen}


def closer_cases(make, expected):
    """One case per closer, named <make's name>__<closer>."""
    def resolve(x, name):
        if callable(x):
            return resolve(x(name), name)
        if isinstance(x, dict):
            return type(x)((k, resolve(v, name)) for k, v in x.items())
        return x

    for name, closer in CLOSERS.items():
        async def fn(ctx, _closer=closer):
            return await make(ctx, _closer)
        fn.__name__ = f"{make.__name__}__{name}"
        case(resolve(expected, name))(fn)


# ------------------------------------------------------------ add_reader / add_writer


async def reader_idle(ctx, closer):
    """add_reader() on a fd that is closed behind the loop's back: the
    callback never runs (not for the file that takes the number either),
    remove_reader() still finds it."""
    loop = ctx.loop
    a, b = nb_socketpair()
    calls = []
    fd = a.fileno()
    loop.add_reader(fd, calls.append, 1)
    await asyncio.sleep(0.01)
    cleanup = closer(a)
    await asyncio.sleep(0.3)
    removed = loop.remove_reader(fd)
    cleanup()
    b.close()
    return {"called": bool(calls), "removed": removed}


closer_cases(reader_idle, {"called": False, "removed": True})


async def reader_same_iteration(ctx, closer):
    """The issue's reproducer: add_reader, close, then the loop runs (it
    aborted in libuv's uv_run)."""
    loop = ctx.loop
    a, b = nb_socketpair()
    calls = []
    fd = a.fileno()
    loop.add_reader(fd, calls.append, 1)
    cleanup = closer(a)
    await asyncio.sleep(0.3)
    removed = loop.remove_reader(fd)
    cleanup()
    b.close()
    return {"called": bool(calls), "removed": removed}


closer_cases(reader_same_iteration, {"called": False, "removed": True})


async def writer_full_buffer(ctx, closer):
    """add_writer() waiting for buffer space; the fd closed meanwhile."""
    loop = ctx.loop
    a, b = nb_socketpair()
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    calls = []
    fd = a.fileno()
    loop.add_writer(fd, calls.append, 1)
    await asyncio.sleep(0.01)
    cleanup = closer(a)
    await asyncio.sleep(0.3)
    removed = loop.remove_writer(fd)
    cleanup()
    b.close()
    return {"called": bool(calls), "removed": removed}


closer_cases(writer_full_buffer, {"called": False, "removed": True})


async def reader_rewatch_reused_number(ctx, closer):
    """add_reader() again on the number after its file was closed, without
    remove_reader() in between: the new file is watched.  asyncio's
    selector keeps the stale key and only swaps the callback, so the new
    file never reaches epoll and the callback never runs."""
    loop = ctx.loop
    a, b = nb_socketpair()
    fd = a.fileno()
    loop.add_reader(fd, lambda: None)
    await asyncio.sleep(0.01)
    cleanup = closer(a)   # the number now refers to a file with data waiting, or to nothing
    fut = loop.create_future()
    try:
        loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    except OSError as e:
        result = type(e).__name__  # nothing at that number any more
    else:
        result = await outcome(fut)
    quietly(loop.remove_reader, fd)
    cleanup()
    b.close()
    return result


closer_cases(reader_rewatch_reused_number,
             lambda name: {
                 # No file at the number: flaskasync's add_reader raises
                 # OSError(EBADF) as asyncio's does for a fd it never saw.
                 "close_object": differs(asyncio="hang", flaskasync="OSError"),
                 "close_fd": differs(asyncio="hang", flaskasync="OSError"),
                 "dup2_over": differs(asyncio="hang", flaskasync="ok"),
                 "reopen": differs(asyncio="hang", flaskasync="ok")}[name])


# ------------------------------------------------------------ sock_*


async def _sock_op_closed(ctx, closer, start):
    loop = ctx.loop
    sock, keep, started = await start(loop)
    task = asyncio.ensure_future(outcome(started, timeout=HANG + 0.5))
    await asyncio.sleep(0.05)
    assert not task.done(), "the operation did not wait"
    cleanup = closer(sock)
    result = await task
    cleanup()
    for k in keep:
        quietly(k.close)
    return result


async def start_recv(loop):
    a, b = nb_socketpair()
    return a, [b], loop.sock_recv(a, 100)


async def start_sendall(loop):
    a, b = nb_socketpair()
    return a, [b], loop.sock_sendall(a, b"x" * 20_000_000)


async def start_accept(loop):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    ls.setblocking(False)
    return ls, [], loop.sock_accept(ls)


def full_backlog_listener():
    """A listener whose accept queue is full: a new connect() stays pending."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    fill = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(ls.getsockname())
        except BlockingIOError:
            pass
        fill.append(f)
    time.sleep(0.05)
    return ls, fill


async def start_connect(loop):
    ls, fill = full_backlog_listener()
    s = socket.socket()
    s.setblocking(False)
    return s, [ls, *fill], loop.sock_connect(s, ls.getsockname())


# asyncio's sock_* call waits forever for a fd that left epoll; flaskasync's
# fails with OSError(EBADF) once its periodic check finds the fd gone.
SOCK_LOST = differs(asyncio="hang", flaskasync="OSError")

for _name, _start in {"recv": start_recv, "sendall": start_sendall, "accept": start_accept,
                      "connect": start_connect}.items():
    async def _make(ctx, closer, _start=_start):
        return await _sock_op_closed(ctx, closer, _start)
    _make.__name__ = f"sock_{_name}_pending"
    closer_cases(_make, SOCK_LOST)


@case({"result": "OSError", "errno": errno.EBADF})
async def sock_recv_closed_before_first_poll(ctx):
    """The issue's second reproducer: the socket closed while sock_connect /
    sock_recv is pending, before the loop ever polled."""
    loop = ctx.loop
    a, b = nb_socketpair()
    task = loop.create_task(loop.sock_recv(a, 10))
    await asyncio.sleep(0)  # registered, never polled
    a.close()
    await asyncio.sleep(0)
    b.close()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    # The number is free; a plain sock_recv on the closed socket object:
    try:
        await loop.sock_recv(a, 10)
    except OSError as e:
        return {"result": type(e).__name__, "errno": e.errno}
    return {"result": "ok", "errno": None}


@case(differs(asyncio="hang", flaskasync="OSError"))
async def sock_recv_closed_by_another_thread(ctx):
    loop = ctx.loop
    a, b = nb_socketpair()
    threading.Timer(0.05, a.close).start()
    r = await outcome(loop.sock_recv(a, 10), timeout=HANG + 0.5)
    b.close()
    return r


@case(differs(asyncio="hang", flaskasync="OSError"))
async def sock_recv_found_by_default_interval(ctx):
    """The default check interval (1 s) finds the closed fd too."""
    loop = ctx.loop
    if ctx.kind == "flaskasync":
        loop._fd_check_interval = 1.0
    a, b = nb_socketpair()
    task = asyncio.ensure_future(outcome(loop.sock_recv(a, 10),
                                         timeout=2.5 if ctx.kind == "flaskasync" else HANG))
    await asyncio.sleep(0.05)
    a.close()
    r = await task
    b.close()
    return r


@case({"first": "OSError", "second": "ok"})
async def sock_connect_closed_then_new_socket_same_number(ctx):
    """Happy eyeballs' loser: a pending sock_connect cancelled and its socket
    closed; the next socket gets the same number and connects."""
    loop = ctx.loop
    ls, fill = full_backlog_listener()
    s = socket.socket()
    s.setblocking(False)
    task = loop.create_task(loop.sock_connect(s, ls.getsockname()))
    await asyncio.sleep(0.02)
    task.cancel()
    s.close()
    try:
        await task
    except asyncio.CancelledError:
        first = "OSError"
    else:
        first = "ok"
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    s2 = socket.socket()
    s2.setblocking(False)
    second = await outcome(loop.sock_connect(s2, srv.getsockname()))
    for x in (s2, srv, ls, *fill):
        x.close()
    return {"first": first, "second": second}


# ------------------------------------------------------------ transports


class Proto(asyncio.Protocol):
    def __init__(self, loop):
        self.lost = loop.create_future()
        self.transport = None
        self.data = bytearray()
        self.paused = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        return True

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def lost_outcome(proto, timeout=HANG + 0.5):
    try:
        exc = await asyncio.wait_for(asyncio.shield(proto.lost), timeout)
    except asyncio.TimeoutError:
        return "hang"
    return "None" if exc is None else type(exc).__name__


async def _transport_closed(ctx, closer, state):
    loop = ctx.loop
    a, b = nb_socketpair()
    tr, proto = await loop.connect_accepted_socket(lambda: Proto(loop), a)
    if state == "paused":
        tr.pause_reading()
    elif state == "writing":
        tr.write(b"x" * 20_000_000)  # b never reads: the buffer stays full
    await asyncio.sleep(0.05)
    cleanup = closer(a)
    result = await lost_outcome(proto)
    abort = attempt(tr.abort)
    await lost_outcome(proto)
    cleanup()
    b.close()
    return {"lost": result, "abort": abort}


def attempt(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the outcome is the exception
        return type(e).__name__
    return "ok"


# asyncio's transport waits forever (its fd left epoll unnoticed), and
# abort() then fails where it must stop watching for writes (EPOLL_CTL_MOD
# on the closed fd); flaskasync's ends with connection_lost(OSError(EBADF)).
for _state in ("reading", "paused", "writing"):
    async def _make(ctx, closer, _state=_state):
        return await _transport_closed(ctx, closer, _state)
    _make.__name__ = f"transport_{_state}"
    closer_cases(_make, differs(
        asyncio={"lost": "hang",
                 "abort": "ok" if _state != "writing" else
                 lambda name: "OSError" if name in ("close_object", "close_fd")
                 else "FileNotFoundError"},
        flaskasync={"lost": "OSError", "abort": "ok"}))


async def _write_after(ctx, how):
    loop = ctx.loop
    a, b = nb_socketpair()
    tr, proto = await loop.connect_accepted_socket(lambda: Proto(loop), a)
    await asyncio.sleep(0.01)
    fd = a.fileno()
    if how == "socket_closed":
        a.close()
    else:
        os.close(fd)  # the socket object still claims the number
    c, d = socket.socketpair()  # takes the number
    assert fd in (c.fileno(), d.fileno())
    other = d if c.fileno() == fd else c  # the peer of the socket that took the number
    other.setblocking(False)
    taken = os.fstat(fd).st_ino
    if how == "fd_closed":
        await asyncio.sleep(0.2)
    tr.write(b"must not reach the new file")
    lost = await lost_outcome(proto)
    try:
        got = other.recv(100)
    except BlockingIOError:
        got = b""
    attempt(tr.abort)
    await lost_outcome(proto)
    # Did closing the transport close the file that has its old number?
    try:
        intact = os.fstat(fd).st_ino == taken
    except OSError:
        intact = False
    if how == "fd_closed":
        quietly(a.detach)
    for x in (c, d, b):
        quietly(x.close)
    return {"lost": lost, "peer_got": "nothing" if not got else got.decode(),
            "new_file_intact": intact}


@case({"lost": "OSError", "peer_got": "nothing", "new_file_intact": True})
async def transport_write_after_socket_closed(ctx):
    """write() right after the socket object was closed and its number
    reused: EBADF (the object's fd is -1), nothing reaches the new file."""
    return await _write_after(ctx, "socket_closed")


@case(differs(asyncio={"lost": "hang", "peer_got": "must not reach the new file",
                       "new_file_intact": False},
              flaskasync={"lost": "OSError", "peer_got": "nothing", "new_file_intact": True}))
async def transport_write_after_fd_closed_under_socket(ctx):
    """os.close() under the socket object, the number reused: asyncio's
    transport writes into the file that took the number, and closing the
    transport closes that file too; flaskasync's periodic check finds the fd
    replaced first, and the transport lets the socket object go without
    closing the number."""
    return await _write_after(ctx, "fd_closed")


# ------------------------------------------------------------ servers


async def server_listener_closed(ctx, closer):
    loop = ctx.loop
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    ls.setblocking(False)
    addr = ls.getsockname()
    fd = ls.fileno()
    server = await loop.create_server(lambda: Proto(loop), sock=ls)
    await asyncio.sleep(0.02)
    cleanup = closer(ls)
    await asyncio.sleep(0.2)
    connect = await outcome(asyncio.open_connection(*addr))
    closed = attempt(server.close)
    if closed == "ok":
        closed = await outcome(server.wait_closed())
    else:
        quietly(loop.remove_reader, fd)  # what _stop_serving() failed to do
    cleanup()
    return {"connect": connect, "close": closed}


# The listening socket closed behind the server's back: both loops stop
# accepting (the port is closed) and server.close() fails as asyncio's
# _stop_serving() does: ValueError for a socket object closed (fileno() is
# -1), OSError(EBADF) when it closes the socket whose fd was closed under it.
# When the client's new socket takes the listener's number, asyncio's stale
# selector key makes that unrelated connect() fail with FileNotFoundError
# (EPOLL_CTL_MOD on a number it never registered); flaskasync's connects
# (and is refused: nothing listens any more).
closer_cases(server_listener_closed,
             {"connect": lambda name: differs(
                 asyncio="FileNotFoundError", flaskasync="ConnectionRefusedError")
              if name in ("close_object", "close_fd") else "ConnectionRefusedError",
              "close": lambda name: {"close_object": "ValueError", "close_fd": "OSError",
                                     "dup2_over": "ok", "reopen": "ValueError"}[name]})


# ------------------------------------------------------------ pipes and subprocesses


async def _read_pipe_closed(ctx, closer_name):
    loop = ctx.loop
    r, w = os.pipe()
    rf = open(r, "rb", buffering=0)
    tr, proto = await loop.connect_read_pipe(lambda: Proto(loop), rf)
    await asyncio.sleep(0.02)
    if closer_name == "close_fd":
        os.close(r)
    else:
        p, q = os.pipe()
        os.dup2(p, r)
        os.close(p)
        os.write(q, b"data for the new file")
    result = await lost_outcome(proto)
    tr.close()
    await lost_outcome(proto)
    quietly(rf.close)
    quietly(os.close, w)
    if closer_name != "close_fd":
        quietly(os.close, q)
    return result


@case(differs(asyncio="hang", flaskasync="OSError"))
async def read_pipe__close_fd(ctx):
    return await _read_pipe_closed(ctx, "close_fd")


@case(differs(asyncio="hang", flaskasync="OSError"))
async def read_pipe__dup2_over(ctx):
    return await _read_pipe_closed(ctx, "dup2_over")


@case(differs(asyncio={"lost": "hang", "abort": "OSError"},
              flaskasync={"lost": "OSError", "abort": "ok"}))
async def write_pipe_full__close_fd(ctx):
    loop = ctx.loop
    r, w = os.pipe()
    wf = open(w, "wb", buffering=0)
    tr, proto = await loop.connect_write_pipe(lambda: Proto(loop), wf)
    tr.write(b"x" * 5_000_000)  # nobody reads r
    await asyncio.sleep(0.02)
    os.close(w)
    result = await lost_outcome(proto)
    abort = attempt(tr.abort)
    await lost_outcome(proto)
    quietly(wf.close)
    os.close(r)
    return {"lost": result, "abort": abort}


@case(differs(asyncio={"returncode": "hang"}, flaskasync={"returncode": 0}))
async def subprocess_stdout_fd_closed(ctx):
    """A subprocess's stdout pipe closed behind its transport's back: the
    process is reaped, and wait() (which waits for the pipes to close)
    returns once flaskasync's transport finds its fd gone; asyncio's waits
    forever."""
    loop = ctx.loop
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    pipe = proc._transport.get_pipe_transport(1)
    fd = pipe.get_extra_info("pipe").fileno()
    await asyncio.sleep(0.05)
    pipe.get_extra_info("pipe").detach() if hasattr(pipe.get_extra_info("pipe"), "detach") else None
    os.close(fd)
    proc.stdin.close()
    try:
        rc = await asyncio.wait_for(proc.wait(), 3)
    except asyncio.TimeoutError:
        rc = "hang"
        attempt(pipe.close)
        proc._transport.close()
        await asyncio.sleep(0.05)
    return {"returncode": rc}


# ------------------------------------------------------------ peers misbehaving


def rst_close(sock):
    """Close with a reset (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


@case({"lost": "ConnectionResetError", "writes_after": "dropped"})
async def peer_reset_mid_write(ctx):
    """The peer resets while the transport has megabytes queued."""
    loop = ctx.loop
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    conn.setblocking(False)
    tr, proto = await loop.connect_accepted_socket(lambda: Proto(loop), conn)
    tr.write(b"x" * 20_000_000)
    await asyncio.sleep(0.05)
    cli.recv(65536)  # the peer reads a little, then resets
    rst_close(cli)
    lost = await lost_outcome(proto, timeout=5)
    tr.write(b"more")  # after the connection is lost: dropped, never raises
    srv.close()
    return {"lost": lost, "writes_after": "dropped"}


def tls_contexts():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@case({"reset_client": "handshake failed, no connection_made", "next_client": "ok"})
async def peer_reset_mid_tls_handshake_server_side(ctx):
    """A client sends half a ClientHello and resets: the TLS server drops
    it (its protocol never sees a connection) and serves the next one."""
    loop = ctx.loop
    server_ctx, client_ctx = tls_contexts()
    made = []

    class P(Proto):
        def connection_made(self, transport):
            made.append(transport)
            transport.write(b"hello")

    server = await loop.create_server(lambda: P(loop), "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    raw = socket.create_connection(("127.0.0.1", port))
    raw.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
    await asyncio.sleep(0.05)
    rst_close(raw)
    await asyncio.sleep(0.1)
    first = "handshake failed, no connection_made" if not made else "connection_made"
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                         server_hostname="localhost")
    got = await asyncio.wait_for(r.readexactly(5), 5)
    w.close()
    await w.wait_closed()
    server.close()
    await server.wait_closed()
    for t in made:
        t.close()
    await asyncio.sleep(0.05)
    return {"reset_client": first, "next_client": "ok" if got == b"hello" else got.decode()}


@case({"client": "ConnectionResetError", "loop_still_serves": True})
async def peer_reset_mid_tls_handshake_client_side(ctx):
    """The server resets in the middle of our TLS handshake."""
    loop = ctx.loop
    _, client_ctx = tls_contexts()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.setblocking(False)
    port = srv.getsockname()[1]

    async def evil_server():
        conn, _ = await loop.sock_accept(srv)
        await loop.sock_recv(conn, 4096)  # the ClientHello
        rst_close(conn)

    evil = loop.create_task(evil_server())
    client = await outcome(asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                   server_hostname="localhost"), timeout=5)
    await evil
    srv.close()
    return {"client": client, "loop_still_serves": await outcome(asyncio.sleep(0.01)) == "ok"}


@case({"eof_received": True, "reply": "pong", "then": "None"})
async def half_close(ctx):
    """The peer shuts down its sending side: eof_received(), and the
    transport still writes (eof_received returned True)."""
    loop = ctx.loop
    got_eof = loop.create_future()
    protos = []

    class P(Proto):
        def eof_received(self):
            got_eof.set_result(True)
            self.transport.write(b"pong")
            return True

    server = await loop.create_server(lambda: protos.append(P(loop)) or protos[-1],
                                      "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"ping")
    w.write_eof()
    eof = await asyncio.wait_for(got_eof, 5)
    reply = await asyncio.wait_for(r.readexactly(4), 5)
    protos[0].transport.close()  # after its own reply
    then = await lost_outcome(protos[0], timeout=5)
    rest = await asyncio.wait_for(r.read(), 5)  # the client sees EOF
    w.close()
    await w.wait_closed()
    assert rest == b"", rest
    server.close()
    await server.wait_closed()
    return {"eof_received": eof, "reply": reply.decode(), "then": then}


@case({"accepted": 12, "out_of_fds_reported": True, "server_serving": True}, timeout=30)
async def emfile_on_accept(ctx):
    """accept() out of fds: the server reports it, keeps running, and
    accepts again once fds are free (asyncio retries after 1 s)."""
    loop = ctx.loop
    accepted = []

    class P(Proto):
        def connection_made(self, transport):
            accepted.append(transport)

    server = await loop.create_server(lambda: P(loop), "127.0.0.1", 0, backlog=64)
    port = server.sockets[0].getsockname()[1]
    # The clients live in another process: only the server's fds count here.
    clients = subprocess.Popen(
        [sys.executable, "-c",
         "import socket, sys, time\n"
         f"s = [socket.create_connection(('127.0.0.1', {port})) for _ in range(12)]\n"
         "sys.stdin.read()"],
        stdin=subprocess.PIPE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(_open_fds()) + 5, hard))
    try:
        deadline = loop.time() + 5
        while not ctx.errors and loop.time() < deadline:
            await asyncio.sleep(0.01)
        reported = any("out of system resource" in c.get("message", "") for c in ctx.errors)
        partial = len(accepted)
        for t in accepted:
            t.abort()  # frees their fds
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    deadline = loop.time() + 8
    while len(accepted) < 12 and loop.time() < deadline:
        await asyncio.sleep(0.02)
    for t in accepted:
        t.abort()
    clients.stdin.close()
    clients.wait()
    serving = server.is_serving()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.05)
    assert partial < 12, partial
    return {"accepted": len(accepted), "out_of_fds_reported": reported,
            "server_serving": serving}


# Under ASan, freed memory waits in a quarantine (256 MB by default) before
# reuse, so RSS grows with what was freed: turned off for this case.
@case({"received": 32 << 20, "buffer_bounded": True, "rss_bounded": True}, timeout=60,
      asan_options="quarantine_size_mb=0")
async def slow_reader_fast_writer(ctx):
    """A writer that honours drain() against a reader 10x slower: the
    write buffer (and the process's memory) stays bounded by flow control."""
    loop = ctx.loop
    total = 32 << 20
    chunk = b"x" * 65536
    high = []

    async def handle(reader, writer):
        tr = writer.transport
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            high.append(tr.get_write_buffer_size())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=65536)
    rss0 = rss()
    received = 0
    while True:
        data = await r.read(65536)
        if not data:
            break
        received += len(data)
        if received % (1 << 20) < 65536:
            await asyncio.sleep(0.002)
    rss1 = rss()
    w.close()
    await w.wait_closed()
    server.close()
    await server.wait_closed()
    # drain() lets the buffer reach the high-water mark (64 KiB), plus the
    # chunk written before the next drain().
    return {"received": received, "buffer_bounded": max(high) <= 65536 + len(chunk),
            "rss_bounded": rss1 - rss0 < 16 << 20}


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@case({"child": 0, "reader": True, "protocol": "after fork"})
async def fork_then_child_closes_watched_fds(ctx):
    """fork() while fds are watched; the child closes them (and runs a
    loop of its own); the parent's watches keep working."""
    loop = ctx.loop
    a, b = nb_socketpair()
    c, d = nb_socketpair()
    got = loop.create_future()
    loop.add_reader(a.fileno(), lambda: got.done() or got.set_result(a.recv(100)))
    tr, proto = await loop.connect_accepted_socket(lambda: Proto(loop), c)
    await asyncio.sleep(0.02)
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            for fd in (a.fileno(), c.fileno()):
                os.close(fd)
            import flaskasync
            lp = flaskasync.new_event_loop() if ctx.kind == "flaskasync" else asyncio.new_event_loop()
            x, y = nb_socketpair()
            y.send(b"child")
            code = 0 if lp.run_until_complete(lp.sock_recv(x, 10)) == b"child" else 2
            lp.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    b.send(b"after fork")
    d.send(b"after fork")
    reader = await asyncio.wait_for(got, 5)
    while proto.data != b"after fork":
        await asyncio.sleep(0.01)
    loop.remove_reader(a.fileno())
    tr.close()
    await lost_outcome(proto)
    for x in (a, b, d):
        x.close()
    return {"child": os.waitstatus_to_exitcode(status), "reader": reader == b"after fork",
            "protocol": proto.data.decode()}


# ------------------------------------------------------------ signals
#
# A loop blocked in each state must run Python signal handlers at once:
# within 0.2 s of the signal, its exception propagates out of
# run_until_complete().  Those cases drive the loop themselves (`sync`).


class Alarm(Exception):
    pass


def _blocked_states():
    def idle(loop):
        return loop.create_future(), []  # nothing will ever complete it

    def reading(loop):
        a, b = nb_socketpair()
        return loop.sock_recv(a, 10), [a, b]

    def writing(loop):
        a, b = nb_socketpair()
        return loop.sock_sendall(a, b"x" * 20_000_000), [a, b]

    def connecting(loop):
        ls, fill = full_backlog_listener()
        s = socket.socket()
        s.setblocking(False)
        return loop.sock_connect(s, ls.getsockname()), [s, ls, *fill]

    def accepting(loop):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        ls.setblocking(False)
        return loop.sock_accept(ls), [ls]

    return {"idle": idle, "reading": reading, "writing": writing, "connecting": connecting,
            "accepting": accepting}


def _signal_case(ctx, state, how):
    loop = ctx.loop
    aw, keep = _blocked_states()[state](loop)
    task = asyncio.ensure_future(aw, loop=loop)
    loop.run_until_complete(asyncio.sleep(0.05))  # now blocked in that state
    if how == "sigalrm":
        def handler(signum, frame):
            raise Alarm
        old = signal.signal(signal.SIGALRM, handler)
        t0 = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 0.1)
    else:
        old = None
        t0 = time.monotonic()
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
    raised = "nothing"
    try:
        loop.run_until_complete(task)
    except (Alarm, KeyboardInterrupt) as e:
        raised = type(e).__name__
    delay = time.monotonic() - t0 - 0.1
    if old is not None:
        signal.signal(signal.SIGALRM, old)
    task.cancel()
    try:
        loop.run_until_complete(task)
    except (asyncio.CancelledError, OSError):
        pass
    for k in keep:
        k.close()
    return {"raised": raised, "within_0.2s": delay < 0.2}


for _state in _blocked_states():
    for _how, _exc in (("sigalrm", "Alarm"), ("ctrl_c", "KeyboardInterrupt")):
        def _sig(ctx, _state=_state, _how=_how):
            return _signal_case(ctx, _state, _how)
        _sig.__name__ = f"signal_{_how}_while_{_state}"
        _sig.sync = True
        case({"raised": _exc, "within_0.2s": True})(_sig)


# ------------------------------------------------------------ the child process


def _open_fds():
    fds = set()
    for x in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(x))
        except OSError:
            continue  # the listing's own fd
        fds.add(int(x))
    return fds


def _watched(loop, kind):
    if kind == "flaskasync":
        return loop._watched_fds()
    own = loop._ssock.fileno()
    return sorted(k.fd for k in loop._selector.get_map().values() if k.fd != own)


def _pending_timers(loop, kind):
    if kind == "flaskasync":
        return loop._timer_count
    return sum(1 for h in loop._scheduled if not h.cancelled())


def _child(name, kind):
    import flaskasync
    from flaskasync import _core

    c = CASES[name]
    # libuv's process-wide fds (its signal lock pipe) come with the first loop.
    flaskasync.new_event_loop().close()
    fds_before = _open_fds()
    loop = flaskasync.new_event_loop() if kind == "flaskasync" else asyncio.new_event_loop()
    if kind == "flaskasync":
        loop._fd_check_interval = 0.05
    asyncio.set_event_loop(loop)
    ctx = Ctx(loop, kind)
    loop.set_exception_handler(lambda lp, context: ctx.errors.append(context))
    if getattr(c.fn, "sync", False):
        result = c.fn(ctx)
    else:
        result = loop.run_until_complete(asyncio.wait_for(c.fn(ctx), c.timeout))
    # Let what the case closed finish closing.
    loop.run_until_complete(asyncio.sleep(0.05))
    pending = [repr(t) for t in asyncio.all_tasks(loop) if not t.done()]
    watched = _watched(loop, kind)
    timers = _pending_timers(loop, kind)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    asyncio.set_event_loop(None)
    del loop, ctx
    gc.collect()
    leaked_fds = sorted(_open_fds() - fds_before)
    report = {"result": result, "pending_tasks": pending, "watched": watched,
              "timers": timers, "leaked_fds": leaked_fds,
              "live_handles": _core._live_handles() if kind == "flaskasync" else 0}
    sys.stdout.write("\nRESULT " + json.dumps(report) + "\n")
    sys.stdout.flush()


def run_case(name, kind):
    c = CASES[name]
    env = dict(os.environ, **c.env)
    env.pop("PYTHONASYNCIODEBUG", None)
    if c.asan_options and "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":" + c.asan_options
    try:
        p = subprocess.run([sys.executable, "-X", "faulthandler", __file__, name, kind],
                           capture_output=True, text=True, timeout=c.timeout + 30, env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{name} on {kind}: hung (killed after {e.timeout} s)\n"
                             f"{e.stderr}") from None
    assert p.returncode == 0, (
        f"{name} on {kind}: the child died with status {p.returncode}\n{p.stdout}\n{p.stderr}")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"{name} on {kind}: no result\n{p.stdout}\n{p.stderr}"
    return json.loads(lines[-1][len("RESULT "):]), p.stderr


# Each case is a subprocess that mostly waits (interpreter start-up, the
# HANG bounds, sleeps), so the selected cases run JOBS at a time, started in
# test order ahead of the tests that check them; the result of each is still
# its own test.  FLASKASYNC_FAULT_JOBS=1 runs them one by one.
JOBS = max(1, int(os.environ.get("FLASKASYNC_FAULT_JOBS", "3")))


@pytest.fixture(scope="module")
def case_runs(request):
    wanted = [item.callspec.params for item in request.session.items
              if getattr(item, "originalname", None) == "test_fault"
              and item.module.__name__ == __name__]
    with concurrent.futures.ThreadPoolExecutor(JOBS, thread_name_prefix="fault-case") as pool:
        runs = {(p["name"], p["kind"]): pool.submit(run_case, p["name"], p["kind"])
                for p in wanted}
        yield runs
        for f in runs.values():
            f.cancel()


@pytest.mark.parametrize("kind", ["flaskasync", "asyncio"])
@pytest.mark.parametrize("name", list(CASES))
def test_fault(name, kind, case_runs):
    run = case_runs.get((name, kind))
    report, stderr = run.result() if run is not None else run_case(name, kind)
    expected = CASES[name].expected[kind]
    assert report["result"] == expected, (report, stderr)
    assert report["pending_tasks"] == [], report
    assert report["watched"] == [], report
    assert report["timers"] == 0, report
    assert report["leaked_fds"] == [], report
    assert report["live_handles"] == 0, report


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
