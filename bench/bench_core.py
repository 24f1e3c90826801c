#!/usr/bin/env python
"""Core micro-benchmarks of flaskasync against asyncio, uvloop and asgiref.

Everything is measured in ONE process, in ONE run, on the same machine, so
the ratios are comparable.  For every (benchmark, implementation) pair:

- the batch size is calibrated (that calibration also warms it up), then one
  more warm-up batch runs;
- each repeat times one batch of many iterations with ``time.perf_counter``;
- repeats are interleaved round-robin across the implementations of a
  benchmark, so a slow phase of the machine hits all of them alike;
- the reported time per operation is the median over the repeats.

Ratios are "times faster than the anchor": anchor time / this time (above 1
means faster than the anchor).

Usage::

    python bench/bench_core.py                 # full run, writes bench/results/core.json
    python bench/bench_core.py --quick         # smoke run (CI), writes bench/results/core-quick.json
    python bench/bench_core.py --json out.json
    python bench/bench_core.py --strict        # exit 1 if a target is missed
    python bench/bench_core.py --no-gc         # cyclic GC off while timing (GC is on by default)
    python bench/bench_core.py --cpu --only call_soon,call_soon_threadsafe
                                               # CPU time, minimum of the repeats (a loaded machine)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import threading
import time

import _common
from _common import fmt_ratio, fmt_time, write_json

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:
    import flaskasync
    import flaskasync._core
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit(f"bench_core: cannot import flaskasync ({exc}); install it first")

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

try:
    from asgiref.sync import async_to_sync as asgiref_async_to_sync
except ImportError:  # pragma: no cover
    asgiref_async_to_sync = None


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------


async def trivial():
    return 1


def make_run_op(kind: str, loop=None):
    """A sync callable that runs trivial() to completion once."""
    if kind == "flaskasync.run":
        run = flaskasync.run
        return lambda: run(trivial())
    if kind == "asgiref":
        a2s = asgiref_async_to_sync
        # As Flask's ensure_sync does: wrap and call on every request.
        return lambda: a2s(trivial)()
    if kind == "asyncio.run":
        arun = asyncio.run
        return lambda: arun(trivial())
    # A reused loop.
    ruc = loop.run_until_complete
    return lambda: ruc(trivial())


# The clock the batches read: time.perf_counter, or time.process_time
# (CPU time of the whole process, all threads) with --cpu.
CLOCK = time.perf_counter


def sync_batch(op):
    """Batch function for a sync callable: returns the seconds for n calls."""

    def batch(n: int) -> float:
        rng = range(n)
        clock = CLOCK
        t0 = clock()
        for _ in rng:
            op()
        return clock() - t0

    return batch


def gather_batch(loop, gather, k: int):
    """n × ``await gather(*[trivial() for _ in range(k)])`` inside one coroutine."""

    async def body(n: int) -> float:
        rng = range(n)
        kk = range(k)
        clock = CLOCK
        t0 = clock()
        for _ in rng:
            await gather(*[trivial() for _ in kk])
        return clock() - t0

    def batch(n: int) -> float:
        return loop.run_until_complete(body(n))

    return batch


def sleep0_batch(loop, per_op: int = 100):
    """n × (per_op × ``await asyncio.sleep(0)``) in one task."""
    sleep = asyncio.sleep

    async def body(n: int) -> float:
        rng = range(n * per_op)
        clock = CLOCK
        t0 = clock()
        for _ in rng:
            await sleep(0)
        return clock() - t0

    def batch(n: int) -> float:
        return loop.run_until_complete(body(n))

    return batch


def call_soon_batch(loop, ncb: int):
    """n × (schedule ncb callbacks with call_soon, the last one stops the loop, run)."""

    def cb():
        pass

    def batch(n: int) -> float:
        call_soon = loop.call_soon
        stop = loop.stop
        run_forever = loop.run_forever
        rng = range(ncb - 1)
        clock = CLOCK
        t0 = clock()
        for _ in range(n):
            for _ in rng:
                call_soon(cb)
            call_soon(stop)
            run_forever()
        return clock() - t0

    return batch


def call_soon_threadsafe_batch(loop, ncb: int):
    """n × (another thread schedules ncb callbacks with call_soon_threadsafe,
    the last one stops the loop, which runs them meanwhile)."""

    def cb():
        pass

    def batch(n: int) -> float:
        call_soon_threadsafe = loop.call_soon_threadsafe
        stop = loop.stop
        run_forever = loop.run_forever
        rng = range(ncb - 1)

        def producer():
            for _ in rng:
                call_soon_threadsafe(cb)
            call_soon_threadsafe(stop)

        clock = CLOCK
        t0 = clock()
        for _ in range(n):
            t = threading.Thread(target=producer)
            t.start()
            run_forever()
            t.join()
        return clock() - t0

    return batch


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def calibrate(batch, target: float) -> int:
    """Smallest round-ish n with batch(n) near target seconds (also warms up)."""
    n = 1
    while True:
        t = batch(n)
        if t >= target * 0.2:
            break
        n *= 10 if t < target * 0.02 else 2
    return max(1, int(n * target / max(t, 1e-9)))


def measure_group(impls, target: float, repeats: int, log, stat=statistics.median):
    """impls: list of (name, batch). Returns {name: [seconds per op, ...]}."""
    sizes = {}
    for name, batch in impls:
        n = calibrate(batch, target)
        batch(n)  # one more warm-up batch at the final size
        sizes[name] = n
    samples = {name: [] for name, _ in impls}
    for _ in range(repeats):
        for name, batch in impls:
            n = sizes[name]
            gc.collect()
            samples[name].append(batch(n) / n)
    for name, _ in impls:
        log(f"  {name:<46} n={sizes[name]:<8} {stat.__name__}={fmt_time(stat(samples[name]))}")
    return sizes, samples


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def fmt_rate(r: float, unit: str) -> str:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if r >= div:
            return f"{r / div:.3g}{suf} {unit}"
    return f"{r:.3g} {unit}"


# ---------------------------------------------------------------------------
# Machine info
# ---------------------------------------------------------------------------


def machine_info() -> dict:
    info = _common.machine_info()
    info["flaskasync"] = getattr(flaskasync, "__version__", None)
    info["flaskasync_libuv"] = getattr(flaskasync._core, "libuv_version", None)
    info["uvloop"] = getattr(uvloop, "__version__", None) if uvloop else None
    return info


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

# (benchmark id, implementation, target op) for the PASS/MISS lines:
# (description, benchmark, faster impl, slower impl, required ratio)
TARGETS = [
    ("flaskasync.run >= 3x faster than a reused asyncio loop's run_until_complete",
     "run", "flaskasync.run(f())", "asyncio loop (reused): run_until_complete(f())", 3.0),
    ("flaskasync.run >= 100x faster than asgiref async_to_sync",
     "run", "flaskasync.run(f())", "asgiref: async_to_sync(f)()", 100.0),
    ("gather(1000) >= 2.5x faster than asyncio.gather on asyncio's loop",
     "gather1000", "flaskasync.gather on flaskasync loop", "asyncio.gather on asyncio loop", 2.5),
    ("sleep(0) ping-pong >= 1.3x faster than uvloop",
     "sleep0", "flaskasync loop", "uvloop", 1.3),
    ("call_soon throughput >= 1.5x uvloop's",
     "call_soon", "flaskasync loop", "uvloop", 1.5),
    ("call_soon_threadsafe throughput from another thread >= 1.5x uvloop's",
     "call_soon_threadsafe", "flaskasync loop", "uvloop", 1.5),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fast smoke run (CI): short batches, 3 repeats")
    p.add_argument("--json", metavar="PATH", help="where to write the JSON results "
                   "(default bench/results/core.json, or core-quick.json with --quick)")
    p.add_argument("--repeats", type=int, help="repeats per implementation (default 9, quick 3)")
    p.add_argument("--target-time", type=float, help="seconds per timed batch (default 0.2, quick 0.01)")
    p.add_argument("--no-gc", action="store_true",
                   help="disable the cyclic GC while timing (as timeit does); default: GC on, as in production")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--cpu", action="store_true",
                   help="time with the process's CPU time (time.process_time, all threads) and "
                        "report the minimum of the repeats: steadier on a loaded machine")
    p.add_argument("--only", metavar="IDS",
                   help="comma-separated benchmark ids to run (run, gather5, gather1000, sleep0, "
                        "call_soon, call_soon_threadsafe)")
    p.add_argument("-v", "--verbose", action="store_true", help="print batch sizes as it goes")
    args = p.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 9)
    target = args.target_time or (0.01 if args.quick else 0.2)
    ncb = 10_000 if args.quick else 100_000
    json_path = args.json or (None if args.only else os.path.join(
        HERE, "results", "core-quick.json" if args.quick else "core.json"))

    def log(msg):
        if args.verbose:
            print(msg, file=sys.stderr, flush=True)

    missing = [n for n, m in (("uvloop", uvloop), ("asgiref", asgiref_async_to_sync)) if m is None]
    if missing:
        print(f"bench_core: missing {', '.join(missing)}; install with pip install flaskasync[bench]",
              file=sys.stderr)
        return 2

    fa_loop = flaskasync.new_event_loop()
    aio_loop = asyncio.new_event_loop()
    uv_loop = uvloop.new_event_loop()
    loops = {"flaskasync": fa_loop, "asyncio": aio_loop, "uvloop": uv_loop}

    # Each group: (id, title, anchor, unit for throughput, ops per "op", impls)
    groups = []

    groups.append(("run", "run trivial coroutine to completion", "asyncio loop (reused): run_until_complete(f())",
                   "runs/s", 1, [
        ("flaskasync.run(f())", sync_batch(make_run_op("flaskasync.run"))),
        ("flaskasync Loop (reused): run_until_complete(f())", sync_batch(make_run_op("loop", fa_loop))),
        ("asyncio loop (reused): run_until_complete(f())", sync_batch(make_run_op("loop", aio_loop))),
        ("uvloop loop (reused): run_until_complete(f())", sync_batch(make_run_op("loop", uv_loop))),
        ("asyncio.run(f())", sync_batch(make_run_op("asyncio.run"))),
        ("asgiref: async_to_sync(f)()", sync_batch(make_run_op("asgiref"))),
    ]))
    for k in (5, 1000):
        groups.append((f"gather{k}", f"gather of {k:,} trivial coroutines", "asyncio.gather on asyncio loop",
                       "gathers/s", 1, [
            ("flaskasync.gather on flaskasync loop", gather_batch(fa_loop, flaskasync.gather, k)),
            ("asyncio.gather on asyncio loop", gather_batch(aio_loop, asyncio.gather, k)),
            ("asyncio.gather on uvloop", gather_batch(uv_loop, asyncio.gather, k)),
            ("asyncio.gather on flaskasync loop (info)", gather_batch(fa_loop, asyncio.gather, k)),
            ("flaskasync.gather on asyncio loop (info)", gather_batch(aio_loop, flaskasync.gather, k)),
        ]))
    groups.append(("sleep0", "100 × await asyncio.sleep(0) in one task", "uvloop", "sleep(0)/s", 100, [
        (name, sleep0_batch(loop)) for name, loop in
        (("flaskasync loop", fa_loop), ("asyncio", aio_loop), ("uvloop", uv_loop))
    ]))
    groups.append(("call_soon", f"call_soon throughput ({ncb:,} callbacks per op)", "uvloop", "callbacks/s", ncb, [
        (name, call_soon_batch(loop, ncb)) for name, loop in
        (("flaskasync loop", fa_loop), ("asyncio", aio_loop), ("uvloop", uv_loop))
    ]))
    groups.append(("call_soon_threadsafe",
                   f"call_soon_threadsafe from another thread ({ncb:,} callbacks per op)",
                   "uvloop", "callbacks/s", ncb, [
        (name, call_soon_threadsafe_batch(loop, ncb)) for name, loop in
        (("flaskasync loop", fa_loop), ("asyncio", aio_loop), ("uvloop", uv_loop))
    ]))
    if args.only:
        wanted = {x.strip() for x in args.only.split(",") if x.strip()}
        unknown = wanted - {g[0] for g in groups}
        if unknown:
            p.error(f"--only: unknown benchmark ids {sorted(unknown)}")
        groups = [g for g in groups if g[0] in wanted]
    global CLOCK
    CLOCK = time.process_time if args.cpu else time.perf_counter
    stat = min if args.cpu else statistics.median

    info = machine_info()
    if args.no_gc:
        gc.disable()  # gc.collect() still runs before every timed batch
    t_start = time.perf_counter()
    results = []
    for gid, title, anchor, unit, per_op, impls in groups:
        log(f"[{gid}] {title}")
        sizes, samples = measure_group(impls, target, repeats, log, stat)
        anchor_t = stat(samples[anchor])
        for name, _ in impls:
            med = stat(samples[name])
            results.append({
                "benchmark": gid,
                "title": title,
                "implementation": name,
                "anchor": name == anchor,
                "anchor_implementation": anchor,
                "seconds_per_op": med,
                "seconds_min": min(samples[name]),
                "seconds_max": max(samples[name]),
                "samples": samples[name],
                "iterations_per_repeat": sizes[name],
                "ratio_vs_anchor": anchor_t / med,
                "throughput": per_op / med,
                "throughput_unit": unit,
            })
    elapsed = time.perf_counter() - t_start
    gc.enable()
    for loop in loops.values():
        loop.close()

    by = {(r["benchmark"], r["implementation"]): r for r in results}
    target_rows = []
    for desc, gid, fast, slow, need in TARGETS:
        if (gid, slow) not in by:
            continue
        ratio = by[(gid, slow)]["seconds_per_op"] / by[(gid, fast)]["seconds_per_op"]
        target_rows.append({"target": desc, "benchmark": gid, "implementation": fast, "versus": slow,
                            "required": need, "measured": ratio, "pass": ratio >= need})

    # --- print --------------------------------------------------------------
    print(f"Machine: {info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}, "
          f"flaskasync {info['flaskasync']} ({info['flaskasync_git']}, libuv {info['flaskasync_libuv']}), "
          f"uvloop {info['uvloop']}, asgiref {info['asgiref']}")
    print(f"Mode: {'quick' if args.quick else 'full'}; {repeats} repeats × ~{target:g} s batches, "
          f"{'CPU time, minimum' if args.cpu else 'wall time, median'}; GC {'off' if args.no_gc else 'on'}; "
          f"ratio = anchor time / this time (>1 = faster); "
          f"total {elapsed:.0f} s")
    print()
    print("| benchmark | implementation | time per op | throughput | ratio vs anchor |")
    print("|---|---|---:|---:|---:|")
    last = None
    for r in results:
        bench = r["title"] if r["benchmark"] != last else ""
        last = r["benchmark"]
        ratio = fmt_ratio(r["ratio_vs_anchor"]) + (" (anchor)" if r["anchor"] else "")
        name = f"**{r['implementation']}**" if r["implementation"].startswith("flaskasync") else r["implementation"]
        print(f"| {bench} | {name} | {fmt_time(r['seconds_per_op'])} | "
              f"{fmt_rate(r['throughput'], r['throughput_unit'])} | {ratio} |")
    print()
    for t in target_rows:
        print(f"{'PASS' if t['pass'] else 'MISS'}: {t['target']}: measured {t['measured']:.2f}x "
              f"(need {t['required']:g}x)")

    out = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "command": " ".join([os.path.basename(sys.executable), os.path.relpath(__file__, ROOT)] +
                            (argv if argv is not None else sys.argv[1:])),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "repeats": repeats,
        "target_batch_seconds": target,
        "call_soon_callbacks": ncb,
        "gc": "off" if args.no_gc else "on",
        "clock": "process_time" if args.cpu else "perf_counter",
        "statistic": "min" if args.cpu else "median",
        "only": args.only,
        "elapsed_seconds": elapsed,
        "machine": info,
        "results": results,
        "targets": target_rows,
    }
    if json_path is not None:  # --only without --json: a partial run, not written
        write_json(json_path, out)

    if args.strict and not all(t["pass"] for t in target_rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
