#!/usr/bin/env python
"""Turn bench/results/core.json into an SVG bar chart, with no third-party packages.

Each benchmark is a panel; each implementation a bar of its speed relative to
the panel's anchor (anchor time / its time) on a log scale centred on 1×:
bars to the right are faster than the anchor, bars to the left slower.  The
measured time per operation and the ratio are printed beside every bar.

Usage::

    python bench/chart.py [bench/results/core.json] [-o docs/img/bench_core.svg]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
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


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.2f} µs"
    return f"{s * 1e9:.1f} ns"


def fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    if r >= 0.1:
        return f"{r:.2f}×"
    return f"{r:.3f}×"


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Render bench_core JSON as an SVG bar chart.")
    p.add_argument("json", nargs="?", default=os.path.join(HERE, "results", "core.json"))
    p.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "img", "bench_core.svg"))
    args = p.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    svg = render(data)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(svg)
    print(f"wrote {os.path.relpath(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
