#!/usr/bin/env python
"""Web benchmark: Flask async views under gunicorn, flaskasync vs Flask's default.

For each variant (``default``: plain Flask, async views through asgiref;
``flaskasync``: ``FlaskAsync(app)`` installed) this script

1. starts ``gunicorn -k gthread --threads 8 -w 1`` on 127.0.0.1 and a free
   port, serving bench/flask_app.py with ``FLASKASYNC=0`` or ``1``;
2. checks every route answers 200 and that async views ran on the loop the
   variant promises (flaskasync.Loop or not);
3. warms every route up with a short wrk run;
4. runs ``wrk -t2 -c16 -d10s --latency`` against /sync, /async, /seed and
   /gather10, and parses requests/s and latency;
5. stops the server.

It prints a Markdown table with each route's req/s relative to the /sync view
of the same server, writes bench/results/flask.json, and prints PASS/MISS
lines for the targets (flaskasync variant): /async >= 0.95× /sync and
/gather10 >= 0.8× /sync.

Note that wrk and the server share the machine's CPUs; the numbers are for
comparing variants and routes in one run, not absolute capacity.

Exit status: 0 on success, 2 when FlaskAsync (or wrk/gunicorn) is not
available yet, 1 on a server or measurement failure (or a missed target
with --strict).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from shutil import which

import _common
from _common import pkg_version, write_json

HERE = os.path.dirname(os.path.abspath(__file__))

# The upstream service /fanout calls (bench_net.py's HTTP server, in a
# subprocess), started by main() when /fanout is measured.
UPSTREAM = None
ROOT = os.path.dirname(HERE)

ROUTES = ["/sync", "/async", "/seed", "/gather10", "/fanout"]
VARIANTS = {"default": "0", "flaskasync": "1"}
VARIANT_TITLES = {"default": "Flask default (asgiref)", "flaskasync": "flaskasync (FlaskAsync(app))"}
TARGETS = [
    # (description, variant, route, required ratio vs /sync of the same variant)
    ("trivial async view >= 0.95x the sync view's req/s", "flaskasync", "/async", 0.95),
    ("gather10 view >= 0.8x the sync view's req/s", "flaskasync", "/gather10", 0.8),
]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(s: str) -> float:
    """wrk latency like '1.23ms', '850.00us', '2.01s' -> seconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", s.strip())
    if not m:
        raise ValueError(f"cannot parse wrk duration {s!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    res: dict = {}
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        raise ValueError("no 'Requests/sec' in wrk output:\n" + out)
    res["requests_per_second"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    if m:
        res["requests"] = int(m.group(1))
        res["wrk_duration_seconds"] = parse_duration(m.group(2))
    m = re.search(r"Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", out)
    if m:
        res["latency_avg_seconds"] = parse_duration(m.group(1))
        res["latency_stdev_seconds"] = parse_duration(m.group(2))
        res["latency_max_seconds"] = parse_duration(m.group(3))
    pct = {}
    for p, v in re.findall(r"^\s*(\d+)%\s+([\d.]+\w+)\s*$", out, re.M):
        pct[f"p{p}"] = parse_duration(v)
    res["latency_percentiles_seconds"] = pct
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    return res


def fmt_lat(s: float | None) -> str:
    if s is None:
        return "–"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} µs"


def machine_info() -> dict:
    info = _common.machine_info()
    try:
        info["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True,
                                     text=True).stdout.split("\n")[0].strip()
    except OSError:
        info["wrk"] = None
    for name in ("flask", "gunicorn"):
        info[name] = pkg_version(name)
    return info


# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------


class Server:
    """One gunicorn master (and its worker) that this script started."""

    def __init__(self, variant: str, threads: int, workers: int, log_path: str):
        self.variant = variant
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, FLASKASYNC=VARIANTS[variant], PYTHONUNBUFFERED="1",
                   UPSTREAM_URL=UPSTREAM.url if UPSTREAM is not None else "")
        cmd = [
            sys.executable, "-m", "gunicorn",
            "-k", "gthread", "--threads", str(threads), "-w", str(workers),
            "-b", f"127.0.0.1:{self.port}",
            "--pythonpath", HERE,
            "--log-level", "warning",
            "--graceful-timeout", "5",
            "flask_app:app",
        ]
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "w")
        # A new session: the server's process group is ours alone, so stop()
        # can signal exactly the master and the workers we started.
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=ROOT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn ({self.variant}) exited with {self.proc.returncode}; "
                                   f"log:\n{self.log_tail()}")
            try:
                status, _ = http_get(self.url + "/sync", timeout=1.0)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn ({self.variant}) not ready after {timeout:g}s ({last}); "
                           f"log:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self._log.close()


