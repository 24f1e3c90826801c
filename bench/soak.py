#!/usr/bin/env python
"""Soak: a million requests of a mix of async views, errors and worker RSS.

For each mode this script serves the Flask app defined below (with
``FlaskAsync(app)``) in one worker process:

- ``gthread``: ``gunicorn -k gthread --threads 8 -w 1`` (WSGI);
- ``asgi``: ``gunicorn -k flaskasync.GunicornWorker -w 1 --threads 8``
  (ASGI mode: uvicorn + httptools on flaskasync's loop);
- ``serve`` (not run by default): ``python -m flaskasync serve --threads 8``,
  the same ASGI mode in a single process (that process is the worker);

and drives ``--requests`` requests (default 1,000,000) with wrk and a Lua
script that sends, round-robin, one request to each of four views:

- ``/async``: a trivial async view (body ``async-ok``);
- ``/gather``: ten ``asyncio.sleep(0)`` gathered (body ``gather:45``);
- ``/stream``: an async generator view, 10 chunks (chunked transfer encoding);
- ``/raise``: an async view that raises: Flask's 500 page, expected.

An ``after_request`` hook names the view that answered in an
``X-Soak-View`` header (it also runs for the 500 of an unhandled exception),
so the Lua ``response()`` checks every response against its own view: the
status (200, or 500 for ``/raise``) and the whole body (the 500 page must
contain "Internal Server Error").  A response that fails the check, and
every connect/read/write error and timeout wrk counts, is an *error the
views did not raise*.

wrk runs in segments of ``--every`` requests (default 50,000): each wrk
thread stops after its share (``wrk.thread:stop()`` in ``response()``), the
script then interrupts wrk (SIGINT, as Ctrl-C: wrk prints its summary and
the Lua ``done()`` its counts) and, with the server idle, records the
worker's memory (``VmRSS``, ``RssAnon``, ``VmHWM`` from
``/proc/<worker pid>/status``; the worker, never the gunicorn master), its
threads and open file descriptors, and the app's own ``/_stats`` (live
objects tracked by the GC, ``sys.getallocatedblocks()``).  Each segment
opens new connections (wrk ``-c`` of them).

Warm-up: the first ``--warmup`` requests of each mode (default 100,000).
The RSS at warm-up is the one recorded at that checkpoint; growth is the
RSS at the end minus it; the slope (bytes per request) is a least-squares
fit over the checkpoints from warm-up to the end.  Targets: 0 errors the
views did not raise, growth < 5 MB (5,000,000 bytes) per mode.

The failing view's traceback is formatted, as Flask's log handler does, but
not written: 250,000 tracebacks would be 250 MB of log.  Flask's default
handler is replaced by one that formats each record and drops it.

Writes ``bench/results/soak.json`` (``--json``) and a chart of RSS against
requests for every mode, ``docs/img/soak_rss.png`` (``--chart``; needs
matplotlib: ``.venv/bin/pip install matplotlib``, or ``make soak``)::

    make soak                                     # sets up .venv with wrk and matplotlib, then runs this
    nice -n 5 .venv/bin/python bench/soak.py      # 1,000,000 requests per mode
    .venv/bin/python bench/soak.py --requests 100000 --json /tmp/soak.json --chart /tmp/soak.png

Exit status: 0 when every target is met, 1 when one is missed (or the server
failed), 2 when wrk, gunicorn or the serve extra is missing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading

from flask import Flask, jsonify, request

from flaskasync import FlaskAsync

# ---------------------------------------------------------------------------
# The app (imported by the server as soak:app, with bench/ on the path)
# ---------------------------------------------------------------------------

STREAM_CHUNKS = 10
EXPECTED = {
    "soak_async": "async-ok",
    "soak_gather": "gather:45",
    "soak_stream": "".join(f"chunk-{i};" for i in range(STREAM_CHUNKS)),
}
ROUTES = {"/async": "soak_async", "/gather": "soak_gather", "/stream": "soak_stream",
          "/raise": "soak_raise"}

app = Flask("soak")
FlaskAsync(app)


class _FormatAndDrop(logging.Handler):
    """Formats every record (the traceback of /raise included), writes nothing."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def _quiet_logger() -> None:
    from flask.logging import default_handler

    app.logger.removeHandler(default_handler)
    app.logger.addHandler(_FormatAndDrop())
    app.logger.propagate = False


