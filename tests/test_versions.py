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


# ---------------------------------------------------------------------------
# No deprecated C API.  Compilers do not flag these (CPython's headers do
# not mark them), so the sources are read: each name may appear only in the
# 3.11 branch of a version bridge in the headers (`#if PY_VERSION_HEX <
# 0x030C0000`, or the `#else` of a `>=` test): csrc/fa.h's compatibility
# section and csrc/util.h's exceptions in flight, the only places that
# bridge versions.

BRIDGE_HEADERS = ("fa.h", "util.h")

CSRC = __import__("pathlib").Path(__file__).resolve().parent.parent / "csrc"

DEPRECATED_C_API = {
    # deprecated in 3.12
    "PyErr_Fetch": "PyErr_GetRaisedException",
    "PyErr_Restore": "PyErr_SetRaisedException",
    "PyErr_NormalizeException": "PyErr_GetRaisedException",
    "structmember.h": "Python.h's Py_T_* and Py_READONLY",
    "T_OBJECT": "a getter (T_OBJECT's None for NULL) or Py_T_OBJECT_EX",
    "PyUnicode_READY": "nothing (unneeded since 3.12)",
    # deprecated in 3.13, removed in 3.15
    "PyImport_ImportModuleNoBlock": "PyImport_ImportModule",
    "PyWeakref_GetObject": "PyWeakref_GetRef",
    "PyWeakref_GET_OBJECT": "PyWeakref_GetRef",
    "Py_UNICODE": "wchar_t",
    "PyUnicode_AsEncodedObject": "PyCodec_Encode",
    "PyUnicode_AsDecodedObject": "PyCodec_Decode",
    # deprecated with no removal date, or private API that moves
    "Py_TPFLAGS_HAVE_FINALIZE": "nothing (unneeded since 3.8)",
    "PySlice_GetIndicesEx": "PySlice_Unpack + PySlice_AdjustIndices",
    "PyErr_Display": "PyErr_DisplayException",
    "PyThread_create_key": "PyThread_tss_alloc",
    "_Py_HashDouble": "PyObject_Hash of a float",
    "_PyObject_LookupAttr": "PyObject_GetOptionalAttr (3.13)",
    "_PyThreadState_UncheckedGet": "PyThreadState_GetUnchecked (3.13)",
    "_PyDict_GetItemStringWithError": "PyDict_GetItemStringRef (3.13)",
}


def _old_python_lines(path):
    """Line numbers of path's text that only 3.11 compiles."""
    import re

    old, stack = set(), []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        m = re.match(r"#\s*if\s+PY_VERSION_HEX\s*(<|>=)\s*0x030C0000", s)
        if m:
            stack.append(m.group(1) == "<")
            continue
        if s.startswith("#if"):
            stack.append(None)
            continue
        if s.startswith("#else") and stack:
            if stack[-1] is not None:
                stack[-1] = not stack[-1]
            continue
        if s.startswith("#endif") and stack:
            stack.pop()
            continue
        if any(x is True for x in stack):
            old.add(n)
    return old


def test_no_deprecated_c_api():
    import re

    found = []
    for path in sorted(CSRC.glob("*.[ch]")):
        old = _old_python_lines(path) if path.name in BRIDGE_HEADERS else set()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//")[0]
            if code.lstrip().startswith(("/*", "*")):
                continue  # a comment may name an old API
            for name, instead in DEPRECATED_C_API.items():
                if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", code) and n not in old:
                    found.append(f"{path.name}:{n}: {name} (use {instead})")
    assert not found, "deprecated C API:\n" + "\n".join(found)


# ---------------------------------------------------------------------------
# create_task: which keywords it takes, what it passes to a task factory and
# to Task, how it names the task, and eager tasks (3.12+).  All changed
# between 3.11, 3.12, 3.13's releases and 3.14; each test runs one scenario
# on flaskasync's loop and on this interpreter's asyncio loop and compares.


def _on_both(scenario):
    """scenario(loop) -> outcome, run on a fresh loop of each kind."""
    out = {}
    for kind, factory in (("asyncio", asyncio.new_event_loop), ("flaskasync", flaskasync.new_event_loop)):
        lp = factory()
        try:
            out[kind] = scenario(lp)
        finally:
            lp.run_until_complete(lp.shutdown_asyncgens())
            lp.close()
    return out["flaskasync"], out["asyncio"]


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001
        return ("raised", type(e).__name__)


