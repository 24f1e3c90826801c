#!/usr/bin/env python
"""Instruction counts per operation, under valgrind's callgrind: for A/B
decisions on a shared, loaded machine, where timings move by ±15 % between
runs but instruction counts do not.

The script re-runs itself under ``valgrind --tool=callgrind
--dump-before=getppid``: the child calls ``os.getppid()`` between
segments, so each callgrind dump holds the instructions of one segment (a
batch of operations of one kind, after a warm-up).  Printed: instructions
per operation, and the differences the benchmarks' targets name.

Instruction counts are not time (a cache miss or a syscall's kernel side
costs no counted instruction, and valgrind serialises threads), so they
decide between two builds of the same code path; the targets themselves
are judged on times (bench_shim.py, bench_core.py).

Usage::

    python bench/instr.py shim          # Flask test client, per request (~2 min)
    python bench/instr.py core          # call_soon, call_soon_threadsafe, gather, run
    python bench/instr.py io            # fd events: add_reader and TCP echo rounds
    python bench/instr.py asgi          # ASGI requests in process: flaskasync vs Quart (~3 min)
    python bench/instr.py shim --n 200  # operations per segment
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------- workloads (child side)


def _shim_segments(n: int):
    sys.path.insert(0, HERE)
    import bench_shim

    app = bench_shim.make_app()
    client = app.test_client()
    routes = bench_shim.ROUTES
    for route in routes:
        for _ in range(50):
            client.get("/" + route, buffered=True)
    for route in routes:
        get = client.get
        path = "/" + route

        def seg(get=get, path=path):
            for _ in range(n):
                get(path, buffered=True)

        yield route, seg


def _core_segments(n: int):
    import asyncio
    import threading

    import flaskasync

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        uvloop = None

    loops = [("flaskasync", flaskasync.new_event_loop()), ("asyncio", asyncio.new_event_loop())]
    if uvloop is not None:
        loops.append(("uvloop", uvloop.new_event_loop()))

    def noop():
        pass

    for name, loop in loops:
        def call_soon(loop=loop):
            cs = loop.call_soon
            for _ in range(n):
                cs(noop)
            cs(loop.stop)
            loop.run_forever()

        call_soon()  # warm-up
        yield f"call_soon/{name}", call_soon

    for name, loop in loops:
        def threadsafe(loop=loop):
            cs = loop.call_soon_threadsafe

            def producer():
                for _ in range(n):
                    cs(noop)
                cs(loop.stop)

            t = threading.Thread(target=producer)
            t.start()
            t.join()
            loop.run_forever()

        threadsafe()
        yield f"call_soon_threadsafe/{name}", threadsafe

    async def f():
        return 1

    gathers = [("flaskasync.gather/flaskasync", loops[0][1], flaskasync.gather),
               ("asyncio.gather/asyncio", loops[1][1], asyncio.gather)]
    k = 1000
    for name, loop, gather in gathers:
        async def body(gather=gather):
            for _ in range(max(1, n // 1000)):
                await gather(*[f() for _ in range(k)])

        loop.run_until_complete(body())
        yield name, (lambda loop=loop, body=body: loop.run_until_complete(body()))

    run = flaskasync.run

    def runs():
        for _ in range(n):
            run(f())

    runs()
    yield "flaskasync.run", runs


def _io_segments(n: int):
    """fd events: add_reader rounds over a socketpair (a watcher's event per
    round) and TCP echo rounds between two protocols (two transports'
    events per round), on the flaskasync loop."""
    import asyncio
    import socket

    import flaskasync

    loop = flaskasync.new_event_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    def reader_rounds():
        left = [n]

        def on_readable():
            a.recv(1)
            left[0] -= 1
            if left[0]:
                b.send(b"x")
            else:
                loop.remove_reader(a)
                loop.stop()

        loop.add_reader(a, on_readable)
        b.send(b"x")
        loop.run_forever()

    reader_rounds()  # warm-up
    yield "add_reader/round", reader_rounds

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class Pinger(asyncio.Protocol):
        def __init__(self, rounds, done):
            self.left = rounds
            self.done = done

        def connection_made(self, transport):
            self.transport = transport
            transport.write(b"ping")

        def data_received(self, data):
            self.left -= 1
            if self.left:
                self.transport.write(data)
            else:
                self.transport.close()

        def connection_lost(self, exc):
            self.done.set_result(None)

    server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]

    async def echo_rounds():
        done = loop.create_future()
        await loop.create_connection(lambda: Pinger(n, done), "127.0.0.1", port)
        await done

    def echo():
        loop.run_until_complete(echo_rounds())

    echo()  # warm-up
    yield "tcp_echo/round", echo


def _asgi_segments(n: int):
    """ASGI requests driven in process (no HTTP server, no sockets), 64 at
    a time, to bench/asgi_apps.py's views: Quart on uvloop first, with
    Python's collector as a Quart server has it, then ASGIApp on the
    flaskasync loop with the serve processes' GC policy (tune_gc).  The
    two apps share the process (Quart's segments also carry the Flask app's
    objects, untouched by young collections)."""
    import asyncio

    sys.path.insert(0, HERE)
    import asgi_apps

    conc = 64
    per_worker = max(1, n // conc)

    def driver(app, loop, route):
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": route,
                 "raw_path": route.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 5000),
                 "server": ("127.0.0.1", 8000)}

        async def one():
            state = {"sent": False, "status": None}

            async def receive():
                if not state["sent"]:
                    state["sent"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                await loop.create_future()  # no disconnect: wait until cancelled

            async def send(message):
                if message["type"] == "http.response.start":
                    state["status"] = message["status"]

            await app(dict(scope), receive, send)
            if state["status"] != 200:
                raise RuntimeError(f"{route}: status {state['status']}")

        async def worker():
            for _ in range(per_worker):
                await one()

        async def batch():
            await asyncio.gather(*(worker() for _ in range(conc)))

        def seg():
            loop.run_until_complete(batch())

        seg()  # warm-up
        return seg

    routes = ("/async", "/gather10")
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        qloop = uvloop.new_event_loop()
        asyncio.set_event_loop(qloop)
        quart_app = asgi_apps.make_quart_app()
        for route in routes:
            yield f"quart{route}", driver(quart_app, qloop, route)
    import flaskasync
    from flaskasync._serve import tune_gc

    floop = flaskasync.new_event_loop()
    asyncio.set_event_loop(floop)
    app = flaskasync.ASGIApp(asgi_apps.app)
    segs = [(route, driver(app, floop, route)) for route in routes]
    tune_gc()
    for route, seg in segs:
        yield f"flaskasync{route}", seg


WORKLOADS = {
    "shim": (_shim_segments, "request",
             [("async", "sync"), ("gather", "sync"), ("async-stream", "sync-stream")]),
    "core": (_core_segments, "op", []),
    "io": (_io_segments, "round", []),
    "asgi": (_asgi_segments, "request", [("flaskasync/gather10", "flaskasync/async")]),
}


def child(kind: str, n: int) -> None:
    gen, _, _ = WORKLOADS[kind]
    # Each os.getppid() ends a callgrind dump: "-" marks the dumps of
    # set-up and warm-up code, which are not counted.
    names = []
    for name, seg in gen(n):
        os.getppid()
        names.append("-")
        seg()
        os.getppid()
        names.append(name)
    print("SEGMENTS " + " ".join(names), flush=True)


# --------------------------------------------------------------- parent side


def totals(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=sorted(WORKLOADS))
    p.add_argument("--n", type=int, default=None,
                   help="operations per segment (shim: 300 requests; asgi: 640; core and io: "
                        "20000; gather rows do n/1000 gathers of 1,000)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    n = args.n or {"shim": 300, "asgi": 640}.get(args.kind, 20000)
    if args.kind == "asgi":
        n = max(1, n // 64) * 64  # 64 requests at a time, in whole rounds
    if args.child:
        child(args.kind, n)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        cmd = ["valgrind", "--tool=callgrind", "--dump-before=getppid",
               f"--callgrind-out-file={out}", sys.executable, os.path.abspath(__file__),
               args.kind, "--n", str(n), "--child"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("SEGMENTS ")]
        if proc.returncode != 0 or not line:
            sys.exit(f"instr: the child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        names = line[0].split()[1:]
        dumps = sorted(glob.glob(out + ".*"), key=lambda s: int(s.rsplit(".", 1)[1]))
        # dump k+1 ends where names[k] was appended (dump 1: start-up and
        # the first set-up, named "-" too).
        counted = [(name, totals(d)) for name, d in zip(names, dumps) if name != "-"]
        names = [name for name, _ in counted]
        counts = [c for _, c in counted]
    _, unit, diffs = WORKLOADS[args.kind]
    per = {}
    print(f"instr {args.kind}: Python {sys.version.split()[0]}, {n} per segment, "
          f"instructions per {unit} (callgrind Ir)")
    for name, c in zip(names, counts):
        ops = n if not name.startswith(("flaskasync.gather", "asyncio.gather")) else max(1, n // 1000)
        per[name] = c / ops
        print(f"  {name:<34} {per[name]:14,.0f}")
    for a, b in diffs:
        print(f"  {a + ' - ' + b:<34} {per[a] - per[b]:+14,.0f}")
    for a, b in [("quart/async", "flaskasync/async"), ("quart/gather10", "flaskasync/gather10")]:
        if a in per and b in per:
            print(f"  {a} / {b}: {per[a] / per[b]:.2f}x the instructions")
    for a, b in [("call_soon/flaskasync", "call_soon/uvloop"),
                 ("call_soon_threadsafe/flaskasync", "call_soon_threadsafe/uvloop"),
                 ("flaskasync.gather/flaskasync", "asyncio.gather/asyncio")]:
        if a in per and b in per:
            print(f"  {b} / {a}: {per[b] / per[a]:.2f}x fewer instructions")


if __name__ == "__main__":
    main()
