#!/usr/bin/env python
"""Turn bench results JSON into SVG bar charts, with no third-party packages.

Two kinds of input are recognised from their contents:

* bench/results/core.json (bench_core.py) -> docs/img/bench_core.svg.  Each
  benchmark is a panel; each implementation a bar of its speed relative to
  the panel's anchor (anchor time / its time) on a log scale centred on 1×:
  bars to the right are faster than the anchor, bars to the left slower.  The
  measured time per operation and the ratio are printed beside every bar.
* bench/results/flask.json (bench_flask.py) -> docs/img/bench_flask.svg.
  Each route is a panel with one bar per server variant (requests/s on a
  linear scale); beside every bar its req/s and its ratio to the same
  server's /sync.  Where a target applies, a dashed marker shows the req/s
  the target needs (the required ratio × that server's /sync).
* bench/results/net.json (bench_net.py) -> docs/img/bench_net.svg.  Each
  case (echo mode × message size, HTTP fan-out) is a panel with one bar per
  loop: its throughput relative to asyncio's loop on a linear scale shared by
  all panels, with a line at 1×; beside every bar the measured rate (and
  MiB/s for echo) and, for flaskasync, its ratios to asyncio and uvloop.  A
  case a loop could not run is shown as "n/a (...)" without a bar.

Usage::

    python bench/chart.py [bench/results/core.json] [-o docs/img/bench_core.svg]
    python bench/chart.py --flask            # bench/results/flask.json -> docs/img/bench_flask.svg
    python bench/chart.py bench/results/flask.json [-o docs/img/bench_flask.svg]
    python bench/chart.py --net              # bench/results/net.json -> docs/img/bench_net.svg
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

from _common import fmt_ratio, fmt_time
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Layout (pixels).
WIDTH = 1000
LABEL_X = 12  # left edge of the implementation labels
PLOT_X0 = 380  # plot area
PLOT_X1 = 790
VALUE_X = 800  # value column
TOP = 70
ROW_H = 20
BAR_H = 13
GROUP_GAP = 34
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"

COLORS = {
    "flaskasync": "#1f6fb2",
    "flaskasync-info": "#8db8dc",
    "uvloop": "#e08a1e",
    "asgiref": "#b8433f",
    "asyncio": "#7f7f7f",
}


def family(name: str) -> str:
    if "(info)" in name:
        return "flaskasync-info"
    if name.startswith("flaskasync"):
        return "flaskasync"
    if "asgiref" in name:
        return "asgiref"
    if "uvloop" in name:
        return "uvloop"
    return "asyncio"


def fmt_tick(v: float) -> str:
    return f"{v:g}×"


def text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>')


def render(data: dict) -> str:
    results = data["results"]
    groups: list[tuple[str, str, list[dict]]] = []
    for r in results:
        if not groups or groups[-1][0] != r["benchmark"]:
            groups.append((r["benchmark"], r["title"], []))
        groups[-1][2].append(r)

    ratios = [r["ratio_vs_anchor"] for r in results]
    lo = 10 ** math.floor(math.log10(min(ratios + [1.0])))
    hi = 10 ** math.ceil(math.log10(max(ratios + [1.0])))
    if hi / lo < 10:
        hi *= 10
    llo, lhi = math.log10(lo), math.log10(hi)

    def xpos(v: float) -> float:
        return PLOT_X0 + (math.log10(v) - llo) / (lhi - llo) * (PLOT_X1 - PLOT_X0)

    height = TOP + sum(GROUP_GAP + ROW_H * len(g[2]) for g in groups) + 40
    m = data.get("machine", {})
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="{FONT}">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        text(LABEL_X, 24, "flaskasync core benchmarks: speed relative to the anchor (log scale; right = faster)",
             size=15, weight="bold"),
        text(LABEL_X, 44,
             f"{m.get('cpu_model', '?')}, {m.get('nproc', '?')} CPUs, Python {m.get('python', '?')}, "
             f"flaskasync {m.get('flaskasync', '?')} (libuv {m.get('flaskasync_libuv', '?')}), "
             f"uvloop {m.get('uvloop', '?')}, asgiref {m.get('asgiref', '?')}; "
             f"median of {data.get('repeats', '?')} repeats, {data.get('mode', '?')} run",
             size=11, fill="#555"),
    ]

    y = TOP
    plot_top = TOP
    # Vertical decade grid lines, drawn under the bars over the full height.
    grid = []
    ticks = []
    d = llo
    while d <= lhi + 1e-9:
        v = 10 ** d
        x = xpos(v)
        is_one = abs(d) < 1e-9
        style = 'stroke="#444"' if is_one else 'stroke="#ddd" stroke-dasharray="3,3"'
        grid.append(f'<line x1="{x:.1f}" y1="{plot_top - 8}" x2="{x:.1f}" y2="{height - 34}" '
                    f'{style} stroke-width="1"/>')
        ticks.append(text(x, height - 20, fmt_tick(round(v, 6)), size=11, anchor="middle", fill="#555"))
        d += 1
    out += grid

    one = xpos(1.0)
    for gid, title, rows in groups:
        y += GROUP_GAP
        out.append(text(LABEL_X, y - 10, title, size=13, weight="bold"))
        for r in rows:
            cy = y + ROW_H / 2
            fam = family(r["implementation"])
            ratio = r["ratio_vs_anchor"]
            x = xpos(ratio)
            x0, x1 = (one, x) if x >= one else (x, one)
            w = max(x1 - x0, 1.5)
            out.append(text(LABEL_X + 8, cy + 4, r["implementation"], size=11,
                            weight="bold" if fam == "flaskasync" else "normal"))
            out.append(f'<rect x="{x0:.1f}" y="{cy - BAR_H / 2:.1f}" width="{w:.1f}" height="{BAR_H}" '
                       f'fill="{COLORS[fam]}"><title>{escape(r["implementation"])}: '
                       f'{escape(fmt_time(r["seconds_per_op"]))} per op, {escape(fmt_ratio(ratio))}</title></rect>')
            label = f"{fmt_time(r['seconds_per_op'])}  ·  {fmt_ratio(ratio)}"
            if r.get("anchor"):
                label += " (anchor)"
            out.append(text(VALUE_X, cy + 4, label, size=11,
                            weight="bold" if fam == "flaskasync" else "normal"))
            y += ROW_H
    out += ticks
    out.append(text(PLOT_X1, height - 6, "time per op · ratio = anchor time / this time", size=10,
                    anchor="end", fill="#777"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


FLASK_COLORS = {"default": "#b8433f", "flaskasync": "#1f6fb2"}
FLASK_TITLES = {"default": "Flask default (asgiref)", "flaskasync": "flaskasync (FlaskAsync(app))"}
FLASK_ROUTE_TITLES = {
    "/sync": "/sync: plain sync view",
    "/async": "/async: trivial async view",
    "/seed": "/seed: 5 × sleep(0.001), JSON",
    "/gather10": "/gather10: 10 × sleep(0.001)",
    "/fanout": "/fanout: 10 httpx GETs to a local upstream, gathered",
}
FLASK_PLOT_X0 = 250
FLASK_PLOT_X1 = 700
FLASK_VALUE_X = 712


def is_flask(data: dict) -> bool:
    res = data.get("results") or []
    return bool(res) and "route" in res[0] and "requests_per_second" in res[0]


def render_flask(data: dict) -> str:
    results = data["results"]
    variants: list[str] = []
    routes: list[str] = []
    by: dict[tuple[str, str], dict] = {}
    for r in results:
        if r["variant"] not in variants:
            variants.append(r["variant"])
        if r["route"] not in routes:
            routes.append(r["route"])
        by[(r["variant"], r["route"])] = r
    # Required req/s per (variant, route), from the targets in the file.
    need: dict[tuple[str, str], tuple[float, float, bool]] = {}
    for t in data.get("targets", []):
        sync = by.get((t["variant"], "/sync"))
        if sync:
            need[(t["variant"], t["route"])] = (t["required"] * sync["requests_per_second"],
                                                t["required"], bool(t.get("pass")))

    top_val = max([r["requests_per_second"] for r in results] + [v[0] for v in need.values()] + [1.0])
    step = 500 if top_val > 1000 else (100 if top_val > 200 else 10)
    hi = math.ceil(top_val * 1.05 / step) * step

    def xpos(v: float) -> float:
        return FLASK_PLOT_X0 + v / hi * (FLASK_PLOT_X1 - FLASK_PLOT_X0)

    legend_h = 26
    height = TOP + legend_h + len(routes) * (GROUP_GAP + ROW_H * len(variants)) + 46
    m = data.get("machine", {})
    srv = "gunicorn -k gthread"
    cmds = data.get("server_commands", {})
    if cmds:
        c = next(iter(cmds.values()))
        th = re.search(r"--threads (\d+)", c)
        wk = re.search(r"-w (\d+)", c)
        srv = f"gunicorn gthread, {wk.group(1) if wk else '?'} worker, {th.group(1) if th else '?'} threads"
    wrk = data.get("wrk_command", "")
    wm = re.search(r"(-t\d+ -c\d+ -d\S+)", wrk)
    wrk_s = f"wrk {wm.group(1)}" if wm else "wrk"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="{FONT}">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        text(LABEL_X, 24, "Flask under gunicorn + wrk: requests per second per route (right = more)",
             size=15, weight="bold"),
        text(LABEL_X, 44,
             f"{m.get('cpu_model', '?')}, {m.get('nproc', '?')} CPUs (shared by server and wrk), "
             f"Python {m.get('python', '?')}, Flask {m.get('flask', '?')}, asgiref {m.get('asgiref', '?')}, "
             f"flaskasync {m.get('flaskasync', '?')}; {srv}; {wrk_s}; "
             f"{data.get('rounds', '?')} round(s)",
             size=11, fill="#555"),
    ]
    # Legend.
    ly = TOP + 4
    lx = LABEL_X
    for v in variants:
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="14" height="11" fill="{FLASK_COLORS.get(v, "#7f7f7f")}"/>')
        label = FLASK_TITLES.get(v, v)
        out.append(text(lx + 20, ly, label, size=11))
        lx += 30 + 7 * len(label)
    if need:
        out.append(f'<line x1="{lx}" y1="{ly - 11}" x2="{lx}" y2="{ly + 2}" stroke="#222" '
                   f'stroke-width="2" stroke-dasharray="3,2"/>')
        out.append(text(lx + 8, ly, "target (required ratio × that server's /sync req/s)", size=11))

    plot_top = TOP + legend_h
    grid, ticks = [], []
    v = 0
    while v <= hi + 1e-9:
        x = xpos(v)
        style = 'stroke="#444"' if v == 0 else 'stroke="#ddd" stroke-dasharray="3,3"'
        grid.append(f'<line x1="{x:.1f}" y1="{plot_top + 6}" x2="{x:.1f}" y2="{height - 34}" '
                    f'{style} stroke-width="1"/>')
        ticks.append(text(x, height - 20, f"{v:g}", size=11, anchor="middle", fill="#555"))
        v += step
    out += grid

    y = plot_top
    for route in routes:
        y += GROUP_GAP
        out.append(text(LABEL_X, y - 10, FLASK_ROUTE_TITLES.get(route, route), size=13, weight="bold"))
        for var in variants:
            r = by.get((var, route))
            cy = y + ROW_H / 2
            y += ROW_H
            if r is None:
                continue
            rps = r["requests_per_second"]
            ratio = r.get("ratio_vs_sync")
            bold = "bold" if var == "flaskasync" else "normal"
            out.append(text(LABEL_X + 8, cy + 4, FLASK_TITLES.get(var, var), size=11, weight=bold))
            x0, x1 = xpos(0), xpos(rps)
            out.append(f'<rect x="{x0:.1f}" y="{cy - BAR_H / 2:.1f}" width="{max(x1 - x0, 1.5):.1f}" '
                       f'height="{BAR_H}" fill="{FLASK_COLORS.get(var, "#7f7f7f")}"><title>'
                       f'{escape(FLASK_TITLES.get(var, var))} {escape(route)}: {rps:.0f} req/s'
                       f'</title></rect>')
            label = f"{rps:.0f} req/s"
            if ratio is not None:
                label += f"  ·  {ratio:.2f}× /sync"
            n = need.get((var, route))
            if n:
                nx = xpos(n[0])
                out.append(f'<line x1="{nx:.1f}" y1="{cy - BAR_H / 2 - 3:.1f}" x2="{nx:.1f}" '
                           f'y2="{cy + BAR_H / 2 + 3:.1f}" stroke="#222" stroke-width="2" '
                           f'stroke-dasharray="3,2"><title>target: {n[1]:g}× /sync = {n[0]:.0f} req/s'
                           f'</title></line>')
                label += f"  (need {n[1]:g}×: {'PASS' if n[2] else 'MISS'})"
            out.append(text(FLASK_VALUE_X, cy + 4, label, size=11, weight=bold))
    out += ticks
    out.append(text(FLASK_PLOT_X1, height - 6, "requests/s (higher = better) · ratio = req/s ÷ same server's /sync req/s",
                    size=10, anchor="end", fill="#777"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


NET_PLOT_X0 = 150
NET_PLOT_X1 = 560
NET_VALUE_X = 572
NET_TITLES = {"flaskasync": "flaskasync", "asyncio": "asyncio", "uvloop": "uvloop"}


def is_net(data: dict) -> bool:
    return data.get("suite") == "net"


def _net_rate(r: dict) -> str:
    v = r["throughput"]
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if v >= div:
            s = f"{v / div:.3g}{suf}"
            break
    else:
        s = f"{v:.3g}"
    if r.get("kind") == "echo":
        return f"{s} round trips/s · {r['mib_per_second']:.1f} MiB/s"
    rps = r.get("requests_per_second")
    return f"{s} fan-outs/s" + (f" · {rps:,.0f} req/s" if rps else "")


def render_net(data: dict) -> str:
    results = data["results"]
    groups: list[tuple[str, str, list[dict]]] = []
    for r in results:
        if not groups or groups[-1][0] != r["benchmark"]:
            groups.append((r["benchmark"], r["title"], []))
        groups[-1][2].append(r)

    ratios = [r["ratio_vs_asyncio"] for r in results if r.get("ratio_vs_asyncio")]
    top = max(ratios + [1.0]) * 1.05
    step = 0.25 if top <= 2 else (0.5 if top <= 4 else 1.0)
    hi = math.ceil(top / step) * step

    def xpos(v: float) -> float:
        return NET_PLOT_X0 + v / hi * (NET_PLOT_X1 - NET_PLOT_X0)

    notes = []
    chk = (data.get("http") or {}).get("server_check") or {}
    if "requests_per_second" in chk:
        head = chk.get("headroom")
        notes.append(f"HTTP server ({(data.get('http') or {}).get('server_loop', '?')}, subprocess): a lean raw "
                     f"client with the same 10 connections got {chk['requests_per_second']:,.0f} req/s"
                     + (f", {head:.0f}× the fastest httpx rate" if head else ""))
    legend_h = 26
    height = TOP + legend_h + sum(GROUP_GAP + ROW_H * len(g[2]) for g in groups) + 46 + 16 * len(notes)
    m = data.get("machine", {})
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="{FONT}">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        text(LABEL_X, 24, "flaskasync network benchmarks: throughput relative to asyncio's loop (right = faster)",
             size=15, weight="bold"),
        text(LABEL_X, 44,
             f"{m.get('cpu_model', '?')}, {m.get('nproc', '?')} CPUs, Python {m.get('python', '?')}, "
             f"flaskasync {m.get('flaskasync', '?')} (libuv {m.get('flaskasync_libuv', '?')}), "
             f"uvloop {m.get('uvloop', '?')}, httpx {m.get('httpx', '?')}; "
             f"median of {data.get('repeats', '?')} repeats, {data.get('mode', '?')} run",
             size=11, fill="#555"),
        text(LABEL_X, 60, "echo: server and client on the same loop in one process, 1 connection on 127.0.0.1, "
             "1 message in flight · HTTP: 10 httpx GETs gathered, server in a subprocess",
             size=11, fill="#555"),
    ]
    ly = TOP + 6
    lx = LABEL_X
    for fam, label in (("flaskasync", "flaskasync.Loop"), ("asyncio", "asyncio (selector loop)"),
                       ("uvloop", "uvloop")):
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="14" height="11" fill="{COLORS[fam]}"/>')
        out.append(text(lx + 20, ly, label, size=11))
        lx += 30 + 7 * len(label)

    plot_top = TOP + legend_h
    bottom = height - 34 - 16 * len(notes)
    grid, ticks = [], []
    v = 0.0
    while v <= hi + 1e-9:
        x = xpos(v)
        if v == 0:
            style = 'stroke="#444"'
        elif abs(v - 1) < 1e-9:
            style = 'stroke="#444" stroke-dasharray="5,3"'
        else:
            style = 'stroke="#ddd" stroke-dasharray="3,3"'
        grid.append(f'<line x1="{x:.1f}" y1="{plot_top + 6}" x2="{x:.1f}" y2="{bottom}" {style} stroke-width="1"/>')
        ticks.append(text(x, bottom + 14, f"{v:g}×", size=11, anchor="middle", fill="#555"))
        v += step
    out += grid

    y = plot_top
    for gid, title, rows in groups:
        y += GROUP_GAP
        out.append(text(LABEL_X, y - 10, title, size=13, weight="bold"))
        for r in rows:
            cy = y + ROW_H / 2
            y += ROW_H
            name = r["implementation"]
            fam = family(name) if name in COLORS else "asyncio"
            bold = "bold" if fam == "flaskasync" else "normal"
            out.append(text(LABEL_X + 8, cy + 4, NET_TITLES.get(name, name), size=11, weight=bold))
            if r.get("status") != "ok" or not r.get("throughput"):
                out.append(text(NET_PLOT_X0 + 6, cy + 4, f"{r.get('status', 'n/a')} ({r.get('error') or '?'})",
                                size=11, fill="#888"))
                continue
            ratio = r.get("ratio_vs_asyncio")
            label = _net_rate(r)
            if ratio is not None:
                x0, x1 = xpos(0), xpos(ratio)
                out.append(f'<rect x="{x0:.1f}" y="{cy - BAR_H / 2:.1f}" width="{max(x1 - x0, 1.5):.1f}" '
                           f'height="{BAR_H}" fill="{COLORS[fam]}"><title>{escape(name)}: '
                           f'{escape(label)}, {escape(fmt_ratio(ratio))} asyncio</title></rect>')
            if name == "flaskasync":
                rs = [f"{fmt_ratio(r[k])} {o}" for k, o in (("ratio_vs_asyncio", "asyncio"),
                                                             ("ratio_vs_uvloop", "uvloop")) if r.get(k)]
                if rs:
                    label += "  ·  " + ", ".join(rs)
            elif name == "uvloop" and ratio is not None:
                label += f"  ·  {fmt_ratio(ratio)} asyncio"
            out.append(text(NET_VALUE_X, cy + 4, label, size=11, weight=bold))
    out += ticks
    ny = bottom + 30
    for n in notes:
        out.append(text(LABEL_X, ny, n, size=10, fill="#555"))
        ny += 16
    out.append(text(NET_PLOT_X1, bottom + 28 if not notes else ny - 2,
                    "bar = throughput ÷ asyncio's throughput in the same case (median)", size=10,
                    anchor="end", fill="#777"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Render bench_core / bench_flask / bench_net JSON as an SVG bar chart.")
    p.add_argument("json", nargs="?", default=None,
                   help="results JSON (default bench/results/core.json, or flask.json with --flask)")
    p.add_argument("--flask", action="store_true",
                   help="render bench/results/flask.json (default output docs/img/bench_flask.svg)")
    p.add_argument("--net", action="store_true",
                   help="render bench/results/net.json (default output docs/img/bench_net.svg)")
    p.add_argument("-o", "--output", default=None,
                   help="SVG to write (default docs/img/bench_core.svg or docs/img/bench_flask.svg)")
    args = p.parse_args(argv)
    if args.flask and args.net:
        p.error("--flask and --net exclude each other")
    default_json = "net.json" if args.net else ("flask.json" if args.flask else "core.json")
    path = args.json or os.path.join(HERE, "results", default_json)
    with open(path) as f:
        data = json.load(f)
    net = is_net(data)
    flask = not net and is_flask(data)
    if args.flask and not flask:
        p.error(f"{path} is not bench_flask.py output")
    if args.net and not net:
        p.error(f"{path} is not bench_net.py output")
    if net:
        svg, default_svg = render_net(data), "bench_net.svg"
    elif flask:
        svg, default_svg = render_flask(data), "bench_flask.svg"
    else:
        svg, default_svg = render(data), "bench_core.svg"
    output = args.output or os.path.join(ROOT, "docs", "img", default_svg)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        f.write(svg)
    print(f"wrote {os.path.relpath(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