async def _named():
    # The name the task has when it first runs (gh-128308: an eager task's
    # name used to be set after its first step).
    return asyncio.current_task().get_name()


def test_create_task_with_a_factory_taking_kwargs():
    def scenario(lp):
        seen = []

        def factory(loop, coro, **kwargs):
            seen.append(sorted(kwargs))
            return asyncio.Task(coro, loop=loop, **kwargs)

        lp.set_task_factory(factory)
        assert lp.get_task_factory() is factory
        ctx = __import__("contextvars").copy_context()
        tasks = [
            lp.create_task(_named()),
            lp.create_task(_named(), name="n"),
            lp.create_task(_named(), context=ctx),
            lp.create_task(_named(), name="m", context=ctx),
        ]
        first = lp.run_until_complete(asyncio.gather(*tasks))
        # Unnamed tasks get Task-<n>: compare the shape, not the counter.
        strip = lambda s: "Task-N" if s.startswith("Task-") else s  # noqa: E731
        return seen, [strip(n) for n in first], [strip(t.get_name()) for t in tasks]

    assert _on_both(scenario)[0] == _on_both(scenario)[1]


def test_create_task_with_a_two_argument_factory():
    def scenario(lp):
        lp.set_task_factory(lambda loop, coro: asyncio.Task(coro, loop=loop))

        def make():
            t = lp.create_task(_named(), name="x")
            return lp.run_until_complete(t), t.get_name()

        out = _outcome(make)
        lp.run_until_complete(asyncio.sleep(0))
        return out

    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)  # a refused coroutine
        fa, ref = _on_both(scenario)
    assert fa == ref


def test_create_task_unknown_keyword():
    """eager_start= is a create_task keyword from 3.14 on; before, a TypeError."""

    def scenario(lp):
        ran = []

        async def coro():
            ran.append("started")
            await asyncio.sleep(0)
            return "done"

        async def main():
            try:
                t = lp.create_task(coro(), eager_start=True)
            except TypeError:
                return ("TypeError", list(ran))
            early = list(ran)  # an eager task has run its first step already
            return ("ok", early, await t)

        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore", RuntimeWarning)
            return lp.run_until_complete(main())

    fa, ref = _on_both(scenario)
    assert fa == ref


needs_eager = pytest.mark.skipif(
    not hasattr(asyncio, "eager_task_factory"), reason="eager tasks are new in Python 3.12"
)


@needs_eager
def test_eager_task_factory():
    def scenario(lp):
        lp.set_task_factory(asyncio.eager_task_factory)
        log = []

        async def quick(i):
            log.append(("quick", i))
            return i

        async def slow(i):
            log.append(("slow start", i))
            await asyncio.sleep(0)
            log.append(("slow end", i))
            return i

        async def main():
            me = asyncio.current_task()
            q = lp.create_task(quick(1))
            done_at_once = q.done()  # finished inside create_task
            s = asyncio.create_task(slow(2), name="s")
            log.append(("after create", s.done()))
            async with asyncio.TaskGroup() as tg:
                g = tg.create_task(quick(3))
            gathered = await flaskasync.gather(quick(4), slow(5))
            assert asyncio.current_task() is me
            return done_at_once, await q, await s, g.result(), gathered, s.get_name()

        return lp.run_until_complete(main()), log

    fa, ref = _on_both(scenario)
    assert fa == ref


@needs_eager
def test_eager_task_name_and_current_task():
    def scenario(lp):
        lp.set_task_factory(asyncio.eager_task_factory)

        async def inner():
            name = asyncio.current_task().get_name()
            # 3.12/3.13 name an eager task after its first step (gh-128308).
            name = "Task-N" if name.startswith("Task-") else name
            return name, asyncio.current_task() in asyncio.all_tasks()

        async def main():
            t = asyncio.create_task(inner(), name="eager-one")
            return await t, t.get_name()

        return lp.run_until_complete(main())

    fa, ref = _on_both(scenario)
    assert fa == ref


@needs_eager
def test_task_constructed_with_eager_start():
    def scenario(lp):
        async def inner(log):
            log.append(asyncio.current_task() is not None)
            await asyncio.sleep(0)
            return "r"

        async def main():
            log = []
            t = asyncio.Task(inner(log), loop=lp, eager_start=True)
            started = list(log)
            return started, await t

        return lp.run_until_complete(main())

    fa, ref = _on_both(scenario)
    assert fa == ref


