#!/usr/bin/env python
"""Network benchmarks of flaskasync.Loop against asyncio's loop and uvloop.

Two workloads, each run on three loops in ONE process and ONE run:
``flaskasync.Loop()``, ``asyncio.new_event_loop()`` (the selector loop) and
``uvloop.new_event_loop()``.

1. **TCP echo** over 127.0.0.1, messages of 1 KiB, 10 KiB and 100 KiB, one
   connection, one message in flight (a round trip = the client sends one
   message and receives all of it back), in three API styles:

   - ``streams``: ``asyncio.start_server`` / ``asyncio.open_connection``; both
     ends do ``readexactly(size)`` then ``write()`` + ``await drain()``;
   - ``protocol``: an ``asyncio.Protocol`` server that echoes in
     ``data_received``, and a Protocol client that counts the echoed bytes and
     sends the next message from ``data_received`` (no coroutine per round
     trip: this is the transport/callback path alone);
   - ``sock``: raw non-blocking sockets with ``sock_accept``, ``sock_connect``,
     ``sock_recv`` and ``sock_sendall`` (``TCP_NODELAY`` set on both ends).

   **Server and client run on the same loop, in the same process.**  That is
   the choice that measures the loop best on a 2-core machine: every
   microsecond of a round trip is then that loop's work (both ends' reads,
   writes, polls and callbacks) plus the kernel's loopback, on one core, with
   no cross-process wake-ups.  A server in a second process makes each round
   trip two cross-CPU wake-ups whose latency depends on where the scheduler
   puts the two processes (and on the other jobs on the machine), which is
   noisier and measures the kernel's scheduler more than the loop.

   Reported: round trips per second, and MiB/s = message size × round
   trips/s (the payload the client sends; the same amount comes back).

2. **HTTP client fan-out**: a "view-like" coroutine issues 10 concurrent GETs
   with one shared ``httpx.AsyncClient`` (keep-alive pool, created on the loop
   under test) and gathers them with ``asyncio.gather``, checking the status
   and parsing the small JSON bodies; reported as fan-outs per second (and
   the requests/s that means).  The server is a tiny keep-alive HTTP/1.1
   responder (an ``asyncio.Protocol`` on uvloop when available) that this
   script starts in a subprocess.  To show that the server is not the
   bottleneck the script (a) records the server process's CPU use during the
   timed fan-outs of every loop, and (b) afterwards drives it with a lean
   raw-socket client of the same shape (10 keep-alive connections, one request
   in flight on each) and reports the rate it sustains against the fastest
   httpx rate.

Timing is done as in bench_core.py: for every (case, loop) pair the number of
round trips (or fan-outs) per batch is calibrated so that one batch takes
about ``--target-time`` seconds, one more warm-up batch runs, then the repeats
(each times one whole batch with ``time.perf_counter`` inside the coroutine)
are interleaved round-robin across the three loops, ``gc.collect()`` runs
before each batch, and the reported time per operation is the median (the
best is recorded too).  Ratios are flaskasync's throughput divided by the
other loop's (above 1 = flaskasync faster).

glibc's malloc is left as users run it.  Its dynamic mmap threshold makes
the large-message cases of loops that allocate a 256 KiB buffer per read
(asyncio; uvloop in sock mode) depend on what the process did earlier (up
to 2× apart: one mmap + munmap per read in the slow state).
``--steady-malloc`` fixes the thresholds with ``mallopt`` (1 MiB / 2 MiB;
see ``steady_malloc``) to measure the loops without that effect.

A case that a loop cannot run yet (``NotImplementedError``, e.g. transports
not built) is reported as "n/a (NotImplementedError)" and the run goes on;
other errors are reported as "error (...)" and make the exit status 1.

Usage::

    python bench/bench_net.py                    # full run (~1.5-2 min), writes bench/results/net.json
    python bench/bench_net.py --quick            # smoke run (CI, a few s), writes bench/results/net-quick.json
    python bench/bench_net.py --only sock,http   # cases: streams, protocol, sock, echo, http, or ids like sock-10k
    python bench/bench_net.py --json out.json --loops flaskasync,uvloop
    python bench/chart.py --net                  # bench/results/net.json -> docs/img/bench_net.svg
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import fnmatch
import gc
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import time

import _common
from _common import calibrate_batch, fmt_bytes, fmt_rate, fmt_ratio, fmt_time, proc_cpu_seconds, write_json

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LOOP_NAMES = ("flaskasync", "asyncio", "uvloop")
ANCHOR = "asyncio"
SIZES = ((1024, "1k"), (10 * 1024, "10k"), (100 * 1024, "100k"))
MODES = ("streams", "protocol", "sock")
MODE_TITLES = {
    "streams": "streams (start_server / open_connection)",
    "protocol": "Protocol (data_received echo, callback client)",
    "sock": "sock_* (sock_recv / sock_sendall)",
}
FANOUT = 10
BATCH_TIMEOUT = 60.0  # seconds; a batch that takes longer is reported as an error

# The HTTP server's answer: a small JSON body, keep-alive (HTTP/1.1 default).
HTTP_BODY = b'{"ok": true, "id": 42, "items": [1, 2, 3], "message": "hello from the bench server"}'
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(HTTP_BODY)).encode() + b"\r\n"
    b"\r\n" + HTTP_BODY
)
HTTP_REQUEST = b"GET /item HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"


# ---------------------------------------------------------------------------
# The HTTP server (runs in a subprocess: ``bench_net.py --http-server``)
# ---------------------------------------------------------------------------


class HttpServerProtocol(asyncio.Protocol):
    """Answers every request (GETs without a body, pipelining allowed) with
    HTTP_RESPONSE.  A request ends at the blank line."""

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        n = buf.count(b"\r\n\r\n")
        if n:
            self.transport.write(HTTP_RESPONSE * n)
            buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
        self.buf = buf


def http_server_main() -> int:
    try:
        import uvloop

        loop = uvloop.new_event_loop()
        kind = "uvloop"
    except ImportError:
        loop = asyncio.new_event_loop()
        kind = "asyncio"
    server = loop.run_until_complete(
        loop.create_server(HttpServerProtocol, "127.0.0.1", 0, backlog=1024))
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port} {kind}", flush=True)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    return 0


class HttpServerProcess:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--http-server"],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 3 or line[0] != "PORT":
            self.stop()
            raise RuntimeError(f"HTTP server did not start (said {line!r})")
        self.port = int(line[1])
        self.loop_kind = line[2]
        self.url = f"http://127.0.0.1:{self.port}/item"

    def cpu(self) -> float | None:
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ---------------------------------------------------------------------------
# Echo cases
# ---------------------------------------------------------------------------


class EchoError(Exception):
    pass


def nodelay(sock) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class StreamsEcho:
    """streams: both ends readexactly(size), then write() + await drain()."""

    def __init__(self, size: int):
        self.size = size

    async def setup(self):
        size = self.size

        async def handle(reader, writer):
            try:
                while True:
                    data = await reader.readexactly(size)
                    writer.write(data)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        msg = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        self.msg = msg
        self.writer.write(msg)
        await self.writer.drain()
        if await self.reader.readexactly(size) != msg:
            raise EchoError("echoed data differs")

    async def batch(self, n: int) -> float:
        write, drain, readexactly = self.writer.write, self.writer.drain, self.reader.readexactly
        msg, size = self.msg, self.size
        t0 = time.perf_counter()
        for _ in range(n):
            write(msg)
            await drain()
            await readexactly(size)
        return time.perf_counter() - t0

    async def teardown(self):
        if getattr(self, "writer", None) is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except ConnectionError:
                pass
        if getattr(self, "server", None) is not None:
            self.server.close()
            await self.server.wait_closed()


class EchoServerProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class EchoClientProtocol(asyncio.Protocol):
    """Sends msg, counts the echoed bytes; when a whole message is back it
    sends the next one from data_received, until `left` round trips are done."""

    def __init__(self, msg: bytes):
        self.msg = msg
        self.size = len(msg)
        self.got = 0
        self.left = 0
        self.done = None
        self.data = bytearray()
        self.keep = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.keep:
            self.data += data
        self.got += len(data)
        if self.got < self.size:
            return
        if self.got > self.size:
            self._fail(EchoError(f"received {self.got} bytes for a {self.size}-byte message"))
            return
        self.got = 0
        self.left -= 1
        if self.left > 0:
            self.transport.write(self.msg)
        elif self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _fail(self, exc):
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    def connection_lost(self, exc):
        self._fail(exc or EchoError("connection lost"))

    def run(self, n: int):
        self.left = n
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(self.msg)
        return self.done


class ProtocolEcho:
    def __init__(self, size: int):
        self.size = size

    async def setup(self):
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(EchoServerProtocol, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        msg = bytes(range(256)) * (self.size // 256) + b"x" * (self.size % 256)
        self.transport, self.proto = await loop.create_connection(
            lambda: EchoClientProtocol(msg), "127.0.0.1", port)
        self.proto.keep = True
        await self.proto.run(1)
        self.proto.keep = False
        if bytes(self.proto.data) != msg:
            raise EchoError("echoed data differs")

    async def batch(self, n: int) -> float:
        t0 = time.perf_counter()
        await self.proto.run(n)
        return time.perf_counter() - t0

    async def teardown(self):
        if getattr(self, "transport", None) is not None:
            self.proto.done = None
            self.transport.close()
            await asyncio.sleep(0)
        if getattr(self, "server", None) is not None:
            self.server.close()
            await self.server.wait_closed()


class SockEcho:
    """sock_*: server sock_recv(256 KiB) + sock_sendall; client sock_sendall
    then sock_recv until the whole message is back."""

    def __init__(self, size: int):
        self.size = size

    async def setup(self):
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.setblocking(False)

        async def serve():
            conn, _ = await loop.sock_accept(self.lsock)
            conn.setblocking(False)
            nodelay(conn)
            recv, sendall = loop.sock_recv, loop.sock_sendall
            try:
                while True:
                    data = await recv(conn, 262144)
                    if not data:
                        break
                    await sendall(conn, data)
            except ConnectionError:
                pass
            finally:
                conn.close()

        self.server_task = loop.create_task(serve())
        self.csock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.csock.setblocking(False)
        nodelay(self.csock)
        await loop.sock_connect(self.csock, self.lsock.getsockname())
        self.msg = bytes(range(256)) * (self.size // 256) + b"x" * (self.size % 256)
        await loop.sock_sendall(self.csock, self.msg)
        got = b""
        while len(got) < self.size:
            chunk = await loop.sock_recv(self.csock, self.size - len(got))
            if not chunk:
                raise EchoError("connection closed")
            got += chunk
        if got != self.msg:
            raise EchoError("echoed data differs")

    async def batch(self, n: int) -> float:
        loop, c, msg, size = self.loop, self.csock, self.msg, self.size
        sendall, recv = loop.sock_sendall, loop.sock_recv
        t0 = time.perf_counter()
        for _ in range(n):
            await sendall(c, msg)
            got = 0
            while got < size:
                k = len(await recv(c, size - got))
                if not k:
                    raise EchoError("connection closed")
                got += k
        return time.perf_counter() - t0

    async def teardown(self):
        if getattr(self, "csock", None) is not None:
            self.csock.close()
        task = getattr(self, "server_task", None)
        if task is not None:
            if not task.done():
                try:
                    await asyncio.wait_for(task, 5)
                except (asyncio.TimeoutError, ConnectionError):
                    pass
            elif not task.cancelled() and task.exception() is not None:
                pass  # already reported through the batch that failed
        if getattr(self, "lsock", None) is not None:
            self.lsock.close()


ECHO_CLASSES = {"streams": StreamsEcho, "protocol": ProtocolEcho, "sock": SockEcho}


# ---------------------------------------------------------------------------
# HTTP fan-out case
# ---------------------------------------------------------------------------


class HttpFanout:
    def __init__(self, server: HttpServerProcess):
        self.server = server
        self.cpu_seconds = 0.0  # server CPU during the timed batches (repeats only)
        self.wall_seconds = 0.0

    async def setup(self):
        import httpx

        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=FANOUT, max_keepalive_connections=FANOUT))
        await self.view()  # opens the FANOUT keep-alive connections

    async def view(self):
        """The view-like coroutine: FANOUT concurrent GETs, gathered."""
        get, url = self.client.get, self.server.url
        responses = await asyncio.gather(*[get(url) for _ in range(FANOUT)])
        out = []
        for r in responses:
            if r.status_code != 200:
                raise EchoError(f"HTTP {r.status_code}")
            out.append(r.json())
        return out

    async def batch(self, n: int) -> float:
        view = self.view
        t0 = time.perf_counter()
        for _ in range(n):
            await view()
        return time.perf_counter() - t0

    async def teardown(self):
        if getattr(self, "client", None) is not None:
            await self.client.aclose()


class LeanHttpClient(asyncio.Protocol):
    """Server check: one request in flight per connection, next one sent as
    soon as the whole (fixed-size) response is in."""

    def __init__(self, counter: list):
        self.counter = counter
        self.got = 0
        self.stop = False

    def connection_made(self, transport):
        self.transport = transport
        transport.write(HTTP_REQUEST)

    def data_received(self, data):
        self.got += len(data)
        rl = len(HTTP_RESPONSE)
        while self.got >= rl:
            self.got -= rl
            self.counter[0] += 1
            if not self.stop:
                self.transport.write(HTTP_REQUEST)


def server_check(loop, server: HttpServerProcess, seconds: float) -> dict:
    """Drive the HTTP server with FANOUT lean keep-alive connections for
    `seconds`; returns the requests/s it sustained and its CPU use."""

    async def run():
        counter = [0]
        conns = [await loop.create_connection(lambda: LeanHttpClient(counter), "127.0.0.1", server.port)
                 for _ in range(FANOUT)]
        await asyncio.sleep(min(0.2, seconds / 4))  # warm-up
        c0, cpu0, t0 = counter[0], server.cpu(), time.perf_counter()
        await asyncio.sleep(seconds)
        c1, cpu1, t1 = counter[0], server.cpu(), time.perf_counter()
        for tr, p in conns:
            p.stop = True
            tr.close()
        await asyncio.sleep(0.05)
        return {"requests_per_second": (c1 - c0) / (t1 - t0),
                "server_cpu_fraction": (cpu1 - cpu0) / (t1 - t0) if cpu0 is not None and cpu1 is not None
                else None,
                "seconds": t1 - t0}

    return loop.run_until_complete(asyncio.wait_for(run(), seconds + 30))


# ---------------------------------------------------------------------------
# Running a case on all loops
# ---------------------------------------------------------------------------


def exc_leaves(exc: BaseException, depth: int = 0):
    """exc, the leaves of exception groups (anyio's task groups raise them),
    and their __cause__ chains."""
    if exc is None or depth > 20:
        return
    subs = getattr(exc, "exceptions", None)
    if isinstance(subs, (list, tuple)) and subs and all(isinstance(e, BaseException) for e in subs):
        for e in subs:
            yield from exc_leaves(e, depth + 1)
    else:
        yield exc
    yield from exc_leaves(exc.__cause__, depth + 1)


def steady_malloc() -> str | None:
    """Fix glibc's malloc mmap and trim thresholds (mallopt) so that the
    results do not depend on what the process did before; returns a
    description, or None when not on glibc.

    Left alone, glibc moves both thresholds as the process runs, so whether a
    256 KiB read buffer (asyncio's selector transports and this script's sock
    server call recv(256 KiB)) comes from the heap or from a fresh mmap +
    munmap, and whether free() hands the top of the heap back to the kernel,
    depends on history.  Measured here: the same 100 KiB sock echo on uvloop
    ran at 7.5k round trips/s in a fresh process (strace: one mmap and one
    munmap per read) and at 16k after other cases had run in the process;
    with the thresholds fixed it ran at 16-17k in both.  Fixed thresholds
    measure the loops rather than the allocator's history; the default run
    leaves them alone, the regime a real process is in.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mmap_t, trim_t = 1 << 20, 2 << 20
    if mallopt(M_MMAP_THRESHOLD, mmap_t) != 1 or mallopt(M_TRIM_THRESHOLD, trim_t) != 1:
        return None
    return f"glibc mallopt: M_MMAP_THRESHOLD {mmap_t >> 20} MiB, M_TRIM_THRESHOLD {trim_t >> 20} MiB"


def describe_exc(exc: BaseException) -> tuple[str, str]:
    """(status, short text) for a failed case."""
    if any(isinstance(e, NotImplementedError) for e in exc_leaves(exc)):
        return "n/a", "NotImplementedError"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "error", "timeout"
    msg = str(exc).splitlines()[0][:120] if str(exc) else ""
    return "error", f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def run_on(loop, coro, timeout: float = BATCH_TIMEOUT):
    """Run coro on loop with a timeout; a watchdog dumps the stacks and exits
    if the loop itself hangs (so a broken build cannot stall CI forever)."""
    faulthandler.dump_traceback_later(timeout * 2 + 30, exit=True)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        faulthandler.cancel_dump_traceback_later()


def measure_case(case_id: str, make, loops: dict, target: float, repeats: int, log) -> dict:
    """make(): a fresh case object (setup/batch/teardown coroutines).
    Returns {loop name: {"status", "error", "samples", "n", "obj"}}."""
    out = {}
    live = []
    for name, loop in loops.items():
        obj = make()
        st = {"status": "ok", "error": None, "samples": [], "n": None, "obj": obj}
        out[name] = st
        try:
            run_on(loop, obj.setup())
            n = calibrate_batch(lambda k: run_on(loop, obj.batch(k)), target)
            run_on(loop, obj.batch(n))  # one more warm-up batch at the final size
            st["n"] = n
            live.append(name)
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on
            st["status"], st["error"] = describe_exc(exc)
            log(f"  {case_id} on {name}: {st['status']} ({st['error']})")
            if st["status"] == "error":
                import traceback

                traceback.print_exc(file=sys.stderr)
    for _ in range(repeats):
        for name in list(live):
            st, loop = out[name], loops[name]
            gc.collect()
            before = getattr(st["obj"], "before_batch", None)
            if before:
                before()
            try:
                dt = run_on(loop, st["obj"].batch(st["n"]))
            except Exception as exc:  # noqa: BLE001
                st["status"], st["error"] = describe_exc(exc)
                log(f"  {case_id} on {name}: {st['status']} ({st['error']}) during the repeats")
                if st["status"] == "error":
                    import traceback

                    traceback.print_exc(file=sys.stderr)
                live.remove(name)
                continue
            after = getattr(st["obj"], "after_batch", None)
            if after:
                after(dt)
            st["samples"].append(dt / st["n"])
    for name, loop in loops.items():
        try:
            run_on(loop, out[name]["obj"].teardown(), 15)
        except Exception as exc:  # noqa: BLE001
            log(f"  {case_id} on {name}: teardown failed: {describe_exc(exc)[1]}")
        if out[name]["samples"]:
            log(f"  {case_id:<14} {name:<11} n={out[name]['n']:<7} "
                f"median={fmt_time(statistics.median(out[name]['samples']))}")
    return out


def server_cpu_hooks(obj: HttpFanout):
    state = {}

    def before():
        state["cpu"] = obj.server.cpu()

    def after(dt):
        c = obj.server.cpu()
        if c is not None and state.get("cpu") is not None:
            obj.cpu_seconds += c - state["cpu"]
            obj.wall_seconds += dt

    obj.before_batch, obj.after_batch = before, after
    return obj


# ---------------------------------------------------------------------------
# Cases, selection, results
# ---------------------------------------------------------------------------


def all_cases() -> list[dict]:
    cases = []
    for mode in MODES:
        for size, tag in SIZES:
            cases.append({"id": f"{mode}-{tag}", "kind": "echo", "mode": mode, "message_bytes": size,
                          "title": f"echo {fmt_bytes(size)}, {MODE_TITLES[mode]}",
                          "unit": "round trips/s"})
    cases.append({"id": "http", "kind": "http", "mode": "httpx", "message_bytes": len(HTTP_BODY),
                  "title": f"HTTP fan-out: {FANOUT} concurrent httpx.AsyncClient GETs, gathered",
                  "unit": "fan-outs/s"})
    return cases


def selected(case: dict, only: list[str] | None) -> bool:
    if not only:
        return True
    for tok in only:
        if tok in (case["id"], case["kind"], case["mode"]) or fnmatch.fnmatch(case["id"], tok):
            return True
    return False


def machine_info() -> dict:
    info = _common.machine_info()
    try:
        import flaskasync
        import flaskasync._core

        info["flaskasync"] = getattr(flaskasync, "__version__", None)
        info["flaskasync_libuv"] = getattr(flaskasync._core, "libuv_version", None)
    except ImportError:
        pass
    info["uvloop"] = _common.pkg_version("uvloop")
    info["httpx"] = _common.pkg_version("httpx")
    info["httpcore"] = _common.pkg_version("httpcore")
    info["anyio"] = _common.pkg_version("anyio")
    info["sniffio"] = _common.pkg_version("sniffio")
    return info


def make_loops(names: list[str]) -> tuple[dict, dict]:
    """{name: loop} for the loops that can be created, {name: reason} for the others."""
    loops, missing = {}, {}
    for name in names:
        try:
            if name == "flaskasync":
                import flaskasync

                loops[name] = flaskasync.Loop()
            elif name == "asyncio":
                loops[name] = asyncio.new_event_loop()
            elif name == "uvloop":
                import uvloop

                loops[name] = uvloop.new_event_loop()
            else:
                raise ValueError(f"unknown loop {name!r}")
        except ImportError as exc:
            missing[name] = f"not installed ({exc})"
    return loops, missing


def cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if r["status"] != "ok":
        return f"{r['status']} ({r['error']})"
    s = fmt_rate(r["throughput"], "rt/s" if r["kind"] == "echo" else "fan-outs/s")
    if r["kind"] == "echo":
        s += f", {r['mib_per_second']:.1f} MiB/s"
    else:
        s += f" ({fmt_rate(r['requests_per_second'], 'req/s')})"
    return s


def ratio_cell(r: dict | None, key: str) -> str:
    if r is None or r.get(key) is None:
        return "—"
    return f"**{fmt_ratio(r[key])}**"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (CI, a few seconds): short batches, 3 repeats")
    p.add_argument("--json", metavar="PATH", help="where to write the JSON results "
                   "(default bench/results/net.json, or net-quick.json with --quick)")
    p.add_argument("--only", metavar="CASES",
                   help="comma-separated cases: streams, protocol, sock, echo, http, ids such as sock-10k "
                        "or patterns such as '*-100k'")
    p.add_argument("--loops", metavar="NAMES", default=",".join(LOOP_NAMES),
                   help=f"comma-separated loops (default {','.join(LOOP_NAMES)})")
    p.add_argument("--repeats", type=int, help="repeats per loop (default 9, quick 3)")
    p.add_argument("--target-time", type=float,
                   help="seconds per timed echo batch (default 0.2, quick 0.01); HTTP batches are 2.5× longer")
    p.add_argument("--server-check-time", type=float, help="seconds of the HTTP server check (default 2, quick 0.3)")
    p.add_argument("--steady-malloc", action="store_true",
                   help="fix glibc's dynamic malloc thresholds (see steady_malloc); default: leave them alone")
    p.add_argument("--http-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="print progress to stderr")
    args = p.parse_args(argv)
    if args.http_server:
        return http_server_main()

    repeats = args.repeats or (3 if args.quick else 9)
    target = args.target_time or (0.01 if args.quick else 0.2)
    http_target = target * 2.5
    check_time = args.server_check_time or (0.3 if args.quick else 2.0)
    json_path = args.json or os.path.join(HERE, "results", "net-quick.json" if args.quick else "net.json")
    only = [t.strip() for t in args.only.split(",") if t.strip()] if args.only else None
    loop_names = [n.strip() for n in args.loops.split(",") if n.strip()]

    def log(msg):
        if args.verbose:
            print(msg, file=sys.stderr, flush=True)

    cases = [c for c in all_cases() if selected(c, only)]
    if not cases:
        p.error(f"--only {args.only!r} selects no case (ids: {', '.join(c['id'] for c in all_cases())})")

    loops, missing_loops = make_loops(loop_names)
    for name, why in missing_loops.items():
        print(f"bench_net: loop {name} skipped: {why}", file=sys.stderr)
    if not loops:
        return 2

    malloc = steady_malloc() if args.steady_malloc else None
    info = machine_info()
    http_server = None
    http_info = {}
    results = []
    failed = False
    missing_deps = bool(missing_loops)
    t_start = time.perf_counter()
    try:
        for case in cases:
            log(f"[{case['id']}] {case['title']}")
            if case["kind"] == "http":
                if importlib.util.find_spec("httpx") is None:
                    print("bench_net: httpx is not installed (pip install httpx); skipping the HTTP case",
                          file=sys.stderr)
                    missing_deps = True
                    continue
                if importlib.util.find_spec("sniffio") is None:
                    # httpcore 1.x runs `import sniffio` on every lock operation; when it is
                    # missing each failed import walks sys.path (measured: 13 ms instead of
                    # 8.7 ms per fan-out), which would dilute the loops' differences.
                    print("bench_net: warning: sniffio is not installed; httpcore then retries "
                          "`import sniffio` on every request (pip install sniffio)", file=sys.stderr)
                http_server = HttpServerProcess()
                http_info["server_loop"] = http_server.loop_kind
                http_info["url"] = http_server.url
                objs = {}

                def make(srv=http_server, objs=objs):
                    o = server_cpu_hooks(HttpFanout(srv))
                    objs[len(objs)] = o
                    return o

                per_loop = measure_case(case["id"], make, loops, http_target, repeats, log)
            else:
                cls, size = ECHO_CLASSES[case["mode"]], case["message_bytes"]
                per_loop = measure_case(case["id"], lambda: cls(size), loops, target, repeats, log)

            rows = []
            for name in loop_names:
                st = per_loop.get(name)
                row = {
                    "benchmark": case["id"],
                    "title": case["title"],
                    "kind": case["kind"],
                    "mode": case["mode"],
                    "message_bytes": case["message_bytes"],
                    "implementation": name,
                    "anchor": name == ANCHOR,
                    "anchor_implementation": ANCHOR,
                    "status": st["status"] if st else "n/a",
                    "error": st["error"] if st else missing_loops.get(name, "not run"),
                    "seconds_per_op": None,
                    "seconds_min": None,
                    "seconds_max": None,
                    "samples": st["samples"] if st else [],
                    "iterations_per_repeat": st["n"] if st else None,
                    "throughput": None,
                    "throughput_best": None,
                    "throughput_unit": case["unit"],
                }
                if st and st["status"] == "ok" and st["samples"]:
                    med = statistics.median(st["samples"])
                    row.update(seconds_per_op=med, seconds_min=min(st["samples"]),
                               seconds_max=max(st["samples"]), throughput=1 / med,
                               throughput_best=1 / min(st["samples"]))
                    if case["kind"] == "echo":
                        row["mib_per_second"] = case["message_bytes"] / med / (1 << 20)
                    else:
                        row["requests_per_second"] = FANOUT / med
                        obj = st["obj"]
                        row["server_cpu_fraction"] = (obj.cpu_seconds / obj.wall_seconds
                                                      if obj.wall_seconds else None)
                elif st and st["status"] == "ok":
                    row["status"], row["error"] = "error", "no samples"
                if row["status"] == "error":
                    failed = True
                rows.append(row)
            by = {r["implementation"]: r for r in rows}
            for r in rows:
                for other in ("asyncio", "uvloop"):
                    o = by.get(other)
                    r[f"ratio_vs_{other}"] = (r["throughput"] / o["throughput"]
                                              if r["throughput"] and o and o["throughput"] else None)
                r["ratio_vs_anchor"] = r["ratio_vs_asyncio"]
            results += rows

            if case["kind"] == "http" and http_server is not None:
                check_loop = loops.get("uvloop") or loops.get("asyncio") or next(iter(loops.values()))
                check_name = next(k for k, v in loops.items() if v is check_loop)
                try:
                    chk = server_check(check_loop, http_server, check_time)
                    chk["client_loop"] = check_name
                    best = max((r["requests_per_second"] for r in rows if r.get("requests_per_second")),
                               default=None)
                    chk["fastest_httpx_requests_per_second"] = best
                    chk["headroom"] = chk["requests_per_second"] / best if best else None
                    http_info["server_check"] = chk
                except Exception as exc:  # noqa: BLE001
                    http_info["server_check"] = {"error": describe_exc(exc)[1]}
                http_server.stop()
                http_server = None
    finally:
        if http_server is not None:
            http_server.stop()
    elapsed = time.perf_counter() - t_start
    for loop in loops.values():
        loop.close()

    # --- print --------------------------------------------------------------
    print(f"Machine: {info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}, "
          f"flaskasync {info.get('flaskasync')} ({info['flaskasync_git']}, libuv {info.get('flaskasync_libuv')}), "
          f"uvloop {info['uvloop']}, httpx {info['httpx']} (httpcore {info['httpcore']}, anyio {info['anyio']})")
    print(f"Mode: {'quick' if args.quick else 'full'}; {repeats} repeats × ~{target:g} s batches "
          f"(HTTP ~{http_target:g} s), interleaved across loops, median; GC on; "
          f"{malloc or 'malloc thresholds left dynamic'}; total {elapsed:.0f} s")
    print("Echo: server and client on the SAME loop in ONE process, one TCP connection over 127.0.0.1, "
          "one message in flight; MiB/s = message size × round trips/s.")
    print("Ratios: flaskasync throughput ÷ that loop's (>1 = flaskasync faster).")
    echo = [r for r in results if r["kind"] == "echo"]
    if echo:
        print()
        print("| echo mode | message | **flaskasync** | asyncio | uvloop | flaskasync / asyncio | flaskasync / uvloop |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for case in cases:
            if case["kind"] != "echo":
                continue
            by = {r["implementation"]: r for r in echo if r["benchmark"] == case["id"]}
            fa = by.get("flaskasync")
            print(f"| {case['mode']} | {fmt_bytes(case['message_bytes'])} | {cell(fa)} | {cell(by.get('asyncio'))} | "
                  f"{cell(by.get('uvloop'))} | {ratio_cell(fa, 'ratio_vs_asyncio')} | "
                  f"{ratio_cell(fa, 'ratio_vs_uvloop')} |")
    http = [r for r in results if r["kind"] == "http"]
    if http:
        by = {r["implementation"]: r for r in http}
        fa = by.get("flaskasync")
        print()
        print(f"HTTP: {FANOUT} concurrent GETs per fan-out, one shared httpx.AsyncClient (keep-alive), "
              f"asyncio.gather; server: keep-alive HTTP/1.1 on {http_info.get('server_loop')} in a subprocess, "
              f"{len(HTTP_BODY)}-byte JSON body.")
        print()
        print("| workload | **flaskasync** | asyncio | uvloop | flaskasync / asyncio | flaskasync / uvloop |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| {FANOUT} × httpx GET, gathered | {cell(fa)} | {cell(by.get('asyncio'))} | {cell(by.get('uvloop'))} | "
              f"{ratio_cell(fa, 'ratio_vs_asyncio')} | {ratio_cell(fa, 'ratio_vs_uvloop')} |")
        cpu = ", ".join(f"{r['implementation']} {r['server_cpu_fraction'] * 100:.1f} %"
                        for r in http if r.get("server_cpu_fraction") is not None)
        if cpu:
            print(f"\nServer CPU (share of one core) during the timed fan-outs: {cpu}.")
        chk = http_info.get("server_check", {})
        if "requests_per_second" in chk:
            head = chk.get("headroom")
            print(f"Server check: a lean raw-Protocol client ({FANOUT} keep-alive connections, one request in "
                  f"flight each, on {chk['client_loop']}) got {fmt_rate(chk['requests_per_second'], 'req/s')} "
                  f"(server CPU {chk['server_cpu_fraction'] * 100:.0f} %)"
                  + (f", {head:.1f}× the fastest httpx rate: the server is not the bottleneck."
                     if head and head >= 2 else
                     f", only {head:.1f}× the fastest httpx rate: the server MAY limit the result."
                     if head else "."))
        elif chk:
            print(f"Server check failed: {chk.get('error')}")

    spreads = sorted((max(r["samples"]) / min(r["samples"]) - 1, r["benchmark"], r["implementation"])
                     for r in results if r["status"] == "ok" and len(r["samples"]) > 1)
    if spreads:
        worst = spreads[-1]
        print(f"\nSpread of the repeats (slowest ÷ fastest − 1): median {statistics.median(s[0] for s in spreads) * 100:.0f} % "
              f"over {len(spreads)} cells, worst {worst[0] * 100:.0f} % ({worst[1]} on {worst[2]}).")

    out = {
        "schema": 1,
        "suite": "net",
        "mode": "quick" if args.quick else "full",
        "command": _common.command_line(__file__, argv),
        "date_utc": _common.utc_now(),
        "repeats": repeats,
        "target_batch_seconds": target,
        "http_target_batch_seconds": http_target,
        "echo_topology": "server and client on the same loop in one process; one connection; one message in flight",
        "fanout": FANOUT,
        "malloc": malloc or "dynamic (glibc default)",
        "http": http_info,
        "elapsed_seconds": elapsed,
        "machine": info,
        "results": results,
        "targets": [],
    }
    write_json(json_path, out)
    if failed:
        return 1
    return 2 if missing_deps else 0


if __name__ == "__main__":
    sys.exit(main())