_quiet_logger()


class SoakError(Exception):
    """What /raise raises; Flask answers it with its 500 page."""


async def _zero(i: int) -> int:
    await asyncio.sleep(0)
    return i


@app.get("/sync")
def sync_view():
    """The readiness probe of bench_flask.Server.wait_ready."""
    return "ok"


@app.get("/async")
async def soak_async():
    return EXPECTED["soak_async"]


@app.get("/gather")
async def soak_gather():
    results = await asyncio.gather(*(_zero(i) for i in range(10)))
    return f"gather:{sum(results)}"


@app.get("/stream")
async def soak_stream():
    for i in range(STREAM_CHUNKS):
        await asyncio.sleep(0)
        yield f"chunk-{i};"


@app.get("/raise")
async def soak_raise():
    raise SoakError("raised on purpose by the soak")


@app.after_request
def _tag(response):
    response.headers["X-Soak-View"] = request.endpoint or "-"
    return response


@app.get("/_stats")
def soak_stats():
    """The worker's own view of its memory; not counted as a soak request."""
    return jsonify(pid=os.getpid(), ppid=os.getppid(), gc_objects=len(gc.get_objects()),
                   allocated_blocks=sys.getallocatedblocks(),
                   python_threads=threading.active_count())


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------

# The wrk script.  Python fills in the quota per thread (init args) and the
# expected bodies.  Counters are scalar globals so that done() can read them
# with thread:get().
LUA = r"""
local paths = {"/async", "/gather", "/stream", "/raise"}
local expected = {soak_async = %(async)s, soak_gather = %(gather)s, soak_stream = %(stream)s}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  quota = tonumber(args[1])
  reqs = {}
  for i, p in ipairs(paths) do reqs[i] = wrk.format("GET", p) end
  i = 0
  n = 0
  bad = 0
  shown = 0
  stopped = 0
  got_soak_async, got_soak_gather, got_soak_stream, got_soak_raise = 0, 0, 0, 0
end

function request()
  i = i + 1
  return reqs[(i - 1) %% 4 + 1]
end

function response(status, headers, body)
  n = n + 1
  local view = nil
  for k, v in pairs(headers) do
    if string.lower(k) == "x-soak-view" then view = v end
  end
  local good = false
  if view == "soak_raise" then
    good = status == 500 and string.find(body, "Internal Server Error", 1, true) ~= nil
  elseif view ~= nil and expected[view] ~= nil then
    good = status == 200 and body == expected[view]
  end
  if good then
    _G["got_" .. view] = _G["got_" .. view] + 1
  else
    bad = bad + 1
    if shown < 5 then
      shown = shown + 1
      local b = string.gsub(string.sub(body, 1, 200), "[^%%w%%p ]", ".")
      io.stdout:write("SOAK-BAD\t" .. status .. "\t" .. tostring(view) .. "\t" .. b .. "\n")
      io.stdout:flush()
    end
  end
  if n >= quota and stopped == 0 then
    stopped = 1
    io.stdout:write("SOAK-THREAD-DONE\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local t = {n = 0, bad = 0, soak_async = 0, soak_gather = 0, soak_stream = 0, soak_raise = 0}
  for _, th in ipairs(threads) do
    t.n = t.n + th:get("n")
    t.bad = t.bad + th:get("bad")
    for _, v in ipairs({"soak_async", "soak_gather", "soak_stream", "soak_raise"}) do
      t[v] = t[v] + th:get("got_" .. v)
    end
  end
  local e = summary.errors
  io.stdout:write(string.format(
    'SOAK-RESULT {"responses": %%d, "bad": %%d, "ok": {"async": %%d, "gather": %%d, "stream": %%d, "raise": %%d}, '
    .. '"wrk_requests": %%d, "connect": %%d, "read": %%d, "write": %%d, "timeout": %%d, "status": %%d}\n',
    t.n, t.bad, t.soak_async, t.soak_gather, t.soak_stream, t.soak_raise,
    summary.requests, e.connect, e.read, e.write, e.timeout, e.status))
  io.stdout:flush()
end
"""