@needs_eager
def test_run_with_an_eager_task_factory_on_the_app_loop():
    lp = flaskasync.get_loop()
    previous = lp.get_task_factory()
    lp.set_task_factory(asyncio.eager_task_factory)
    try:
        log = []

        async def quick():
            log.append(("quick", asyncio.current_task() is not None))
            return "quick"

        async def slow():
            log.append(("slow", asyncio.current_task() is not None))
            await asyncio.sleep(0.001)
            return "slow"

        assert flaskasync.run(quick()) == "quick"
        assert flaskasync.run(slow(), timeout=5) == "slow"
        async def both():
            return await flaskasync.gather(quick(), slow())

        assert flaskasync.run(both(), timeout=5) == ["quick", "slow"]
        assert log == [("quick", True), ("slow", True)] * 2
    finally:
        lp.set_task_factory(previous)


# ---------------------------------------------------------------------------
# A callback's arguments in "Exception in callback ..." and Handle repr():
# 3.13 shows them only in debug mode (they may hold secrets).


def _boom(*args):
    raise ValueError("boom")


@pytest.mark.parametrize("debug", [False, True], ids=["normal", "debug"])
def test_callback_formatting_follows_asyncio(debug):
    import re

    def scenario(lp):
        lp.set_debug(debug)
        messages = []
        lp.set_exception_handler(lambda _loop, ctx: messages.append(ctx["message"]))
        h = lp.call_soon(_boom, 1, "two")
        text = repr(h)
        lp.run_until_complete(asyncio.sleep(0))
        # Addresses and source locations differ between runs, not versions.
        strip = lambda s: re.sub(r" at 0x[0-9a-f]+| at /\S+| created at \S+|>$", "", s)  # noqa: E731
        return strip(messages[0]), strip(text).split()[:2]

    fa, ref = _on_both(scenario)
    assert fa == ref


def test_version_conditions_live_in_fa_h():
    """Every difference between Python versions is bridged in the headers
    (csrc/fa.h, csrc/util.h), never in a .c file."""
    found = [
        f"{p.name}:{n}"
        for p in sorted(CSRC.glob("*.c"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "PY_VERSION_HEX" in line
    ]
    assert not found, f"version tests outside the headers: {found}"


def test_gather_call_graph_bookkeeping_path():
    """3.14's gather records each pending child as awaited by the current
    task and discards it when the child is done.  flaskasync.gather does
    that when asyncio.futures has the two functions; on an older Python
    the path is exercised with recording stand-ins, installed before
    flaskasync is imported (in a subprocess)."""
    import subprocess
    import textwrap

    code = textwrap.dedent('''
        import asyncio, asyncio.futures, json, sys
        calls = []
        if not hasattr(asyncio.futures, "future_add_to_awaited_by"):
            asyncio.futures.future_add_to_awaited_by = lambda f, w: calls.append(("add", f, w))
            asyncio.futures.future_discard_from_awaited_by = lambda f, w: calls.append(("discard", f, w))
            stand_ins = True
        else:
            stand_ins = False
        import flaskasync

        async def child(i):
            await asyncio.sleep(0)
            return i

        async def main():
            me = asyncio.current_task()
            done = asyncio.get_running_loop().create_future()
            done.set_result("d")
            t1, t2 = asyncio.ensure_future(child(1)), asyncio.ensure_future(child(2))
            res = await flaskasync.gather(t1, t2, done)
            adds = [c[2] is me for c in calls if c[0] == "add"]
            discards = [c[2] is me for c in calls if c[0] == "discard"]
            return res, adds, discards

        loop = flaskasync.new_event_loop()
        res, adds, discards = loop.run_until_complete(main())
        loop.close()
        print(json.dumps({"stand_ins": stand_ins, "res": res, "adds": adds, "discards": discards}))
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = __import__("json").loads(out.stdout)
    assert got["res"] == [1, 2, "d"]
    if got["stand_ins"]:
        # Each pending child is added once (before 3.12 the finished one is
        # pending too: its callback comes later); every child is discarded
        # when its callback runs, as asyncio's does.
        pending = 2 if sys.version_info >= (3, 12) else 3
        assert got["adds"] == [True] * pending
        assert got["discards"] == [True, True, True]
