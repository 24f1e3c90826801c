"""fd watchers, signal handlers, executors and async generators."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import os
import signal
import socket
import threading
import time

import pytest



# Helpers are defined here, not imported from conftest: another conftest.py
# in a subdirectory would shadow the module name "conftest".
def run_once(loop):
    """Run exactly one iteration of the loop: the callbacks ready now."""
    loop.call_soon(loop.stop)
    loop.run_forever()


def run_briefly(loop, n=5):
    for _ in range(n):
        run_once(loop)

var = contextvars.ContextVar("var", default="unset")


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _run_until(loop, predicate, timeout=2.0):
    """Run the loop until predicate() is true (fail after timeout)."""

    async def wait():
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.001)

    loop.run_until_complete(wait())


# ------------------------------------------------------------- readers


def test_add_reader_called_with_args(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable(tag, extra):
        got.append((tag, extra, a.recv(100)))

    assert loop.add_reader(a.fileno(), on_readable, "tag", 7) is None
    b.send(b"hello")
    _run_until(loop, lambda: got)
    assert got == [("tag", 7, b"hello")]
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "_add_reader", "_add_writer"])
def test_add_io_arguments(loop, sockpair, method):
    # fd, callback, then the callback's own positional arguments; both
    # required.
    a, b = sockpair
    add = getattr(loop, method)
    remove = getattr(loop, method.replace("add", "remove"))
    with pytest.raises(TypeError):
        add()
    with pytest.raises(TypeError):
        add(a.fileno())
    got = []
    add(a.fileno(), lambda *args: got.append(args), "tag", 7, None)
    add(a.fileno(), lambda *args: got.append(args), "tag", 7, None)  # replaces
    if "reader" in method:
        b.send(b"x")
    _run_until(loop, lambda: got)
    assert got[0] == ("tag", 7, None)
    remove(a.fileno())
    got.clear()
    add(a.fileno(), lambda *args: got.append(args))
    _run_until(loop, lambda: got)
    assert got[0] == ()
    remove(a.fileno())


def test_reader_not_called_without_data(loop, sockpair):
    a, b = sockpair
    got = []
    loop.add_reader(a.fileno(), got.append, 1)
    loop.run_until_complete(asyncio.sleep(0.02))
    assert got == []
    loop.remove_reader(a.fileno())


def test_reader_is_level_triggered(loop, sockpair):
    a, b = sockpair
    count = [0]

    def on_readable():
        count[0] += 1  # does not consume the data

    loop.add_reader(a.fileno(), on_readable)
    b.send(b"x")
    _run_until(loop, lambda: count[0] >= 1)
    before = count[0]
    run_briefly(loop, 3)
    assert count[0] == before + 3
    loop.remove_reader(a.fileno())
    run_briefly(loop, 2)
    assert count[0] == before + 3


def test_reader_removed_by_another_readers_callback_does_not_run(loop):
    # Both fds are ready in the same iteration; whichever reader runs first
    # removes the other, whose queued callback must then not run (asyncio
    # cancels the handle it already put in the ready queue).
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        fds = [a.fileno() for a, _ in pairs]
        ran = []

        def on_readable(i):
            ran.append(i)
            loop.remove_reader(fds[1 - i])

        for i, (a, b) in enumerate(pairs):
            a.setblocking(False)
            b.send(b"x")
            loop.add_reader(fds[i], on_readable, i)
        run_once(loop)
        assert len(ran) == 1
        run_briefly(loop, 3)
        # The survivor keeps running (its data is unread), the other never.
        assert ran == [ran[0]] * 4
        loop.remove_reader(fds[ran[0]])
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_reader_woken_by_hangup_alone(loop):
    """A pipe's read end whose writer closed reports a hang-up and no data
    (EPOLLHUP without EPOLLIN): the reader runs, and reads EOF, as with
    asyncio's selector, which wakes the reader for any event but EPOLLOUT."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    got = []

    def on_readable():
        got.append(os.read(r, 100))
        loop.remove_reader(r)
        loop.stop()

    try:
        loop.add_reader(r, on_readable)
        loop.call_soon(os.close, w)
        loop.call_later(5, loop.stop)
        loop.run_forever()
        assert got == [b""]
    finally:
        loop.remove_reader(r)
        os.close(r)