def check_routes(server: Server, routes: list[str]) -> dict:
    """Every route must answer 200; async views must run where the variant says."""
    for route in routes:
        status, body = http_get(server.url + route)
        if status != 200:
            raise RuntimeError(f"{server.variant} {route}: HTTP {status}: {body[:500]!r}\n"
                               f"server log:\n{server.log_tail()}")
    status, body = http_get(server.url + "/_variant")
    if status != 200:
        raise RuntimeError(f"{server.variant} /_variant: HTTP {status}: {body[:500]!r}")
    info = json.loads(body)
    on_flaskasync = info["loop"].startswith("flaskasync.")
    if on_flaskasync != (server.variant == "flaskasync"):
        raise RuntimeError(f"{server.variant}: async views ran on {info['loop']}, not what this variant measures")
    return info


def run_wrk(url: str, threads: int, connections: int, duration: float, timeout: str) -> tuple[dict, str]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", f"--timeout={timeout}",
           "--latency", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return parse_wrk(p.stdout), " ".join(cmd)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up per route (default 2)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every route this many times (interleaved); report the median req/s")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--wrk-timeout", default="5s")
    ap.add_argument("--gunicorn-threads", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--variants", default="default,flaskasync",
                    help="comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--routes", default=",".join(ROUTES), help="comma-separated routes; /sync is always included")
    ap.add_argument("--json", metavar="PATH", default=os.path.join(HERE, "results", "flask.json"))
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}")
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if "/sync" not in routes:
        routes.insert(0, "/sync")
    if "/fanout" in routes:
        try:
            import httpx  # noqa: F401
        except ImportError:
            print("bench_flask: httpx is not installed: /fanout skipped", file=sys.stderr)
            routes.remove("/fanout")
    if "/fanout" in routes:
        global UPSTREAM
        from bench_net import HttpServerProcess

        UPSTREAM = HttpServerProcess()
        print(f"[upstream] {UPSTREAM.url} ({UPSTREAM.loop_kind})", file=sys.stderr, flush=True)
        try:
            return _main(args, argv, variants, routes)
        finally:
            UPSTREAM.stop()
    return _main(args, argv, variants, routes)


