#!/usr/bin/env python
"""The cost of the Flask shim per request: Flask's test client, one thread.

Each route is measured in batches of ``--requests`` requests through
``app.test_client()``; batches are interleaved round-robin across the routes
(so a slow phase of the machine hits them alike) and the figures printed are
the median and the minimum over ``--repeats`` batches, in µs per request:

- ``sync``:   a trivial sync view (Flask alone: the baseline);
- ``async``:  the same view as ``async def`` (the shim plus ``flaskasync.run``);
- ``gather``: an async view gathering 10 × ``asyncio.sleep(0)`` with
  ``asyncio.gather``;
- ``sync-stream`` / ``async-stream``: a response streamed from a sync
  generator / an async generator of 10 chunks (the WSGI streaming path).

The differences ``async - sync``, ``gather - sync`` and
``async-stream - sync-stream`` are the shim's cost.

Usage::

    python bench/bench_shim.py                       # about 30 s
    python bench/bench_shim.py --quick               # smoke run
    python bench/bench_shim.py --cpu                 # CPU time: for a loaded machine
    python bench/bench_shim.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import _common

try:
    import flask

    import flaskasync
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit(f"bench_shim: cannot import flask/flaskasync ({exc}); install them first")

CHUNKS = 10


def make_app() -> flask.Flask:
    app = flask.Flask("bench_shim")
    flaskasync.FlaskAsync(app)

    @app.get("/sync")
    def sync_view():
        return "ok"

    @app.get("/async")
    async def async_view():
        return "ok"

    @app.get("/gather")
    async def gather_view():
        await asyncio.gather(*[asyncio.sleep(0) for _ in range(10)])
        return "ok"

    @app.get("/sync-stream")
    def sync_stream():
        def gen():
            for _ in range(CHUNKS):
                yield "x"

        return gen()

    @app.get("/async-stream")
    def async_stream():
        async def agen():
            for _ in range(CHUNKS):
                yield "x"

        return agen()

    return app


ROUTES = ["sync", "async", "gather", "sync-stream", "async-stream"]
DIFFS = [("async", "sync"), ("gather", "sync"), ("async-stream", "sync-stream")]


def batch(client, path: str, n: int, expected: bytes, clock=time.perf_counter) -> float:
    """Seconds per request over n requests of path.

    buffered=True: the test client reads the whole body and closes it, as a
    WSGI server does (unbuffered, a streamed body would never be iterated)."""
    get = client.get
    t0 = clock()
    for _ in range(n):
        r = get(path, buffered=True)
    dt = clock() - t0
    assert r.data == expected, (path, r.data)
    return dt / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="requests per batch (default 2000)")
    p.add_argument("--repeats", type=int, default=11, help="batches per route (default 11)")
    p.add_argument("--quick", action="store_true", help="200 requests × 3 batches")
    p.add_argument("--cpu", action="store_true",
                   help="time with the process's CPU time (time.process_time, all its "
                        "threads) instead of wall time: steadier on a loaded machine")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter
    if args.quick:
        args.requests, args.repeats = 200, 3

    app = make_app()
    client = app.test_client()
    expected = {r: b"x" * CHUNKS if r.endswith("stream") else b"ok" for r in ROUTES}
    for route in ROUTES:  # warm up (and create the app loop)
        batch(client, "/" + route, max(50, args.requests // 10), expected[route])

    samples: dict[str, list[float]] = {r: [] for r in ROUTES}
    for _ in range(args.repeats):
        for route in ROUTES:
            samples[route].append(
                batch(client, "/" + route, args.requests, expected[route], clock))

    med = {r: statistics.median(s) * 1e6 for r, s in samples.items()}
    low = {r: min(s) * 1e6 for r, s in samples.items()}
    info = _common.machine_info()
    print(f"bench_shim: Python {info['python']}, Flask {_common.pkg_version('flask')}, "
          f"flaskasync {info['flaskasync_git'] or info['flaskasync']}, "
          f"{args.repeats} × {args.requests} requests per route, median µs/request"
          f" ({'CPU' if args.cpu else 'wall'} time)")
    for route in ROUTES:
        lo, hi = min(samples[route]) * 1e6, max(samples[route]) * 1e6
        print(f"  {route:<13} {med[route]:8.1f} µs   (min {lo:.1f}, max {hi:.1f})")
    print("  differences: of the medians, of the minimums (steadier on a loaded machine)")
    for a, b in DIFFS:
        print(f"  {a + ' - ' + b:<26} {med[a] - med[b]:+8.1f} µs  {low[a] - low[b]:+8.1f} µs")
    if args.json:
        _common.write_json(args.json, {
            "command": "python bench/bench_shim.py " + " ".join(sys.argv[1:]),
            "machine": info,
            "flask": _common.pkg_version("flask"),
            "clock": "process_time" if args.cpu else "perf_counter",
            "requests": args.requests,
            "repeats": args.repeats,
            "median_us": med,
            "samples_us": {r: [x * 1e6 for x in s] for r, s in samples.items()},
            "diff_us": {f"{a}-{b}": med[a] - med[b] for a, b in DIFFS},
            "diff_of_min_us": {f"{a}-{b}": low[a] - low[b] for a, b in DIFFS},
        })


if __name__ == "__main__":
    main()
