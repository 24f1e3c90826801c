"""ASGI mode against the alternatives, with wrk, one server process each,
on this machine, in one run.

Servers (bench/asgi_apps.py; every one is a single process):

- ``fa-serve``: ``python -m flaskasync serve asgi_apps:app --threads 8``
  (uvicorn + httptools on flaskasync's loop, async views in greenlets);
- ``fa-gunicorn``: ``gunicorn -k flaskasync.GunicornWorker -w 1 --threads 8``;
- ``gthread``: ``gunicorn -k gthread --threads 8 -w 1``, the same Flask app
  as WSGI (FlaskAsync installed: async views run on the app loop, but each
  request holds one of the 8 threads while it waits);
- ``quart``: the same views in Quart on ``uvicorn --loop uvloop --http httptools``.

Runs:

1. the seed view (examples/app.py: 5 × ``sleep(1)`` gathered) at 1,000
   concurrent connections, on all four; target for flaskasync: >= 800 req/s
   with p99 < 1.6 s;
2. at 64 connections: a trivial async view (fa-serve, fa-gunicorn, quart),
   the gather view (10 × ``sleep(0.001)``; fa-serve, quart) and a sync view
   (fa-serve, gthread); targets: async >= 2× gthread's sync view and
   >= 1.2× Quart's, gather >= 1.2× Quart's, sync >= gthread's.

The runs at 64 connections are repeated ``--rounds`` times (3 by default),
interleaved (every server and view once, then again), and each row reports
the run with the median requests per second (all rounds' figures are kept
in the JSON as ``rounds_rps``): on a shared 2-core machine one run of each
varies by 15 % or more from minute to minute, and interleaving spreads that
drift over all servers alike.  The seed runs are done once (``--seed-rounds``).

The load average (``/proc/loadavg``) is recorded before each run: the
machine's cores are shared with wrk and anything else running.

    python bench/bench_asgi.py [--duration 10] [--rounds 3] [--json results/asgi.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import machine_info  # noqa: E402
from bench_flask import fmt_lat, parse_wrk  # noqa: E402

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVERS = {
    "fa-serve": lambda port: [PY, "-m", "flaskasync", "serve", "asgi_apps:app",
                              "--port", str(port), "--threads", "8", "--log-level", "warning"],
    "fa-gunicorn": lambda port: [PY, "-m", "gunicorn", "-k", "flaskasync.GunicornWorker",
                                 "-w", "1", "--threads", "8", "-b", f"127.0.0.1:{port}",
                                 "--log-level", "warning", "--backlog", "2048",
                                 "asgi_apps:app"],
    "gthread": lambda port: [PY, "-m", "gunicorn", "-k", "gthread", "--threads", "8", "-w", "1",
                             "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                             "--backlog", "2048", "--worker-connections", "2000",
                             "asgi_apps:app"],
    "quart": lambda port: [PY, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
                           "--no-access-log", "--log-level", "warning", "--port", str(port),
                           "--backlog", "2048", "asgi_apps:quart_app"],
}

SEED_RUNS = [("fa-serve", "/seed"), ("fa-gunicorn", "/seed"), ("gthread", "/seed"),
             ("quart", "/seed")]
RUNS_64 = [
    ("fa-serve", "/async"), ("fa-gunicorn", "/async"), ("quart", "/async"),
    ("fa-serve", "/gather10"), ("quart", "/gather10"),
    ("fa-serve", "/sync"), ("gthread", "/sync"),
]


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


class Server:
    def __init__(self, kind: str):
        self.kind = kind
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=HERE)
        self.proc = subprocess.Popen(SERVERS[kind](self.port), cwd=HERE, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"GET /sync HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{kind} did not start")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wrk(url: str, connections: int, duration: float, timeout: str) -> tuple[dict, str]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", f"--timeout={timeout}",
           "--latency", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    return parse_wrk(p.stdout), " ".join(cmd)


def median_runs(runs: list) -> list:
    """One row per (server, route): the run with the median requests per
    second (the lower middle one of an even count), with every round's
    figure in rounds_rps; in the order the pairs were first run."""
    groups: dict = {}
    for res in runs:
        groups.setdefault((res["server"], res["route"]), []).append(res)
    rows = []
    for group in groups.values():
        ordered = sorted(group, key=lambda r: r["requests_per_second"])
        row = dict(ordered[(len(ordered) - 1) // 2])
        row["rounds_rps"] = [r["requests_per_second"] for r in group]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--seed-duration", type=float, default=15.0,
                    help="seconds of the seed runs; each connection's first answer comes "
                    "after 1 s, so a run of D s can reach at most c*(D-1)/D req/s")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--seed-connections", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved repetitions of the 64-connection runs (median reported)")
    ap.add_argument("--seed-rounds", type=int, default=1,
                    help="interleaved repetitions of the seed runs (median reported)")
    ap.add_argument("--only", choices=["seed", "64"], default=None)
    ap.add_argument("--json", default=None, help="write the results to this file")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    for mod in ("uvicorn", "httptools", "greenlet", "quart", "uvloop", "gunicorn"):
        try:
            __import__(mod)
        except ImportError:
            print(f"{mod} is not installed: pip install 'flaskasync[serve]' quart uvloop",
                  file=sys.stderr)
            return 2

    if args.rounds < 1 or args.seed_rounds < 1:
        print("--rounds and --seed-rounds must be at least 1", file=sys.stderr)
        return 2
    plan = []
    if args.only in (None, "seed"):
        for i in range(args.seed_rounds):
            plan += [(k, r, args.seed_connections, "10s", i) for k, r in SEED_RUNS]
    if args.only in (None, "64"):
        for i in range(args.rounds):
            plan += [(k, r, args.connections, "5s", i) for k, r in RUNS_64]

    runs = []
    commands = {}
    # A fresh server process for every run: a run at 1,000 connections
    # leaves a queue behind in a thread-per-request server (gthread) that
    # would starve the next run.  The seed runs have no warm-up for the
    # same reason (a warm-up's requests would still be queued).
    for kind, route, conns, tmo, round_ in plan:
        server = Server(kind)
        try:
            url = f"http://127.0.0.1:{server.port}{route}"
            if route != "/seed":
                wrk(url, conns, args.warmup, tmo)
            load = loadavg()
            res, cmd = wrk(url, conns, args.seed_duration if route == "/seed" else args.duration,
                           tmo)
        finally:
            server.stop()
        res.update(server=kind, route=route, connections=conns, loadavg_before=load, round=round_)
        commands[f"{kind} {route}"] = " ".join(SERVERS[kind](server.port)) + "  |  " + cmd
        runs.append(res)
        p99 = res["latency_percentiles_seconds"].get("p99")
        print(f"{kind:12} {route:10} c={conns:<5} r{round_} "
              f"{res['requests_per_second']:9.1f} req/s  "
              f"p50 {fmt_lat(res['latency_percentiles_seconds'].get('p50')):>9}  "
              f"p99 {fmt_lat(p99):>9}  non-2xx {res['non_2xx']}  "
              f"errors {res['socket_errors'] or '-'}  load {load}", flush=True)

    results = median_runs(runs)
    if len(results) < len(runs):
        print("medians of the rounds:")
        for res in results:
            print(f"  {res['server']:12} {res['route']:10} {res['requests_per_second']:9.1f} req/s "
                  f"(rounds: {', '.join(f'{v:.0f}' for v in res['rounds_rps'])})")

    def rps(kind, route):
        for r in results:
            if r["server"] == kind and r["route"] == route:
                return r["requests_per_second"]
        return None

    checks = []

    def check(label, value, target):
        if value is None:
            return
        ok = value >= target
        checks.append({"check": label, "value": round(value, 3), "target": target, "ok": ok})
        print(f"{'PASS' if ok else 'MISS'}  {label}: {value:.2f} (target {target:g})")

    for kind in ("fa-serve", "fa-gunicorn"):
        for r in results:
            if r["server"] == kind and r["route"] == "/seed":
                check(f"{kind} seed req/s at c={r['connections']}", r["requests_per_second"], 800)
                p99 = r["latency_percentiles_seconds"].get("p99")
                if p99 is not None:
                    checks.append({"check": f"{kind} seed p99 < 1.6 s", "value": p99,
                                   "target": 1.6, "ok": p99 < 1.6})
                    print(f"{'PASS' if p99 < 1.6 else 'MISS'}  {kind} seed p99: {p99:.3f} s "
                          "(target < 1.6 s)")
    gs, qa, qg = rps("gthread", "/sync"), rps("quart", "/async"), rps("quart", "/gather10")
    fa, fg, fs = rps("fa-serve", "/async"), rps("fa-serve", "/gather10"), rps("fa-serve", "/sync")
    if fa and gs:
        check("async / gthread sync", fa / gs, 2.0)
    if fa and qa:
        check("async / quart async", fa / qa, 1.2)
    if fg and qg:
        check("gather10 / quart gather10", fg / qg, 1.2)
    if fs and gs:
        check("sync / gthread sync", fs / gs, 1.0)

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": machine_info(), "results": results, "runs": runs,
                       "checks": checks, "commands": commands, "argv": sys.argv}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
