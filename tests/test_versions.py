"""What changes from one Python version to the next, checked on the running
one: the C types' references to themselves (heap types), the messages and
exceptions that follow the interpreter, create_task's keyword arguments.

Run on every interpreter the project supports (3.11, 3.12, 3.13); each test
compares with what *this* interpreter does, never with one version's
behaviour written down."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys

import pytest

import flaskasync
from flaskasync import _core

# ---------------------------------------------------------------------------
# Every C type: an instance holds one reference to its (heap) type, dropped
# once when it dies, and visited once by the GC.  From 3.12 on
# asyncio.Future is a heap type whose own dealloc and traverse already do
# that for a subclass (the gather future): doing it again there freed the
# type after a few gathers and crashed the process.


def _type_named(name):
    """The C type called `name`, found through a live instance."""
    for o in gc.get_objects():
        if type(o).__name__ == name and type(o).__module__ == "flaskasync._core":
            return type(o)
    raise LookupError(name)


class _Proto(asyncio.Protocol):
    pass


class _DProto(asyncio.DatagramProtocol):
    pass


def _make_gather(lp):
    async def main():
        g = flaskasync.gather(asyncio.sleep(0), asyncio.sleep(0))
        await g
        return g

    return lp.run_until_complete(main())


def _make_handle(lp):
    h = lp.call_soon(lambda: None)
    lp.run_until_complete(asyncio.sleep(0))
    return h


def _make_timer(lp):
    h = lp.call_later(10, lambda: None)
    h.cancel()
    return h


def _make_netcoro(lp):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        b.send(b"x")
        coro = lp.sock_recv(a, 1)
        assert lp.run_until_complete(coro) == b"x"
        return coro
    finally:
        a.close()
        b.close()


def _make_watcher(lp):
    a, b = socket.socketpair()
    try:
        lp.add_reader(a.fileno(), lambda: None)
        w = [o for o in gc.get_objects() if type(o).__name__ == "_Watcher"]
        lp.remove_reader(a.fileno())
        lp.run_until_complete(asyncio.sleep(0))  # the poll's close callback
        return w[-1] if w else None
    finally:
        a.close()
        b.close()


def _make_stream(lp):
    a, b = socket.socketpair()
    a.setblocking(False)
    t = _core.StreamTransport(lp, a, _Proto(), {})
    t.close()
    lp.run_until_complete(asyncio.sleep(0))
    b.close()
    return t


def _make_datagram(lp):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.bind(("127.0.0.1", 0))
    t = _core.DatagramTransport(lp, s, _DProto(), {})
    t.close()
    lp.run_until_complete(asyncio.sleep(0))
    return t


def _make_loop(lp):
    other = flaskasync.new_event_loop()
    other.close()
    return other


def _make_job(lp):
    found = []

    async def main():
        await asyncio.sleep(0.001)
        # Once the caller waits, its job is a done callback of the task.
        for cb, _ctx in asyncio.current_task()._callbacks:
            owner = getattr(cb, "__self__", None)
            if type(owner).__name__ == "_Job":
                found.append(owner)

    flaskasync.run(main())
    return found[0] if found else None


MAKERS = {
    "_GatheringFuture": _make_gather,
    "Handle": _make_handle,
    "TimerHandle": _make_timer,
    "_NetCoroutine": _make_netcoro,
    "_Watcher": _make_watcher,
    "StreamTransport": _make_stream,
    "DatagramTransport": _make_datagram,
    "Loop": _make_loop,
    "_Job": _make_job,
}


@pytest.fixture(params=list(MAKERS), ids=list(MAKERS))
def make(request):
    return MAKERS[request.param]


def test_instances_do_not_change_their_types_refcount(fa_loop, make):
    obj = make(fa_loop)
    assert obj is not None
    tp = type(obj)
    assert tp.__flags__ & (1 << 9), "expected a heap type"  # Py_TPFLAGS_HEAPTYPE
    del obj
    gc.collect()
    before = sys.getrefcount(tp)
    # A few first (a type drops to zero within ten on a broken build),
    # then many.
    for n in (3, 300):
        for _ in range(n):
            make(fa_loop)
        gc.collect()
        assert sys.getrefcount(tp) == before, f"{tp.__name__}: refcount moved after {n} instances"


def test_gc_visits_the_type_exactly_once(fa_loop, make):
    obj = make(fa_loop)
    tp = type(obj)
    refs = gc.get_referents(obj)
    assert refs.count(tp) == 1, f"{tp.__name__} visits its type {refs.count(tp)} times"


def test_c_loop_base_visits_its_type_once():
    """A CLoop made directly (not through the Python subclass)."""
    lp = _core.CLoop()
    try:
        assert gc.get_referents(lp).count(_core.CLoop) == 1
    finally:
        lp._close()


def test_gathering_future_type_survives_many_gathers():
    """The reported crash: 10 runs of a gather of two sleep(0)."""
    tp = _core._GatheringFuture
    before = sys.getrefcount(tp)

    async def m():
        await flaskasync.gather(asyncio.sleep(0), asyncio.sleep(0))

    for _ in range(10):
        flaskasync.run(m())
    gc.collect()
    assert sys.getrefcount(tp) == before
