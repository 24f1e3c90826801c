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


def case(expected, *, timeout=CHILD_DEADLINE, env=None):
    def deco(fn):
        assert fn.__name__ not in CASES, fn.__name__
        CASES[fn.__name__] = Case(fn, {k: pick(expected, k) for k in ("asyncio", "flaskasync")},
                                  timeout, env or {})
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


@case({"lost": "OSError", "peer_got": "nothing"})
async def transport_write_after_close_fd(ctx):
    """write() on a transport whose fd was closed: EBADF, connection lost,
    and nothing reaches the file that took the number."""
    loop = ctx.loop
    a, b = nb_socketpair()
    tr, proto = await loop.connect_accepted_socket(lambda: Proto(loop), a)
    await asyncio.sleep(0.01)
    fd = a.fileno()
    a.detach()
    os.close(fd)
    c, d = socket.socketpair()  # takes the number
    assert fd in (c.fileno(), d.fileno())
    other = d if c.fileno() == fd else c
    other.setblocking(False)
    if ctx.kind == "flaskasync":
        await asyncio.sleep(0.2)  # let the check find it first
    tr.write(b"must not reach the new file")
    lost = await lost_outcome(proto)
    try:
        got = other.recv(100)
    except BlockingIOError:
        got = b""
    for x in (c, d, b):
        x.close()
    return {"lost": lost, "peer_got": "nothing" if not got else got.decode()}


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


@pytest.mark.parametrize("kind", ["flaskasync", "asyncio"])
@pytest.mark.parametrize("name", list(CASES))
def test_fault(name, kind):
    report, stderr = run_case(name, kind)
    expected = CASES[name].expected[kind]
    assert report["result"] == expected, (report, stderr)
    assert report["pending_tasks"] == [], report
    assert report["watched"] == [], report
    assert report["timers"] == 0, report
    assert report["leaked_fds"] == [], report
    assert report["live_handles"] == 0, report


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
