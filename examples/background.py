"""Background tasks on flaskasync's app loop.

    flask --app examples/background:app run --with-threads

- ``POST /signup``: answers at once; the welcome e-mail is "sent" by a task
  created with ``asyncio.create_task`` that keeps running after the response
  (Flask's default would cancel it when the view returns).
- ``POST /jobs``: queues a job for a worker task started once with
  ``flaskasync.spawn`` and fed through a module-level ``asyncio.Queue``.
- ``GET /jobs/<id>``: the job's state.
- ``POST /report`` (a *sync* view): ``flaskasync.spawn`` works from sync code
  too, and returns the task.
- ``POST /fail``: a background task that raises; its traceback is logged
  through ``app.logger``.

At exit (Ctrl-C, or SIGTERM under gunicorn), running tasks get
``FLASKASYNC_SHUTDOWN_TIMEOUT`` seconds, then are cancelled, each named in
the log.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

from flask import Flask, current_app, jsonify, request

import flaskasync
from flaskasync import FlaskAsync

app = Flask(__name__)
app.config["FLASKASYNC_SHUTDOWN_TIMEOUT"] = 3.0
FlaskAsync(app)

SENT: list[str] = []
JOBS: dict[int, str] = {}
_ids = itertools.count(1)
_queue: asyncio.Queue = asyncio.Queue()  # loop-bound, shared by every request
_worker_lock = threading.Lock()
_worker: asyncio.Task | None = None


async def send_welcome_email(address: str) -> None:
    await asyncio.sleep(0.5)  # pretend to talk to a mail server
    SENT.append(address)
    current_app.logger.info("welcome mail sent to %s (signup from %s)", address, request.remote_addr)


@app.post("/signup")
async def signup():
    address = request.get_json()["email"]
    asyncio.create_task(send_welcome_email(address), name=f"welcome-{address}")
    return jsonify(status="signed up", email=address), 201


async def job_worker() -> None:
    while True:
        job_id, seconds = await _queue.get()
        JOBS[job_id] = "running"
        try:
            await asyncio.sleep(seconds)
            JOBS[job_id] = "done"
        finally:
            _queue.task_done()


def ensure_worker() -> None:
    global _worker
    with _worker_lock:
        if _worker is None or _worker.done():
            _worker = flaskasync.spawn(job_worker(), name="job-worker")


@app.post("/jobs")
async def create_job():
    ensure_worker()
    job_id = next(_ids)
    JOBS[job_id] = "queued"
    await _queue.put((job_id, float(request.args.get("seconds", 0.2))))
    return jsonify(id=job_id, state=JOBS[job_id]), 202


@app.get("/jobs/<int:job_id>")
def job_state(job_id: int):
    return jsonify(id=job_id, state=JOBS.get(job_id, "unknown"))


async def build_report(name: str) -> str:
    await asyncio.sleep(0.2)
    return f"report {name} ready"


@app.post("/report")
def report():  # a sync view
    task = flaskasync.spawn(build_report(request.args.get("name", "daily")), name="report")
    return jsonify(task=task.get_name())


async def flaky() -> None:
    await asyncio.sleep(0.05)
    raise RuntimeError("the payment provider is down")


@app.post("/fail")
async def fail():
    asyncio.create_task(flaky(), name="flaky-sync")  # its traceback goes to app.logger
    return jsonify(status="accepted"), 202
