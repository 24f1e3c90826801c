"""The app the real-server tests serve (besides examples/app.py).

FA_MARKER_DIR: a directory where the app writes marker files the tests wait
for (a background task finished, a generator's finally ran).
"""

from __future__ import annotations

import asyncio
import os
import pathlib

from flask import request

import flaskasync

app = flaskasync.Flask(__name__)
app.config["FLASKASYNC_SHUTDOWN_TIMEOUT"] = 0.5
MARKERS = pathlib.Path(os.environ.get("FA_MARKER_DIR", "."))

# Loop-bound objects created once at import (before fork with --preload).
LOCK = asyncio.Lock()
COUNTER = {"value": 0}


def mark(name: str, text: str = "") -> None:
    """Write a marker file atomically (the tests poll for it)."""
    tmp = MARKERS / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(text or str(os.getpid()))
    os.replace(tmp, MARKERS / name)


@app.get("/pid")
def pid():
    return str(os.getpid())


@app.get("/slowpid")
async def slowpid():
    await asyncio.sleep(0.3)
    return str(os.getpid())


@app.post("/incr")
async def incr():
    async with LOCK:
        value = COUNTER["value"]
        await asyncio.sleep(0.001)
        COUNTER["value"] = value + 1
    return {"pid": os.getpid(), "value": value}


@app.get("/bg/<name>")
async def bg(name):
    async def later():
        await asyncio.sleep(0.2)
        mark(name, request.path)

    asyncio.create_task(later())
    return "started"


@app.get("/stream/<int:n>")
async def stream(n):
    for i in range(n):
        if i:
            await asyncio.sleep(0.1)
        yield f"chunk {i} {request.path}\n"


@app.get("/forever/<name>")
async def forever(name):
    try:
        i = 0
        while True:
            yield f"tick {i}\n" + "." * 4096 + "\n"
            i += 1
            await asyncio.sleep(0.02)
    finally:
        await asyncio.sleep(0)
        mark(name, f"closed after {i} chunks of {request.path}")


@app.get("/boom-stream")
async def boom_stream():
    yield "first\n"
    await asyncio.sleep(0.01)
    raise ValueError("stream broke midway")


@app.get("/stuck/<name>")
def stuck(name):
    async def never_done():
        try:
            await asyncio.sleep(3600)
        finally:
            mark(name, "cancelled at shutdown")

    flaskasync.spawn(never_done(), name=name)
    return "spawned"