def _main(args, argv, variants, routes) -> int:

    if "flaskasync" in variants:
        try:
            from flaskasync import FlaskAsync  # noqa: F401
        except Exception as exc:  # ImportError, AttributeError from a missing submodule
            print(f"bench_flask: flaskasync.FlaskAsync is not available yet ({type(exc).__name__}: {exc}).\n"
                  f"The Flask integration must be importable ('from flaskasync import FlaskAsync') "
                  f"before this benchmark can run. (Use --variants default to measure Flask alone.)",
                  file=sys.stderr)
            return 2
    for tool in ("wrk",):
        if which(tool) is None:
            print(f"bench_flask: {tool} not found on PATH", file=sys.stderr)
            return 2
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        print("bench_flask: gunicorn is not installed in this Python", file=sys.stderr)
        return 2

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    info = machine_info()
    results = []
    variant_info = {}
    wrk_cmd = None
    server_cmds = {}
    t0 = time.monotonic()
    for variant in variants:
        log_path = os.path.join(HERE, "results", f"gunicorn-{variant}.log")
        server = Server(variant, args.gunicorn_threads, args.workers, log_path)
        server_cmds[variant] = " ".join(["FLASKASYNC=" + VARIANTS[variant]] +
                                        [os.path.basename(server.cmd[0])] + server.cmd[1:])
        try:
            server.wait_ready()
            variant_info[variant] = check_routes(server, routes)
            print(f"[{variant}] gunicorn on {server.url}, async views on {variant_info[variant]['loop']}",
                  file=sys.stderr, flush=True)
            for route in routes:
                if args.warmup > 0:
                    run_wrk(server.url + route, args.wrk_threads, args.connections, args.warmup, args.wrk_timeout)
            samples: dict[str, list[dict]] = {r: [] for r in routes}
            for _ in range(args.rounds):
                for route in routes:
                    res, wrk_cmd = run_wrk(server.url + route, args.wrk_threads, args.connections,
                                           args.duration, args.wrk_timeout)
                    samples[route].append(res)
                    print(f"[{variant}] {route}: {res['requests_per_second']:.1f} req/s", file=sys.stderr,
                          flush=True)
            if server.proc.poll() is not None:
                raise RuntimeError(f"gunicorn ({variant}) died during the run; log:\n{server.log_tail()}")
        except Exception as exc:
            print(f"bench_flask: {variant}: {exc}", file=sys.stderr)
            return 1
        finally:
            server.stop()
        for route in routes:
            runs = samples[route]
            rps = [r["requests_per_second"] for r in runs]
            med_run = sorted(runs, key=lambda r: r["requests_per_second"])[len(runs) // 2]
            results.append({
                "variant": variant,
                "route": route,
                "requests_per_second": statistics.median(rps),
                "requests_per_second_runs": rps,
                "latency_avg_seconds": med_run.get("latency_avg_seconds"),
                "latency_percentiles_seconds": med_run.get("latency_percentiles_seconds", {}),
                "non_2xx": sum(r["non_2xx"] for r in runs),
                "socket_errors": {k: sum(r["socket_errors"].get(k, 0) for r in runs)
                                  for k in ("connect", "read", "write", "timeout")},
                "runs": runs,
            })
    elapsed = time.monotonic() - t0

    by = {(r["variant"], r["route"]): r for r in results}
    for r in results:
        base = by[(r["variant"], "/sync")]["requests_per_second"]
        r["ratio_vs_sync"] = r["requests_per_second"] / base if base else None
    target_rows = []
    for desc, variant, route, need in TARGETS:
        if (variant, route) not in by:
            continue
        ratio = by[(variant, route)]["ratio_vs_sync"]
        target_rows.append({"target": desc, "variant": variant, "route": route, "required": need,
                            "measured": ratio, "pass": ratio is not None and ratio >= need})

    print(f"Machine: {info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}, "
          f"Flask {info['flask']}, asgiref {info['asgiref']}, gunicorn {info['gunicorn']}, "
          f"flaskasync {info['flaskasync']} ({info['flaskasync_git']}), {info['wrk']}")
    print(f"gunicorn -k gthread --threads {args.gunicorn_threads} -w {args.workers}; "
          f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration:g}s "
          f"(warm-up {args.warmup:g}s per route, {args.rounds} round(s), median); total {elapsed:.0f} s")
    print()
    print("| server | route | req/s | ratio vs /sync | avg latency | p50 | p99 | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    last = None
    for r in results:
        name = VARIANT_TITLES[r["variant"]] if r["variant"] != last else ""
        last = r["variant"]
        pct = r["latency_percentiles_seconds"]
        errors = r["non_2xx"] + sum(r["socket_errors"].values())
        print(f"| {name} | {r['route']} | {r['requests_per_second']:.0f} | {r['ratio_vs_sync']:.2f}× | "
              f"{fmt_lat(r['latency_avg_seconds'])} | {fmt_lat(pct.get('p50'))} | {fmt_lat(pct.get('p99'))} | "
              f"{errors} |")
    if "default" in variants and "flaskasync" in variants:
        print()
        print("flaskasync vs Flask default, same route: " + ", ".join(
            f"{route} {by[('flaskasync', route)]['requests_per_second'] / by[('default', route)]['requests_per_second']:.2f}×"
            for route in routes))
    print()
    for t in target_rows:
        print(f"{'PASS' if t['pass'] else 'MISS'}: {t['target']}: measured {t['measured']:.2f}x "
              f"(need {t['required']:g}x)")

    out = {
        "schema": 1,
        "command": " ".join([os.path.basename(sys.executable), os.path.relpath(__file__, ROOT)] +
                            (argv if argv is not None else sys.argv[1:])),
        "server_commands": server_cmds,
        "wrk_command": wrk_cmd,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_seconds": args.duration,
        "warmup_seconds": args.warmup,
        "rounds": args.rounds,
        "elapsed_seconds": elapsed,
        "machine": info,
        "variants": variant_info,
        "results": results,
        "targets": target_rows,
    }
    write_json(args.json, out)
    if args.strict and not all(t["pass"] for t in target_rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
