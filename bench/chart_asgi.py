#!/usr/bin/env python
"""Chart of a bench_asgi.py run: requests per second of each server on each
route (the seed view at 1,000 connections, the others at 64), with each
bar's p99 written on it.  Uses matplotlib (``pip install 'flaskasync[bench]'``).

Usage::

    python bench/chart_asgi.py bench/results/asgi-2026-12-06c.json -o docs/img/bench_asgi.png
"""

from __future__ import annotations

import argparse
import json
import sys

SERVERS = ["fa-serve", "fa-gunicorn", "gthread", "quart"]
LABELS = {  # (tick, legend)
    "fa-serve": ("serve", "flaskasync serve"),
    "fa-gunicorn": ("worker", "flaskasync gunicorn worker"),
    "gthread": ("gthread", "gunicorn gthread, 8 threads"),
    "quart": ("Quart", "Quart on uvicorn + uvloop"),
}
COLORS = {"fa-serve": "#1f6feb", "fa-gunicorn": "#54aeff", "gthread": "#8c959f", "quart": "#d4a72c"}


def fmt_latency(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.0f} ms"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="bench_asgi.py --json output")
    ap.add_argument("-o", "--output", default="docs/img/bench_asgi.png")
    args = ap.parse_args(argv)
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: pip install 'flaskasync[bench]'", file=sys.stderr)
        return 2
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.json) as f:
        data = json.load(f)
    results = data["results"]
    routes = []
    for r in results:
        if r["route"] not in routes:
            routes.append(r["route"])
    fig, axes = plt.subplots(1, len(routes), figsize=(3.2 * len(routes), 4.2))
    for ax, route in zip(axes, routes):
        rows = [r for s in SERVERS for r in results if r["server"] == s and r["route"] == route]
        names = [r["server"] for r in rows]
        rps = [r["requests_per_second"] for r in rows]
        bars = ax.bar(range(len(rows)), rps, color=[COLORS[n] for n in names])
        for bar, r in zip(bars, rows):
            p99 = r["latency_percentiles_seconds"].get("p99")
            label = f"{r['requests_per_second']:,.0f}"
            if p99 is not None:
                label += f"\np99 {fmt_latency(p99)}"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(rows)), [LABELS[n][0] for n in names], fontsize=8)
        conns = rows[0]["connections"] if rows else ""
        ax.set_title(f"{route} ({conns} connections)", fontsize=9)
        ax.set_ylim(0, max(rps) * 1.25 if rps else 1)
        ax.tick_params(axis="y", labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("requests per second (higher is better)", fontsize=8)
    m = data.get("machine", {})
    fig.suptitle(f"ASGI mode: one server process each, wrk on the same {m.get('nproc', '?')} vCPUs, "
                 f"Python {m.get('python', '?')}, flaskasync {m.get('flaskasync_git', '?')}", fontsize=10)
    from matplotlib.patches import Patch
    fig.legend(handles=[Patch(color=COLORS[n], label=LABELS[n][1]) for n in SERVERS],
               loc="lower center", ncol=len(SERVERS), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