def test_add_reader_replaces_previous(loop, sockpair):
    a, b = sockpair
    got = []
    loop.add_reader(a.fileno(), lambda: got.append(("first", a.recv(10))))
    loop.add_reader(a.fileno(), lambda: got.append(("second", a.recv(10))))
    b.send(b"data")
    _run_until(loop, lambda: got)
    run_briefly(loop, 2)
    assert got == [("second", b"data")]
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_add_reader_accepts_file_object(loop, sockpair):
    a, b = sockpair
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(10)))
    b.send(b"obj")
    _run_until(loop, lambda: got)
    assert got == [b"obj"]
    assert loop.remove_reader(a) is True


def test_remove_reader_then_add_again(loop, sockpair):
    a, b = sockpair
    got = []
    for i in range(5):
        loop.add_reader(a.fileno(), lambda i=i: got.append((i, a.recv(10))))
        b.send(b"%d" % i)
        _run_until(loop, lambda: len(got) == i + 1)
        assert loop.remove_reader(a.fileno()) is True
        run_once(loop)
    assert got == [(i, b"%d" % i) for i in range(5)]


def test_reader_on_closed_loop(loop, sockpair):
    a, b = sockpair
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_reader(a.fileno(), lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_writer(a.fileno(), lambda: None)
    assert loop.remove_reader(a.fileno()) is False
    assert loop.remove_writer(a.fileno()) is False


def test_close_removes_watchers(loop, sockpair):
    a, b = sockpair
    got = []
    loop.add_reader(a.fileno(), got.append, 1)
    loop.add_writer(b.fileno(), got.append, 2)
    loop.close()
    assert got == []


# ------------------------------------------------------------- writers


def test_add_writer_called_with_args(loop, sockpair):
    a, b = sockpair
    got = []

    def on_writable(tag):
        got.append(tag)
        loop.remove_writer(a.fileno())

    assert loop.add_writer(a.fileno(), on_writable, "w") is None
    _run_until(loop, lambda: got)
    run_briefly(loop, 2)
    assert got == ["w"]
    assert loop.remove_writer(a.fileno()) is False


def test_add_writer_replaces_previous(loop, sockpair):
    a, b = sockpair
    got = []
    loop.add_writer(a.fileno(), got.append, "first")
    loop.add_writer(a.fileno(), got.append, "second")
    _run_until(loop, lambda: got)
    assert set(got) == {"second"}
    assert loop.remove_writer(a.fileno()) is True


def test_writer_waits_for_buffer_space(loop, sockpair):
    a, b = sockpair
    # Fill a's send buffer.
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    got = []
    loop.add_writer(a.fileno(), got.append, "writable")
    loop.run_until_complete(asyncio.sleep(0.02))
    assert got == []
    # Drain b: a becomes writable.
    try:
        while True:
            b.recv(1 << 20)
    except BlockingIOError:
        pass
    _run_until(loop, lambda: got)
    assert loop.remove_writer(a.fileno()) is True


def test_reader_and_writer_on_same_fd(loop, sockpair):
    a, b = sockpair
    reads, writes = [], []
    loop.add_reader(a.fileno(), lambda: reads.append(a.recv(10)))
    loop.add_writer(a.fileno(), lambda: writes.append(1))
    _run_until(loop, lambda: writes)
    assert loop.remove_writer(a.fileno()) is True
    b.send(b"r")
    _run_until(loop, lambda: reads)
    assert reads == [b"r"]
    # Writer gone, reader still there.
    n = len(writes)
    b.send(b"s")
    _run_until(loop, lambda: len(reads) == 2)
    assert len(writes) == n
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_writer(a.fileno()) is False


def test_remove_unknown_fd(loop, sockpair):
    a, b = sockpair
    assert loop.remove_reader(a.fileno()) is False
    assert loop.remove_writer(a.fileno()) is False


def test_reader_callback_exception_goes_to_handler(loop, errors, sockpair):
    a, b = sockpair

    def bad():
        a.recv(10)
        raise ValueError("reader")

    loop.add_reader(a.fileno(), bad)
    b.send(b"x")
    _run_until(loop, lambda: errors.contexts)
    loop.remove_reader(a.fileno())
    assert isinstance(errors.contexts[0]["exception"], ValueError)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_invalid_fd_negative(loop, method):
    with pytest.raises(ValueError):
        getattr(loop, method)(-1, lambda: None)


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_invalid_fd_closed(loop, method):
    s = socket.socket()
    fd = s.fileno()
    s.close()
    with pytest.raises(OSError):
        getattr(loop, method)(fd, lambda: None)
    # A failed registration leaves nothing behind.
    assert getattr(loop, method.replace("add", "remove"))(fd) is False


@pytest.mark.parametrize("bad", ["not an fd", object()], ids=["str", "object"])
@pytest.mark.parametrize("method", ["add_reader", "remove_reader"])
def test_invalid_file_object(loop, method, bad):
    # asyncio (selectors) raises ValueError("Invalid file object: ...").
    with pytest.raises(ValueError):
        if method == "add_reader":
            loop.add_reader(bad, lambda: None)
        else:
            loop.remove_reader(bad)


def test_add_reader_non_callable(fa_loop, sockpair):
    # flaskasync only: asyncio accepts anything and fails when the fd is
    # ready; flaskasync rejects a non-callable at once.
    a, b = sockpair
    with pytest.raises(TypeError):
        fa_loop.add_reader(a.fileno(), "not callable")
    with pytest.raises(TypeError):
        fa_loop.add_writer(a.fileno(), None)
    assert fa_loop.remove_reader(a.fileno()) is False


@pytest.mark.parametrize("method", ["add_reader", "remove_reader"])
def test_other_threads_run_while_loop_waits_after_fd_change(loop, sockpair, method):
    # Right after add_reader/remove_reader the loop blocks in its poll; it
    # must not hold the GIL while it waits, or no other thread can run (here:
    # the thread that would wake it up).
    a, b = sockpair
    c, d = socket.socketpair()
    try:
        loop.add_reader(c.fileno(), lambda: None)
        run_once(loop)
        if method == "add_reader":
            loop.add_reader(a.fileno(), lambda: None)
        else:
            loop.remove_reader(c.fileno())
        fut = loop.create_future()
        sent = []

        def worker():
            time.sleep(0.05)
            sent.append(time.monotonic())
            loop.call_soon_threadsafe(fut.set_result, None)

        t = threading.Thread(target=worker)
        failsafe = loop.call_later(1.0, loop.stop)
        t.start()
        try:
            loop.run_until_complete(fut)
            woke = time.monotonic()
        finally:
            failsafe.cancel()
            t.join()
        assert woke - sent[0] < 0.3
    finally:
        loop.remove_reader(a.fileno())
        loop.remove_reader(c.fileno())
        c.close()
        d.close()


# ------------------------------------------------------------- signals


@pytest.fixture
def restore_sigusr1():
    old = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, old)


