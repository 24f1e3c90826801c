"""The adopted app loop (a server's running loop as the process's app loop)
and the greenlet bridge, in fresh interpreters (see adopt_checks.py)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CHECKS = [
    "adopt_and_release",
    "run_on_the_loop_thread",
    "adopt_refusals",
    "run_while_the_adopted_loop_is_stopped",
    "bridge_shares_one_context",
    "bridge_exceptions_and_cancellation",
    "request_bodies",
    "bridge_pool",
    "watched_request_leaves_no_cycle",
]


@pytest.mark.parametrize("name", CHECKS)
def test_adopt(name):
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning",
                           str(HERE / "adopt_checks.py"), name],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr
