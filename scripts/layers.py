#!/usr/bin/env python
"""Which C file of csrc/ calls which: the layer picture of the C core, read
from the object files' symbol tables (``nm``), so the picture in
docs/architecture.md can be checked against the code instead of trusted.

Each csrc/*.c is compiled alone (``gcc -c``, Python's and libuv's headers)
into a temporary directory; file A depends on file B when A has an
undefined symbol that B defines.  Printed: each file's dependencies, with
the symbols when ``--symbols`` is given, and the pairs of files that reach
each other (the cycles left).

Usage::

    python scripts/layers.py              # the dependency list and the cycles
    python scripts/layers.py --symbols    # and which symbols make each edge
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")


def compile_all(out_dir: str) -> list[str]:
    flags = ["-I" + sysconfig.get_paths()["include"], "-I" + CSRC]
    try:
        uv = subprocess.run(["pkg-config", "--cflags", "libuv"], capture_output=True,
                            text=True, check=True).stdout
        flags += shlex.split(uv)
    except (OSError, subprocess.CalledProcessError):
        pass  # libuv's headers in the default include path
    objs = []
    for src in sorted(glob.glob(os.path.join(CSRC, "*.c"))):
        obj = os.path.join(out_dir, os.path.basename(src)[:-2] + ".o")
        subprocess.run(["gcc", "-c", "-O0", *flags, src, "-o", obj], check=True)
        objs.append(obj)
    return objs


def symbol_tables(objs: list[str]) -> tuple[dict[str, str], dict[str, set[str]]]:
    defined: dict[str, str] = {}
    undefined: dict[str, set[str]] = {}
    for obj in objs:
        name = os.path.basename(obj)[:-2]
        undefined[name] = set()
        out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDBR":
                defined[parts[2]] = name
            elif len(parts) == 2 and parts[0] == "U":
                undefined[name].add(parts[1])
    return defined, undefined


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", action="store_true", help="list the symbols of each edge")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        defined, undefined = symbol_tables(compile_all(tmp))
    edges: dict[str, dict[str, list[str]]] = {}
    for name, syms in undefined.items():
        edges[name] = {}
        for sym in sorted(syms):
            owner = defined.get(sym)
            if owner is not None and owner != name:
                edges[name].setdefault(owner, []).append(sym)

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in edges.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    for name in sorted(edges):
        print(f"{name:10} -> {', '.join(sorted(edges[name])) or '(nothing)'}")
        if args.symbols:
            for dep, syms in sorted(edges[name].items()):
                print(f"{'':14}{dep}: {', '.join(syms)}")
    cycles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in reach(b)})
    print(f"\nfiles that reach each other ({len(cycles)} pairs):")
    for a, b in cycles:
        print(f"  {a} <-> {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