def test_signal_handler(loop, restore_sigusr1):
    assert threading.current_thread() is threading.main_thread()
    got = []
    fut = loop.create_future()

    def on_signal(*args):
        got.append(args)
        if not fut.done():
            fut.set_result(None)

    loop.add_signal_handler(signal.SIGUSR1, on_signal, "a", 2)
    loop.call_later(0.01, os.kill, os.getpid(), signal.SIGUSR1)
    failsafe = loop.call_later(5, loop.stop)
    loop.run_until_complete(fut)
    failsafe.cancel()
    assert got == [("a", 2)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_wakes_idle_loop(loop, restore_sigusr1):
    # The signal arrives from another thread while the loop waits with no
    # timer due: it must wake the loop.
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, lambda: fut.done() or fut.set_result(time.monotonic()))
    sent = []

    def kill():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGUSR1)

    t = threading.Timer(0.05, kill)
    failsafe = loop.call_later(5, loop.stop)
    t.start()
    got = loop.run_until_complete(fut)
    failsafe.cancel()
    t.join()
    assert got - sent[0] < 0.5
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_replaced(loop, restore_sigusr1):
    got = []
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, got.append, "first")
    loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append("second"), fut.set_result(None)))
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(5, loop.stop)
    loop.run_until_complete(fut)
    assert got == ["second"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_bad_input(loop, restore_sigusr1):
    async def coro_fn():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    with pytest.raises(TypeError):
        loop.add_signal_handler("SIGUSR1", lambda: None)
    with pytest.raises(ValueError):
        loop.add_signal_handler(100000, lambda: None)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGKILL, lambda: None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_close_removes_signal_handlers(loop, restore_sigusr1):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


# ------------------------------------------------------------ executors


def test_run_in_executor_default(loop):
    def work(a, b):
        return a + b, threading.get_ident()

    result, tid = loop.run_until_complete(loop.run_in_executor(None, work, 2, 3))
    assert result == 5
    assert tid != threading.get_ident()


def test_default_executor_threads_are_named_as_asyncios(loop):
    # asyncio's default executor names its threads "asyncio_0", ...; so
    # does the app loop's (the one flaskasync.run and asyncio.to_thread use).
    async def name():
        return await asyncio.to_thread(lambda: threading.current_thread().name)

    assert loop.run_until_complete(name()).startswith("asyncio_")
    loop.run_until_complete(loop.shutdown_default_executor())


def test_app_loop_default_executor_threads_are_named_as_asyncios():
    import flaskasync

    async def name():
        return await asyncio.to_thread(lambda: threading.current_thread().name)

    assert flaskasync.run(name()).startswith("asyncio_")


def test_run_in_executor_exception(loop):
    def fail():
        raise KeyError("in thread")

    with pytest.raises(KeyError):
        loop.run_until_complete(loop.run_in_executor(None, fail))


def test_run_in_executor_explicit(loop):
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="explicit") as ex:
        name = loop.run_until_complete(
            loop.run_in_executor(ex, lambda: threading.current_thread().name)
        )
    assert name.startswith("explicit")


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine")
    loop.set_default_executor(ex)
    name = loop.run_until_complete(
        loop.run_in_executor(None, lambda: threading.current_thread().name)
    )
    assert name.startswith("mine")
    loop.run_until_complete(loop.shutdown_default_executor())
    ex.shutdown()


