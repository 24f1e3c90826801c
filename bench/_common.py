"""Helpers shared by the benchmark scripts: machine description, number
formatting, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pkg_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_describe() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict:
    """What every result file records about the machine and the build."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "nproc": nproc,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "flaskasync": pkg_version("flaskasync"),
        "flaskasync_git": git_describe(),
        "asgiref": pkg_version("asgiref"),
    }


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
    return f"{r:.4f}×"


def write_json(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"\nwrote {path}")


# ---------------------------------------------------------------------------
# Added for bench_net.py (the functions above are unchanged).
# ---------------------------------------------------------------------------


def fmt_rate(r: float, unit: str) -> str:
    """A rate with a k/M/G suffix and 3 significant digits: ``fmt_rate(41234, "req/s")``."""
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if r >= div:
            return f"{r / div:.3g}{suf} {unit}"
    return f"{r:.3g} {unit}"


def fmt_bytes(n: int) -> str:
    """A size in binary units: 1024 -> '1 KiB', 102400 -> '100 KiB'."""
    for div, suf in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:g} {suf}"
    return f"{n} B"


def calibrate_batch(batch, target: float) -> int:
    """Number of iterations n for which batch(n) (returning seconds) takes
    about target seconds.  Grows n from 1 (which also warms the batch up)."""
    n = 1
    while True:
        t = batch(n)
        if t >= target * 0.2:
            break
        n *= 10 if t < target * 0.02 else 2
    return max(1, int(n * target / max(t, 1e-9)))


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that produced a result file, relative to the repository root."""
    return " ".join([os.path.basename(sys.executable), os.path.relpath(script, ROOT)] +
                    (argv if argv is not None else sys.argv[1:]))


def utc_now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process pid (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
