"""flaskasync imported before asyncio leaves asyncio's task bookkeeping
intact (csrc/module.c imports asyncio before _asyncio)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import {first}
import asyncio

async def main():
    async with asyncio.timeout(5):
        task = asyncio.current_task()
        return task is not None and task in asyncio.all_tasks()

print(asyncio.run(main()))
"""


@pytest.mark.parametrize("first", ["flaskasync", "flaskasync._core"])
def test_current_task_after_importing_flaskasync_first(first):
    out = subprocess.run([sys.executable, "-c", CODE.format(first=first)],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stdout + out.stderr
