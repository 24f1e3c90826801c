"""Pipe transports and subprocesses on flaskasync's loop and asyncio's:
connect_read_pipe / connect_write_pipe on os.pipe() and socketpairs (EOF,
a reader that goes away, flow control, extra info), subprocess_exec /
subprocess_shell through asyncio.create_subprocess_* and directly with a
SubprocessProtocol."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest


# Helpers are defined here, not imported from conftest.


def run(loop, coro, timeout=10):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(predicate, interval=0.002):
    while not predicate():
        await asyncio.sleep(interval)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


PIPE = asyncio.subprocess.PIPE
PY = sys.executable


class ReadProto(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost_calls = []
        self.made = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        assert type(data) is bytes
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)


class WriteProto(asyncio.BaseProtocol):
    def __init__(self, loop):
        self.events = []
        self.flow = []
        self.transport = None
        self.lost_calls = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.flow.append("pause")

    def resume_writing(self):
        self.flow.append("resume")


def read_all_nonblocking(fd):
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


# ------------------------------------------------------------- read pipe


def test_read_pipe(loop):
    rfd, wfd = os.pipe()
    rfile = os.fdopen(rfd, "rb", buffering=0)

    async def main():
        tr, p = await loop.connect_read_pipe(lambda: ReadProto(loop), rfile)
        assert p.events == ["made"]
        assert p.transport is tr
        assert tr.get_protocol() is p
        assert tr.get_extra_info("pipe") is rfile
        assert tr.get_extra_info("no such key", "d") == "d"
        assert os.get_blocking(rfd) is False  # made non-blocking
        os.write(wfd, b"through ")
        os.write(wfd, b"the pipe")
        await until(lambda: len(p.data) == 16)
        assert bytes(p.data) == b"through the pipe"
        os.close(wfd)
        assert await p.lost is None
        assert p.events == ["made", "data", "eof", "lost"]
        assert p.lost_calls == [None]
        assert tr.is_closing()
        assert rfile.closed  # the transport closed the pipe

    run(loop, main())


def test_read_pipe_pause_resume(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, p = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(rfd, "rb", 0))
        assert tr.is_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        os.write(wfd, b"held")
        await asyncio.sleep(0.05)
        assert p.data == b""
        tr.resume_reading()
        assert tr.is_reading()
        await until(lambda: len(p.data) == 4)
        assert bytes(p.data) == b"held"
        tr.close()
        assert tr.is_closing()
        assert not tr.is_reading()
        assert await p.lost is None
        assert p.events == ["made", "data", "lost"]  # no eof_received on close()
        os.close(wfd)

    run(loop, main())


def test_read_pipe_large(loop):
    rfd, wfd = os.pipe()
    data = os.urandom(4 * 1024 * 1024)

    def writer():
        with os.fdopen(wfd, "wb") as f:
            f.write(data)

    async def main():
        tr, p = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(rfd, "rb", 0))
        fut = loop.run_in_executor(None, writer)
        assert await p.lost is None
        await fut
        assert bytes(p.data) == data

    run(loop, main(), timeout=30)


def test_read_pipe_socketpair(loop):
    a, b = socket.socketpair()

    async def main():
        tr, p = await loop.connect_read_pipe(lambda: ReadProto(loop), a)
        assert tr.get_extra_info("pipe") is a
        b.sendall(b"socket as pipe")
        await until(lambda: len(p.data) == 14)
        b.shutdown(socket.SHUT_WR)
        assert await p.lost is None
        assert p.events == ["made", "data", "eof", "lost"]
        assert a.fileno() == -1
        b.close()

    run(loop, main())


def test_read_pipe_abort_and_close_once(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, p = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(rfd, "rb", 0))
        tr.close()
        tr.close()
        assert await p.lost is None
        await asyncio.sleep(0.01)
        assert p.lost_calls == [None]
        os.close(wfd)

    run(loop, main())


def test_read_pipe_regular_file_rejected(loop):
    async def main():
        with tempfile.TemporaryFile() as f:
            with pytest.raises(ValueError) as info:
                await loop.connect_read_pipe(lambda: ReadProto(loop), f)
            assert str(info.value) == "Pipe transport is for pipes/sockets only."
            with pytest.raises(ValueError) as info:
                await loop.connect_write_pipe(lambda: WriteProto(loop), f)
            assert str(info.value) == "Pipe transport is only for pipes, sockets and character devices"
            assert not f.closed

    run(loop, main())


# ------------------------------------------------------------ write pipe


def test_write_pipe(loop):
    rfd, wfd = os.pipe()
    wfile = os.fdopen(wfd, "wb", buffering=0)

    async def main():
        tr, p = await loop.connect_write_pipe(lambda: WriteProto(loop), wfile)
        assert p.events == ["made"]
        assert tr.get_extra_info("pipe") is wfile
        assert os.get_blocking(wfd) is False
        assert tr.can_write_eof() is True
        assert tr.get_write_buffer_size() == 0
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        tr.write(b"bytes,")
        tr.write(bytearray(b"bytearray,"))
        tr.write(memoryview(b"memoryview"))
        tr.writelines([b",a", b",b"])
        tr.write(b"")
        await asyncio.sleep(0.01)
        assert os.read(rfd, 100) == b"bytes,bytearray,memoryview,a,b"
        tr.close()
        assert tr.is_closing()
        assert await p.lost is None
        assert p.events == ["made", "lost"]
        assert wfile.closed
        assert os.read(rfd, 100) == b""  # EOF for the reader
        tr.write(b"after close")  # ignored

    try:
        run(loop, main())
    finally:
        os.close(rfd)


def test_write_pipe_write_eof(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, p = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(wfd, "wb", 0))
        tr.write(b"last words")
        tr.write_eof()
        assert tr.is_closing()
        assert await p.lost is None
        assert os.read(rfd, 100) == b"last words"
        assert os.read(rfd, 100) == b""

    try:
        run(loop, main())
    finally:
        os.close(rfd)


def test_write_pipe_close_flushes_buffer(loop):
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    size = 2 * 1024 * 1024
    data = os.urandom(size)

    async def main():
        tr, p = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(wfd, "wb", 0))
        tr.write(data)
        assert tr.get_write_buffer_size() > 0  # the pipe holds only 64 KiB
        assert p.flow == ["pause"]
        tr.close()
        await asyncio.sleep(0.02)
        assert not p.lost.done()
        got = bytearray()
        while True:
            chunk = read_all_nonblocking(rfd)
            got += chunk
            if len(got) == size:
                break
            await asyncio.sleep(0.001)
        assert await p.lost is None
        assert bytes(got) == data
        assert p.flow == ["pause", "resume"]
        assert os.read(rfd, 10) == b""

    try:
        run(loop, main(), timeout=30)
    finally:
        os.close(rfd)


def test_write_pipe_flow_control(loop):
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)

    async def main():
        tr, p = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(wfd, "wb", 0))
        tr.set_write_buffer_limits(high=1000, low=100)
        assert tr.get_write_buffer_limits() == (100, 1000)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=1, low=2)
        tr.write(b"a" * (1024 * 1024))
        assert p.flow == ["pause"]
        await asyncio.sleep(0.02)
        assert p.flow == ["pause"]
        got = 0
        while got < 1024 * 1024:
            got += len(read_all_nonblocking(rfd))
            await asyncio.sleep(0.001)
        await until(lambda: tr.get_write_buffer_size() == 0)
        assert p.flow == ["pause", "resume"]
        tr.close()
        await p.lost

    try:
        run(loop, main(), timeout=30)
    finally:
        os.close(rfd)


def test_write_pipe_reader_closed_with_buffered_data(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, p = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(wfd, "wb", 0))
        tr.write(b"x" * (1024 * 1024))
        assert tr.get_write_buffer_size() > 0
        os.close(rfd)
        exc = await p.lost
        assert isinstance(exc, BrokenPipeError)
        assert p.lost_calls == [exc]
        assert tr.is_closing()
        assert tr.get_write_buffer_size() == 0

    run(loop, main())


def test_write_pipe_reader_closed_idle(loop):
    # No data buffered: the reader going away gives connection_lost(None).
    rfd, wfd = os.pipe()

    async def main():
        tr, p = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(wfd, "wb", 0))
        tr.write(b"fits in the pipe")
        assert tr.get_write_buffer_size() == 0
        os.close(rfd)
        assert await p.lost is None
        assert tr.is_closing()
        tr.write(b"ignored")  # no exception

    run(loop, main())


def test_write_pipe_socketpair_peer_closed(loop):
    a, b = socket.socketpair()

    async def main():
        tr, p = await loop.connect_write_pipe(lambda: WriteProto(loop), a)
        assert tr.get_extra_info("pipe") is a
        tr.write(b"to socket")
        await asyncio.sleep(0.01)
        assert b.recv(100) == b"to socket"
        b.close()
        assert await p.lost is None
        assert a.fileno() == -1

    run(loop, main())


def test_write_pipe_abort(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, p = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(wfd, "wb", 0))
        tr.write(b"y" * (1024 * 1024))
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        assert tr.get_write_buffer_size() == 0
        assert await p.lost is None
        assert p.events == ["made", "lost"]
        got = len(read_all_nonblocking(rfd))
        assert got < 1024 * 1024

    os.set_blocking(rfd, False)
    try:
        run(loop, main())
    finally:
        os.close(rfd)


def test_pipes_no_fd_leak(loop):
    async def one():
        rfd, wfd = os.pipe()
        rt, rp = await loop.connect_read_pipe(lambda: ReadProto(loop), os.fdopen(rfd, "rb", 0))
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), os.fdopen(wfd, "wb", 0))
        wt.write(b"z")
        await until(lambda: rp.data == b"z")
        wt.close()
        await wp.lost
        await rp.lost

    async def main():
        await one()
        before = fd_count()
        for _ in range(100):
            await one()
        assert fd_count() == before

    run(loop, main(), timeout=30)


# ---------------------------------------------------- asyncio subprocesses


def test_subprocess_exec_stdout(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(3)",
            stdout=PIPE, stderr=PIPE)
        assert proc.pid > 0
        assert proc.returncode is None
        out, err = await proc.communicate()
        assert (out, err) == (b"out", b"err")
        assert proc.returncode == 3
        assert await proc.wait() == 3

    run(loop, main())


def test_subprocess_exec_stderr_to_stdout(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", "echo one; echo two >&2; echo three",
            stdout=PIPE, stderr=subprocess.STDOUT)
        assert proc.stderr is None
        out, err = await proc.communicate()
        assert out == b"one\ntwo\nthree\n"
        assert err is None

    run(loop, main())


def test_subprocess_stdin_communicate(loop):
    data = os.urandom(1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec("/bin/cat", stdin=PIPE, stdout=PIPE)
        out, err = await proc.communicate(data)
        assert out == data
        assert err is None
        assert proc.returncode == 0

    run(loop, main(), timeout=30)


def test_subprocess_stdin_stream(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-u", "-c",
            "import sys\nfor line in sys.stdin: print(line.strip().upper(), flush=True)",
            stdin=PIPE, stdout=PIPE)
        for word in (b"alpha", b"beta"):
            proc.stdin.write(word + b"\n")
            await proc.stdin.drain()
            assert await proc.stdout.readline() == word.upper() + b"\n"
        proc.stdin.close()
        await proc.stdin.wait_closed()
        assert await proc.stdout.read() == b""
        assert await proc.wait() == 0

    run(loop, main())


def test_subprocess_devnull_and_inherited(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "/bin/cat", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        assert proc.stdin is None and proc.stdout is None and proc.stderr is None
        assert await proc.wait() == 0

    run(loop, main())


def test_subprocess_cwd_and_env(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", 'pwd; echo "$FLASKASYNC_TEST_VAR"',
                stdout=PIPE, cwd=d, env={"FLASKASYNC_TEST_VAR": "from-env", "PATH": "/bin:/usr/bin"})
            out, _ = await proc.communicate()
            assert out == os.path.realpath(d).encode() + b"\nfrom-env\n"

    run(loop, main())


def test_subprocess_pass_fds_file(loop):
    async def main():
        with tempfile.TemporaryFile() as f:
            proc = await asyncio.create_subprocess_exec(
                "/bin/echo", "to a file", stdout=f)
            assert await proc.wait() == 0
            f.seek(0)
            assert f.read() == b"to a file\n"

    run(loop, main())


def test_subprocess_terminate(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec("/bin/sleep", "30")
        await asyncio.sleep(0.01)
        proc.terminate()
        assert await proc.wait() == -signal.SIGTERM
        assert proc.returncode == -signal.SIGTERM

    run(loop, main())


def test_subprocess_kill(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec("/bin/sleep", "30", stdout=PIPE)
        proc.kill()
        out, _ = await proc.communicate()
        assert out == b""
        assert proc.returncode == -signal.SIGKILL

    run(loop, main())


def test_subprocess_send_signal(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c",
            "import signal, sys, time\n"
            "signal.signal(signal.SIGUSR1, lambda *a: (print('usr1', flush=True), sys.exit(5)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n",
            stdout=PIPE)
        assert await proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGUSR1)
        assert await proc.stdout.readline() == b"usr1\n"
        assert await proc.wait() == 5

    run(loop, main())


def test_subprocess_signal_after_exit(loop):
    # Python 3.11: once the process has exited and its transport has
    # finished (connection_lost), signalling it raises ProcessLookupError
    # instead of signalling a pid that may have been reused.
    async def main():
        proc = await asyncio.create_subprocess_exec("/bin/true")
        assert await proc.wait() == 0
        await asyncio.sleep(0.05)
        with pytest.raises(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            proc.kill()
        with pytest.raises(ProcessLookupError):
            proc.terminate()

    run(loop, main())


def test_subprocess_wait_waits_for_pipes(loop):
    # Python 3.11: wait() called before the exit returns only when the pipes
    # are closed too (here a grandchild keeps stdout open for 0.3 s).
    async def main():
        # (The shell itself lives 0.05 s so that wait() is called before it
        # exits: a wait() called after the exit returns at once.)
        proc = await asyncio.create_subprocess_shell(
            "(sleep 0.3; echo late) & echo early; sleep 0.05", stdout=PIPE)
        t0 = time.monotonic()
        assert await proc.wait() == 0
        assert time.monotonic() - t0 >= 0.25
        assert await proc.stdout.read() == b"early\nlate\n"

    run(loop, main())


def test_subprocess_many_concurrent(loop):
    n = 20

    async def one(i):
        proc = await asyncio.create_subprocess_exec("/bin/echo", str(i), stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    async def main():
        return await asyncio.gather(*(one(i) for i in range(n)))

    assert run(loop, main(), timeout=30) == [(b"%d\n" % i, 0) for i in range(n)]


def test_subprocess_not_found(loop):
    async def main():
        with pytest.raises(FileNotFoundError):  # warm-up
            await asyncio.create_subprocess_exec("/nonexistent/flaskasync-cmd")
        await asyncio.sleep(0.01)
        before = fd_count()
        with pytest.raises(FileNotFoundError) as info:
            await asyncio.create_subprocess_exec(
                "/nonexistent/flaskasync-cmd", stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert info.value.filename == "/nonexistent/flaskasync-cmd"
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("flaskasync-no-such-command-on-path")
        await asyncio.sleep(0.01)
        assert fd_count() == before  # the pipes were closed

    run(loop, main())


def test_subprocess_not_executable(loop):
    async def main():
        with tempfile.NamedTemporaryFile() as f:
            with pytest.raises(PermissionError):
                await asyncio.create_subprocess_exec(f.name)

    run(loop, main())


def test_subprocess_shell(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo $((6 * 7)); echo err >&2; exit 9", stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate()
        assert (out, err, proc.returncode) == (b"42\n", b"err\n", 9)
        proc = await asyncio.create_subprocess_shell(b"echo bytes command", stdout=PIPE)
        out, _ = await proc.communicate()
        assert out == b"bytes command\n"
        proc = await asyncio.create_subprocess_shell("flaskasync-no-such-command 2>/dev/null")
        assert await proc.wait() == 127

    run(loop, main())


def test_subprocess_argument_errors(loop):
    async def main():
        with pytest.raises(ValueError) as info:
            await asyncio.create_subprocess_shell(["echo", "list"])
        assert str(info.value) == "cmd must be a string"
        for kw, msg in (
            ({"universal_newlines": True}, "universal_newlines must be False"),
            ({"text": True}, "text must be False"),
            ({"bufsize": 1}, "bufsize must be 0"),
            ({"encoding": "utf-8"}, "encoding must be None"),
            ({"errors": "strict"}, "errors must be None"),
        ):
            with pytest.raises(ValueError) as info:
                await asyncio.create_subprocess_exec("/bin/true", **kw)
            assert str(info.value) == msg
            with pytest.raises(ValueError) as info:
                await asyncio.create_subprocess_shell("true", **kw)
            assert str(info.value) == msg
        with pytest.raises(ValueError) as info:
            await loop.subprocess_exec(asyncio.SubprocessProtocol, "/bin/true", shell=True)
        assert str(info.value) == "shell must be False"
        with pytest.raises(ValueError) as info:
            await loop.subprocess_shell(asyncio.SubprocessProtocol, "true", shell=False)
        assert str(info.value) == "shell must be True"

    run(loop, main())


def test_subprocess_stdin_closed_by_child(loop):
    # The child exits without reading.  Writing does not raise; drain()
    # raises ConnectionResetError or returns (asyncio races between the
    # two), and the stdin transport ends up closed.  communicate() swallows
    # the broken pipe.
    async def main():
        proc = await asyncio.create_subprocess_exec("/bin/true", stdin=PIPE)
        assert await proc.wait() == 0
        proc.stdin.write(b"x" * (1024 * 1024))
        try:
            await proc.stdin.drain()
        except ConnectionResetError:
            pass
        await until(lambda: proc.stdin.is_closing())
        proc = await asyncio.create_subprocess_exec("/bin/true", stdin=PIPE, stdout=PIPE)
        out, err = await proc.communicate(b"y" * (1024 * 1024))
        assert (out, err, proc.returncode) == (b"", None, 0)

    run(loop, main())


def test_subprocess_no_fd_leak(loop):
    async def one():
        proc = await asyncio.create_subprocess_exec(
            "/bin/cat", stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate(b"abc")
        assert out == b"abc"

    async def main():
        await one()
        await asyncio.sleep(0.01)
        before = fd_count()
        for _ in range(20):
            await one()
        await asyncio.sleep(0.01)
        assert fd_count() == before

    run(loop, main(), timeout=30)


# ------------------------------------------ loop.subprocess_exec directly


class SubProto(asyncio.SubprocessProtocol):
    def __init__(self, loop):
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.exited = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def pipe_data_received(self, fd, data):
        assert type(data) is bytes
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append("exited")
        self.exited.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def test_subprocess_protocol(loop):
    async def main():
        tr, p = await loop.subprocess_exec(
            lambda: SubProto(loop), PY, "-c",
            "import sys; d = sys.stdin.read(); sys.stdout.write(d.upper()); "
            "sys.stderr.write('E'); sys.exit(4)")
        assert p.transport is tr
        assert p.events == ["made"]
        assert tr.get_pid() > 0
        assert tr.get_returncode() is None
        stdin = tr.get_pipe_transport(0)
        assert hasattr(stdin, "write")
        assert tr.get_pipe_transport(1).is_reading()
        assert tr.get_pipe_transport(2).is_reading()
        assert tr.get_extra_info("subprocess").pid == tr.get_pid()
        stdin.write(b"shout")
        stdin.close()
        assert await p.lost is None
        assert bytes(p.data[1]) == b"SHOUT"
        assert bytes(p.data[2]) == b"E"
        assert tr.get_returncode() == 4
        assert p.events[0] == "made" and p.events[-1] == "lost"
        assert sorted(e for e in p.events if isinstance(e, tuple)) == [
            ("pipe_lost", 0, None), ("pipe_lost", 1, None), ("pipe_lost", 2, None)]
        assert p.events.count("exited") == 1
        tr.close()

    run(loop, main())


def test_subprocess_protocol_shell_without_pipes(loop):
    async def main():
        tr, p = await loop.subprocess_shell(
            lambda: SubProto(loop), "exit 2", stdin=None, stdout=None, stderr=None)
        assert tr.get_pipe_transport(0) is None
        assert tr.get_pipe_transport(1) is None
        assert tr.get_pipe_transport(2) is None
        assert await p.lost is None
        assert p.events == ["made", "exited", "lost"]
        assert tr.get_returncode() == 2
        tr.close()

    run(loop, main())


def test_subprocess_transport_kill_and_close(loop):
    async def main():
        tr, p = await loop.subprocess_exec(lambda: SubProto(loop), "/bin/sleep", "30")
        tr.kill()
        await p.exited
        assert tr.get_returncode() == -signal.SIGKILL
        await p.lost
        tr.close()
        assert tr.is_closing()
        with pytest.raises(ProcessLookupError):
            tr.send_signal(signal.SIGTERM)

        # close() on a running process kills it.
        tr, p = await loop.subprocess_exec(lambda: SubProto(loop), "/bin/sleep", "30")
        pid = tr.get_pid()
        tr.close()
        assert tr.is_closing()
        await asyncio.sleep(0.1)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped by the loop

    run(loop, main())


# ------------------------------------------------ regressions (review)


def test_write_pipe_write_after_close_still_flushes(loop):
    # A write after close() is dropped, but what was buffered before it is
    # still written and the pipe closed: the child sees all of it and EOF.
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; print(len(sys.stdin.buffer.read()))",
            stdin=PIPE, stdout=PIPE)
        proc.stdin.write(b"x" * 300_000)  # more than a pipe holds: buffered
        proc.stdin.close()
        proc.stdin.write(b"late")  # dropped
        out = await asyncio.wait_for(proc.stdout.read(), 10)
        assert out.strip() == b"300000"
        assert await proc.wait() == 0

    run(loop, main(), timeout=20)


def test_read_pipe_data_received_error_keeps_reading(loop):
    # asyncio's pipe transport lets a data_received exception reach the loop
    # ("Exception in callback") and keeps the pipe open.
    handled = []
    loop.set_exception_handler(lambda lp, ctx: handled.append(ctx["message"]))

    class P(asyncio.Protocol):
        def __init__(self):
            self.data = []
            self.lost = loop.create_future()

        def data_received(self, data):
            self.data.append(data)
            if data == b"boom":
                raise ValueError("boom")

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        r, w = os.pipe()
        rf = os.fdopen(r, "rb", buffering=0)
        tr, p = await loop.connect_read_pipe(P, rf)
        os.write(w, b"boom")
        await asyncio.sleep(0.05)
        os.write(w, b"more")
        await asyncio.sleep(0.05)
        os.close(w)
        assert await p.lost is None
        assert p.data == [b"boom", b"more"]
        assert len(handled) == 1 and handled[0].startswith("Exception in callback")

    run(loop, main())


def test_child_running_at_close_is_reaped_not_left_a_zombie(fa_loop, caplog):
    # A subprocess still running when its loop closes: its exit goes
    # unreported, but it is reaped once it exits (asyncio 3.11's threaded
    # child watcher does the same; 3.12+'s pidfd watcher leaves a zombie).
    proc = fa_loop.run_until_complete(asyncio.create_subprocess_exec("sleep", "0.2"))
    pid = proc.pid
    fa_loop.close()
    message = f"that handles pid {pid} is closed"
    deadline = time.monotonic() + 5
    state = "?"
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "reaped"
            if message in caplog.text:  # logged right after the reaping
                break
        time.sleep(0.05)
    assert state == "reaped"
    assert message in caplog.text


def _repr_state(tr):
    """repr(transport) after the class name, with the fd number as N."""
    import re

    text = repr(tr)
    assert text.startswith("<") and text.endswith(">")
    return re.sub(r"fd=-?\d+", "fd=N", text[1:-1].split(" ", 1)[1])


def test_pipe_transport_reprs_say_open_closing_closed_as_asyncio(loop):
    # asyncio's _UnixReadPipeTransport / _UnixWritePipeTransport: "polling"
    # or "idle" (and the write buffer size) while open, "closed" after.
    async def main():
        lost = [asyncio.Event(), asyncio.Event()]

        def proto(i):
            class Lost(asyncio.Protocol):
                def connection_lost(self, exc):
                    lost[i].set()

            return Lost

        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        rt, _ = await loop.connect_read_pipe(proto(0), os.fdopen(r1, "rb", 0))
        wt, _ = await loop.connect_write_pipe(proto(1), os.fdopen(w2, "wb", 0))
        seen = [_repr_state(rt), _repr_state(wt)]
        rt.pause_reading()
        seen.append(_repr_state(rt))
        rt.close()
        wt.close()
        seen += [_repr_state(rt), _repr_state(wt)]
        await lost[0].wait()
        await lost[1].wait()
        seen += [_repr_state(rt), _repr_state(wt)]
        os.close(w1)
        os.close(r2)
        return seen

    assert run(loop, main()) == [
        "fd=N polling",
        "fd=N idle bufsize=0",
        "fd=N idle",
        "closing fd=N idle",
        "closing fd=N idle bufsize=0",
        "closed fd=N closed",
        "closed fd=N closed",
    ]