WARMUP_DEFAULT = 100_000
GROWTH_TARGET_BYTES = 5_000_000


def lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_script() -> str:
    return LUA % {"async": lua_str(EXPECTED["soak_async"]),
                  "gather": lua_str(EXPECTED["soak_gather"]),
                  "stream": lua_str(EXPECTED["soak_stream"])}


def main(argv=None) -> int:
    import argparse
    import json
    import math
    import queue
    import signal
    import subprocess
    import tempfile
    import time
    from shutil import which

    HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, HERE)
    import bench_flask
    from _common import command_line, utc_now, write_json
    from bench_asgi import loadavg
    from bench_flask import free_port, http_get

    modes = {
        "gthread": lambda port: [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "8",
                                 "-w", "1", "-b", f"127.0.0.1:{port}", "--pythonpath", HERE,
                                 "--log-level", "warning", "--graceful-timeout", "5", "soak:app"],
        "asgi": lambda port: [sys.executable, "-m", "gunicorn", "-k", "flaskasync.GunicornWorker",
                              "--threads", "8", "-w", "1", "-b", f"127.0.0.1:{port}",
                              "--pythonpath", HERE, "--log-level", "warning",
                              "--graceful-timeout", "5", "soak:app"],
        "serve": lambda port: [sys.executable, "-m", "flaskasync", "serve", "soak:app",
                               "--port", str(port), "--threads", "8", "--log-level", "warning"],
    }

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000, help="requests per mode (default 1,000,000)")
    ap.add_argument("--every", type=int, default=50_000,
                    help="requests between two checkpoints (default 50,000)")
    ap.add_argument("--warmup", type=int, default=WARMUP_DEFAULT,
                    help="requests of warm-up; RSS growth is measured from there (default 100,000)")
    ap.add_argument("--modes", default="gthread,asgi", help="comma-separated subset of: " + ", ".join(modes))
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--wrk-timeout", default="10s", help="wrk's --timeout: a slower response is an error")
    ap.add_argument("--segment-timeout", type=float, default=1800.0,
                    help="seconds a segment may take before wrk is interrupted (the shortfall is an error)")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "soak.json"))
    ap.add_argument("--chart", default=os.path.join(os.path.dirname(HERE), "docs", "img", "soak_rss.png"))
    args = ap.parse_args(argv)

    mode_names = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in mode_names:
        if m not in modes:
            ap.error(f"unknown mode {m!r}")
    if args.every <= 0 or args.requests <= 0 or args.wrk_threads <= 0:
        ap.error("--requests, --every and --wrk-threads must be positive")
    if which("wrk") is None:
        print("soak: wrk is not installed (EXTRA_TOOLS=wrk ./scripts/bootstrap.sh, or make soak)",
              file=sys.stderr)
        return 2
    for mod in ("gunicorn", "uvicorn", "httptools", "greenlet", "uvicorn_worker"):
        try:
            __import__(mod)
        except ImportError:
            print(f"soak: {mod} is not installed: pip install 'flaskasync[serve]'", file=sys.stderr)
            return 2

    class Server(bench_flask.Server):
        """bench_flask's server (readiness probe, log file, stop by process
        group) on another command line."""

        def __init__(self, mode: str, log_path: str):
            # Not super().__init__(): that one starts flask_app:app.
            self.variant = mode
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.cmd = modes[mode](self.port)
            self.log_path = log_path
            self._log = open(log_path, "w")
            env = dict(os.environ, PYTHONPATH=HERE, PYTHONUNBUFFERED="1")
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=HERE)

    def proc_status(pid: int) -> dict:
        out = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads", "PPid"):
                    parts = value.split()
                    out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        return out

    def stats(server) -> dict:
        status, body = http_get(server.url + "/_stats", timeout=30)
        if status != 200:
            raise RuntimeError(f"/_stats: HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    def check_views(server) -> None:
        for path, view in ROUTES.items():
            status, body = http_get(server.url + path, timeout=10)
            want = 500 if view == "soak_raise" else 200
            ok = status == want and (b"Internal Server Error" in body if view == "soak_raise"
                                     else body.decode() == EXPECTED[view])
            if not ok:
                raise RuntimeError(f"{server.variant} {path}: HTTP {status} {body[:300]!r}\n{server.log_tail()}")

    lua_fd, lua_path = tempfile.mkstemp(prefix="soak-", suffix=".lua")
    with os.fdopen(lua_fd, "w") as f:
        f.write(lua_script())

    def run_segment(url: str, count: int) -> dict:
        """wrk until its threads have count responses between them."""
        quota = math.ceil(count / args.wrk_threads)
        cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", "-d3600s",
               f"--timeout={args.wrk_timeout}", "-s", lua_path, url, "--", str(quota)]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue = queue.Queue()

        def reader():
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=reader, daemon=True).start()
        out, done_threads, interrupted, t_done = [], 0, False, None
        deadline = t0 + args.segment_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                out.append(line)
                if line.startswith("SOAK-THREAD-DONE"):
                    done_threads += 1
            if not interrupted and (done_threads >= args.wrk_threads or time.monotonic() >= deadline):
                # wrk's main thread sleeps -d seconds; SIGINT ends the sleep,
                # as Ctrl-C does, and wrk reports.
                t_done = time.monotonic()
                proc.send_signal(signal.SIGINT)
                interrupted = True
        proc.wait(timeout=60)
        text = "".join(out)
        result = None
        bad_samples = []
        for line in out:
            if line.startswith("SOAK-RESULT "):
                result = json.loads(line[len("SOAK-RESULT "):])
            elif line.startswith("SOAK-BAD\t"):
                bad_samples.append(line.rstrip("\n").split("\t", 3)[1:])
        if result is None:
            raise RuntimeError(f"{' '.join(cmd)}: no SOAK-RESULT (exit {proc.returncode}):\n{text[-3000:]}")
        result["threads_finished"] = done_threads
        result["seconds"] = (t_done or time.monotonic()) - t0
        result["bad_samples"] = bad_samples
        try:
            w = bench_flask.parse_wrk(text)
            result["latency_avg_seconds"] = w.get("latency_avg_seconds")
            result["latency_max_seconds"] = w.get("latency_max_seconds")
        except ValueError:
            pass
        result["command"] = " ".join(cmd[:-2] + ["--", "QUOTA"]).replace(lua_path, "SOAK.lua")
        return result

    def unraised(seg: dict) -> int:
        return seg["bad"] + seg["connect"] + seg["read"] + seg["write"] + seg["timeout"]

    def slope(points: list[tuple[int, int]]) -> float | None:
        if len(points) < 2:
            return None
        mx = sum(p[0] for p in points) / len(points)
        my = sum(p[1] for p in points) / len(points)
        den = sum((p[0] - mx) ** 2 for p in points)
        return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else None

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    info = bench_flask.machine_info()
    out: dict = {
        "schema": 1,
        "command": command_line(__file__, argv),
        "date_utc": utc_now(),
        "machine": info,
        "requests_per_mode": args.requests,
        "every": args.every,
        "warmup_requests": args.warmup,
        "growth_target_bytes": GROWTH_TARGET_BYTES,
        "mix": list(ROUTES),
        "modes": {},
    }
    failed = False
    try:
        for mode in mode_names:
            log_path = os.path.join(tempfile.gettempdir(), f"soak-{mode}-{os.getpid()}.log")
            server = Server(mode, log_path)
            rec: dict = {"server_command": " ".join(os.path.basename(c) if i == 0 else c
                                                    for i, c in enumerate(server.cmd)).replace(HERE, "bench"),
                         "log": log_path, "checkpoints": []}
            out["modes"][mode] = rec
            try:
                server.wait_ready()
                check_views(server)
                st = stats(server)
                worker = st["pid"]
                if mode != "serve" and worker == server.proc.pid:
                    raise RuntimeError(f"{mode}: /_stats answered from the master ({worker})")
                rec["master_pid"], rec["worker_pid"] = server.proc.pid, worker
                start = proc_status(worker)
                rec["start"] = {**start, **st}
                print(f"[{mode}] {server.url}, worker pid {worker}, RSS {start['VmRSS'] / 2**20:.1f} MiB "
                      f"at start; load {loadavg()}", file=sys.stderr, flush=True)
                done = 0
                t_mode = time.monotonic()
                while done < args.requests:
                    n = min(args.every, args.requests - done)
                    seg = run_segment(server.url + "/", n)
                    done += seg["responses"]
                    if server.proc.poll() is not None:
                        raise RuntimeError(f"{mode}: the server exited; log:\n{server.log_tail()}")
                    st = stats(server)
                    if st["pid"] != worker:
                        seg["bad"] += 1  # a worker that was replaced is an error
                        seg["bad_samples"].append(["worker replaced", str(worker), str(st["pid"])])
                        worker = st["pid"]
                    ps = proc_status(worker)
                    if seg["threads_finished"] < args.wrk_threads:
                        # interrupted by --segment-timeout: the requests it did not get
                        seg["timeout"] += max(0, n - seg["responses"])
                    cp = {"requests": done, **ps, **{k: st[k] for k in ("gc_objects", "allocated_blocks",
                                                                          "python_threads")},
                          "segment": {k: v for k, v in seg.items() if k != "command"},
                          "unraised_errors": unraised(seg), "loadavg": loadavg()}
                    rec["checkpoints"].append(cp)
                    rec.setdefault("wrk_command", seg["command"])
                    print(f"[{mode}] {done:>9,} requests  {seg['responses'] / seg['seconds']:7.0f} req/s  "
                          f"errors {cp['unraised_errors']}  500s {seg['ok']['raise']}  "
                          f"RSS {ps['VmRSS'] / 2**20:7.2f} MiB (anon {ps['RssAnon'] / 2**20:.2f})  "
                          f"gc objects {st['gc_objects']:,}  blocks {st['allocated_blocks']:,}  "
                          f"fds {ps['fds']}  threads {ps['Threads']}  load {cp['loadavg']}",
                          file=sys.stderr, flush=True)
                    if seg["responses"] == 0:
                        raise RuntimeError(f"{mode}: a segment got no response; log:\n{server.log_tail()}")
                rec["seconds"] = time.monotonic() - t_mode
            except Exception as exc:
                print(f"soak: {mode}: {exc}", file=sys.stderr)
                rec["failure"] = str(exc)
                failed = True
            finally:
                server.stop()
                rec["log_tail"] = server.log_tail(20)
                rec["log_bytes"] = os.path.getsize(log_path)
            summarize(rec, args.warmup, slope)
    finally:
        os.unlink(lua_path)

    targets = []
    for mode, rec in out["modes"].items():
        targets.append({"mode": mode, "target": "0 errors the views did not raise",
                        "measured": rec.get("unraised_errors"), "pass": rec.get("unraised_errors") == 0
                        and "failure" not in rec})
        g = rec.get("growth_bytes")
        targets.append({"mode": mode, "target": f"RSS growth after warm-up < {GROWTH_TARGET_BYTES:,} bytes",
                        "measured": g, "pass": g is not None and g < GROWTH_TARGET_BYTES})
    out["targets"] = targets

    print()
    print("| mode | requests | errors not raised by the views | 500s from /raise | RSS at warm-up | "
          "RSS at end | growth | slope after warm-up | req/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, rec in out["modes"].items():
        print(f"| {mode} | {rec.get('requests', 0):,} | {rec.get('unraised_errors')} | "
              f"{rec.get('expected_500s', 0):,} | {mib(rec.get('rss_warmup'))} | {mib(rec.get('rss_end'))} | "
              f"{mib(rec.get('growth_bytes'), signed=True)} | "
              f"{'–' if rec.get('slope_bytes_per_request') is None else format(rec['slope_bytes_per_request'], '.3f') + ' B/req'} | "
              f"{rec.get('requests_per_second', 0):.0f} |")
    print()
    for t in targets:
        print(f"{'PASS' if t['pass'] else 'MISS'}: {t['mode']}: {t['target']}: {t['measured']}")
    write_json(args.json, out)
    try:
        chart(out, args.chart)
    except ImportError:
        print("soak: matplotlib is not installed, no chart (.venv/bin/pip install matplotlib)",
              file=sys.stderr)
    if failed or not all(t["pass"] for t in targets):
        return 1
    return 0


def mib(b, signed: bool = False) -> str:
    if b is None:
        return "–"
    return f"{b / 2**20:+.2f} MiB" if signed else f"{b / 2**20:.2f} MiB"


def summarize(rec: dict, warmup: int, slope) -> None:
    cps = rec["checkpoints"]
    rec["requests"] = cps[-1]["requests"] if cps else 0
    rec["unraised_errors"] = sum(cp["unraised_errors"] for cp in cps)
    rec["expected_500s"] = sum(cp["segment"]["ok"]["raise"] for cp in cps)
    rec["responses_by_view"] = {v: sum(cp["segment"]["ok"][v] for cp in cps)
                                for v in ("async", "gather", "stream", "raise")}
    secs = sum(cp["segment"]["seconds"] for cp in cps)
    rec["requests_per_second"] = rec["requests"] / secs if secs else 0
    if not cps:
        return
    rec["rss_end"] = cps[-1]["VmRSS"]
    after = [cp for cp in cps if cp["requests"] >= warmup]
    if after and after[0] is not cps[-1]:
        w = after[0]
        rec["warmup_checkpoint_requests"] = w["requests"]
        rec["rss_warmup"] = w["VmRSS"]
        rec["growth_bytes"] = cps[-1]["VmRSS"] - w["VmRSS"]
        rec["rss_anon_growth_bytes"] = cps[-1]["RssAnon"] - w["RssAnon"]
        rec["rss_max_after_warmup"] = max(cp["VmRSS"] for cp in after)
        rec["gc_objects_growth"] = cps[-1]["gc_objects"] - w["gc_objects"]
        rec["allocated_blocks_growth"] = cps[-1]["allocated_blocks"] - w["allocated_blocks"]
        rec["slope_bytes_per_request"] = slope([(cp["requests"], cp["VmRSS"]) for cp in after])


def chart(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for mode, rec in out["modes"].items():
        pts = [(0, rec["start"]["VmRSS"])] if "start" in rec else []
        pts += [(cp["requests"], cp["VmRSS"]) for cp in rec["checkpoints"]]
        if not pts:
            continue
        label = {"gthread": "gunicorn gthread (1 worker, 8 threads)",
                 "asgi": "ASGI mode: gunicorn -k flaskasync.GunicornWorker (1 worker)",
                 "serve": "ASGI mode: python -m flaskasync serve"}.get(mode, mode)
        ax.plot([p[0] / 1000 for p in pts], [p[1] / 2**20 for p in pts], marker="o", markersize=3,
                label=label)
    ax.axvline(out["warmup_requests"] / 1000, color="grey", linestyle="--", linewidth=1)
    ax.text(out["warmup_requests"] / 1000, 0.98, " end of warm-up", color="grey", fontsize=8,
            va="top", transform=ax.get_xaxis_transform())
    ax.set_xlabel("requests (thousands)")
    ax.set_ylabel("worker RSS (MiB)")
    ax.set_title("flaskasync soak: worker RSS (VmRSS) against requests", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