def test_set_default_executor_type_check(loop):
    with pytest.raises(TypeError):
        loop.set_default_executor(concurrent.futures.ProcessPoolExecutor())


def test_shutdown_default_executor(loop):
    started = threading.Event()
    finished = []

    def work():
        started.set()
        time.sleep(0.05)
        finished.append(1)

    fut = loop.run_in_executor(None, work)
    assert started.wait(2)
    loop.run_until_complete(loop.shutdown_default_executor())
    # Waits for the worker threads.
    assert finished == [1]
    loop.run_until_complete(fut)
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, lambda: None)


def test_shutdown_default_executor_unused(loop):
    loop.run_until_complete(loop.shutdown_default_executor())


def test_to_thread(loop):
    async def main():
        var.set("to_thread ctx")
        return await asyncio.to_thread(lambda x: (x * 2, var.get(), threading.get_ident()), 21)

    value, seen, tid = loop.run_until_complete(main())
    assert value == 42
    assert seen == "to_thread ctx"
    assert tid != threading.get_ident()


def test_run_in_executor_many(loop):
    async def main():
        return await asyncio.gather(*[loop.run_in_executor(None, pow, i, 2) for i in range(50)])

    assert loop.run_until_complete(main()) == [i * i for i in range(50)]


# ----------------------------------------------------- async generators


def test_async_generator_finalized_on_loop(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append(("finally", asyncio.get_running_loop() is loop))

    async def main():
        g = agen()
        async for _ in g:
            break
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert events == [("finally", True)]


def test_shutdown_asyncgens(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("closed")

    gens = []

    async def main():
        g = agen()
        gens.append(g)
        await g.__anext__()

    loop.run_until_complete(main())
    assert events == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == ["closed"]


def test_shutdown_asyncgens_reports_errors(loop, errors):
    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("in aclose")

    gens = []

    async def main():
        g = agen()
        gens.append(g)
        await g.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(errors.contexts) == 1
    assert "an error occurred during closing of asynchronous generator" in errors.messages[0]
    assert isinstance(errors.contexts[0]["exception"], ValueError)


def test_asyncgen_after_shutdown_warns(loop):
    async def agen():
        yield 1

    loop.run_until_complete(loop.shutdown_asyncgens())

    async def main():
        g = agen()
        await g.__anext__()
        await g.aclose()

    with pytest.warns(ResourceWarning, match="shutdown_asyncgens"):
        loop.run_until_complete(main())




def _wakeup_fd():
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture
def restore_wakeup_fd():
    old = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(old)
    yield
    signal.set_wakeup_fd(old)


def test_signal_handler_removed_in_the_run_leaves_no_wakeup_fd(
        loop_factory, restore_sigusr1, restore_wakeup_fd):
    # A service's usual main(): a handler added at the top, removed in
    # finally.  Afterwards the wakeup fd is -1, as asyncio leaves it, never
    # the loop's (closed) signal pipe, into which every later signal would
    # write, or into the file that reuses its number.
    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        try:
            await asyncio.sleep(0.05)  # the loop blocks in its poll
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    signal.set_wakeup_fd(-1)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
        assert _wakeup_fd() == -1
    assert _wakeup_fd() == -1


def test_signal_handler_added_in_the_run_keeps_working_between_runs(
        loop, restore_sigusr1, restore_wakeup_fd):
    # Added after the loop has blocked once; the signal arrives between two
    # runs and is handled by the next one, as on asyncio's loop.
    got = []

    async def add():
        await asyncio.sleep(0.01)
        loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")

    loop.run_until_complete(add())
    fd = _wakeup_fd()
    assert fd >= 0 and _is_open(fd)
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.run_until_complete(asyncio.sleep(0.1))
    assert got == ["usr1"]
    loop.remove_signal_handler(signal.SIGUSR1)
    assert _wakeup_fd() == -1


def test_loop_close_leaves_no_wakeup_fd_on_its_pipe(loop_factory, restore_sigusr1,
                                                    restore_wakeup_fd):
    # Closed with a handler still installed: the wakeup fd is reset before
    # the pipe goes.
    signal.set_wakeup_fd(-1)
    lp = loop_factory()
    lp.add_signal_handler(signal.SIGUSR1, lambda: None)
    lp.run_until_complete(asyncio.sleep(0.01))
    lp.close()
    assert _wakeup_fd() == -1
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_a_wakeup_fd_set_by_the_application_in_the_run_stays(
        loop, restore_wakeup_fd):
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        async def main():
            await asyncio.sleep(0.01)  # the loop blocks once
            signal.set_wakeup_fd(w)
            await asyncio.sleep(0.01)

        signal.set_wakeup_fd(-1)
        loop.run_until_complete(main())
        assert _wakeup_fd() == w
    finally:
        signal.set_wakeup_fd(-1)
        os.close(r)
        os.close(w)
