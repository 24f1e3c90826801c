"""The app the ASGI-mode tests serve (python -m flaskasync serve, the
gunicorn worker, uvicorn --loop flaskasync:new_event_loop).

Views record what happened to them (cancelled, finally ran, background
task finished) in ``EVENTS``, which ``/events`` returns, and, for what
happens at shutdown, in files under ``$FA_MARKER_DIR``.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import pathlib
import threading
import time

from flask import Blueprint, Flask, abort, g, jsonify, request, url_for
from flask.views import MethodView

import flaskasync
from flaskasync import FlaskAsync

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = 8 * 1024 * 1024
app.config["FLASKASYNC_SHUTDOWN_TIMEOUT"] = float(os.environ.get("FA_SHUTDOWN_TIMEOUT", "2"))
app.config["FLASKASYNC_DEBUG"] = os.environ.get("FA_DEBUG") == "1"
FlaskAsync(app)

MARKERS = pathlib.Path(os.environ.get("FA_MARKER_DIR", "/tmp"))
EVENTS: dict = {}
request_var: contextvars.ContextVar = contextvars.ContextVar("request_var", default="unset")
view_var: contextvars.ContextVar = contextvars.ContextVar("view_var", default="unset")
# Loop-bound objects created once, at import, used by every request.
shared_lock = asyncio.Lock()
shared_queue: asyncio.Queue = asyncio.Queue()


def mark(name: str, text: str = "") -> None:
    (MARKERS / name).write_text(text)


@app.before_request
def before():
    g.before_thread = threading.current_thread().name
    request_var.set(f"set-by-before:{request.path}")
    if request.path == "/slow-hook":
        time.sleep(0.3)  # a sync hook that holds the loop (for the debug-mode test)
    if request.path == "/hook-run":
        # Sync code of an async request (in its greenlet, on the loop's
        # thread): flaskasync.run and async_to_sync hand the coroutine to
        # the loop's side instead of refusing.
        g.hook_run = flaskasync.run(asyncio.sleep(0.01, "run-from-hook"))
        g.hook_a2s = flaskasync.async_to_sync(asyncio.sleep)(0.01, "a2s-from-hook")
        g.hook_thread = threading.current_thread().name


@app.before_request
def auth():
    if request.args.get("auth") and request.headers.get("Authorization") != "Bearer good":
        abort(401)  # refuses the request without reading its body


@app.teardown_request
def record_done(exc):
    key = request.args.get("key")
    if key and request.method == "POST":
        EVENTS[f"done-{key}"] = True


@app.get("/hook-run")
async def hook_run():
    return {"run": g.hook_run, "a2s": g.hook_a2s, "thread": g.hook_thread}


@app.get("/slow-hook")
async def slow_hook():
    return "ok"


@app.after_request
def after(response):
    # A value the async view set in the request's Context is seen here.
    if request.path == "/context":
        response.headers["X-View-Var"] = view_var.get()
    return response


@app.get("/")
async def index():
    return "hello"


@app.get("/sleep")
async def sleep():
    await asyncio.sleep(float(request.args.get("t", "0.5")))
    return "slept"


@app.get("/sync-sleep")
def sync_sleep():
    time.sleep(float(request.args.get("t", "1")))
    return {"thread": threading.current_thread().name}


@app.get("/gc")
def gc_state():
    """The server process's collector settings (the serve mode's GC policy)."""
    return {"threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}


@app.get("/context")
async def context():
    await asyncio.sleep(0)
    view_var.set("set-by-view")
    return {
        "request_var": request_var.get(),
        "before_thread": g.before_thread,
        "thread": threading.current_thread().name,
        "loop_is_app_loop": asyncio.get_running_loop() is flaskasync.get_loop(),
        "loop_id": id(asyncio.get_running_loop()),
        "loop_type": type(asyncio.get_running_loop()).__name__,
        "path": request.path,
    }


@app.get("/sync-context")
def sync_context():
    async def add(a, b):
        await asyncio.sleep(0.01)
        return a + b

    return {
        "request_var": request_var.get(),
        "thread": threading.current_thread().name,
        "run": flaskasync.run(add(1, 2)),
        "loop_id": id(flaskasync.get_loop()),
    }


@app.get("/urls")
async def urls():
    return {
        "external": url_for("urls", _external=True),
        "path": url_for("urls"),
        "remote_addr": request.remote_addr,
        "script_root": request.script_root,
        "host": request.host,
    }


@app.get("/sync-urls")
def sync_urls():
    return {"external": url_for("sync_urls", _external=True), "remote_addr": request.remote_addr}


@app.get("/shared")
async def shared():
    async with shared_lock:
        await shared_queue.put(1)
        await asyncio.sleep(0.001)
        return {"got": await shared_queue.get()}


@app.post("/upload")
async def upload():
    data = request.get_data()
    if request.args.get("key"):
        EVENTS[f"upload-{request.args['key']}"] = len(data)
    return {"n": len(data), "head": data[:8].hex()}


@app.post("/sync-upload")
def sync_upload():
    data = request.get_data()
    if request.args.get("key"):
        EVENTS[f"upload-{request.args['key']}"] = len(data)
    return {"n": len(data), "head": data[:8].hex()}


@app.post("/form")
async def form():
    f = request.files["file"]
    return {"name": f.filename, "n": len(f.read()), "field": request.form.get("field")}


@app.post("/sync-stream-in")
def sync_stream_in():
    n = 0
    while True:
        chunk = request.stream.read(65536)
        if not chunk:
            break
        n += len(chunk)
    return {"n": n}


@app.get("/stream")
async def stream():
    async def gen():
        try:
            for i in range(3):
                yield f"chunk{i}\n"
                await asyncio.sleep(float(request.args.get("t", "0.5")))
        finally:
            EVENTS[f"stream-finally-{request.args.get('key', '')}"] = True

    return gen()


@app.route("/sync-stream", methods=["GET", "POST"])
def sync_stream():
    # POST: a request body the view never reads.
    key = request.args.get("key", "")
    n = int(request.args.get("n", "3"))
    t = float(request.args.get("t", "0.5"))

    def gen():
        try:
            for i in range(n):
                yield f"chunk{i}\n"
                time.sleep(t)
        finally:
            EVENTS[f"sync-stream-finally-{key}"] = True

    return app.response_class(gen())


def _cl_gen(key, chunks):
    """A body declaring Content-Length 5 for the chunks (which may be more)."""

    def gen():
        yield from chunks
        EVENTS[key] = "after the last yield"

    return app.response_class(gen(), headers={"Content-Length": "5"})


_CL_CHUNKS = {"one": [b"hello"], "more": [b"hello", b"EXTRA"], "split": [b"he", b"llo!!", b"X"]}


@app.get("/cl-gen")
def cl_gen():
    return _cl_gen(request.args["key"], _CL_CHUNKS[request.args["chunks"]])


@app.get("/async-cl-gen")
async def async_cl_gen():
    await asyncio.sleep(0)
    return _cl_gen(request.args["key"], _CL_CHUNKS[request.args["chunks"]])


@app.route("/wait", methods=["GET", "POST"])
async def wait():
    key = request.args["key"]
    EVENTS[key] = "started"
    try:
        await asyncio.sleep(30)
        EVENTS[key] = "finished"
    except asyncio.CancelledError:
        EVENTS[key] = "cancelled"
        raise
    finally:
        EVENTS[key + "-finally"] = True
    return "done"


@app.get("/events")
def events():
    return jsonify(EVENTS)


@app.get("/timeout")
@flaskasync.async_route(timeout=0.3)
async def timeout():
    await asyncio.sleep(5)
    return "late"


@app.get("/boom")
async def boom():
    raise ValueError("boom from an async view")


@app.get("/orphan")
async def orphan():
    """A task that fails before the view returns, and that nobody awaits."""

    async def fails():
        raise ValueError("orphan task failed")

    task = asyncio.create_task(fails(), name="orphan-task")
    while not task.done():
        await asyncio.sleep(0)
    return "left it"


@app.get("/spawn")
async def spawn():
    key = request.args["key"]

    async def job():
        await asyncio.sleep(0.2)
        EVENTS[key] = "done"

    flaskasync.spawn(job(), name=key)
    asyncio.create_task(job_create(key + "-ct"))
    return "spawned"


async def job_create(key):
    await asyncio.sleep(0.2)
    EVENTS[key] = "done"


@app.get("/sync-spawn")
def sync_spawn():
    key = request.args["key"]

    async def job():
        await asyncio.sleep(0.2)
        EVENTS[key] = "done"

    task = flaskasync.spawn(job(), name=key)
    return {"loop_id": id(task.get_loop())}


@app.get("/shutdown-tasks")
async def shutdown_tasks():
    """Two background tasks for the shutdown test: one finishes within the
    grace period, one never does."""

    async def short():
        await asyncio.sleep(0.5)
        mark("short-done")

    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            mark("forever-cancelled")

    flaskasync.spawn(short(), name="short")
    flaskasync.spawn(forever(), name="forever")
    return "ok"


# A body limit set per request by a hook (Flask >= 3.1), above the app's.
limits = Blueprint("limits", __name__, url_prefix="/limit")


@limits.before_request
def sync_limit():
    if request.args.get("hook") != "async":
        request.max_content_length = int(request.args["limit"])


@limits.before_request
async def async_limit():
    if request.args.get("hook") == "async":
        await asyncio.sleep(0)
        request.max_content_length = int(request.args["limit"])


@limits.post("/upload")
async def limit_upload():
    return {"n": len(request.get_data())}


@limits.post("/sync-upload")
def limit_sync_upload():
    return {"n": len(request.get_data())}


app.register_blueprint(limits)


class Items(MethodView):
    async def get(self):
        await asyncio.sleep(0)
        return {"method": "get", "thread": threading.current_thread().name}

    def post(self):
        return {"method": "post", "thread": threading.current_thread().name}


app.add_url_rule("/items", view_func=Items.as_view("items"))


#: For servers given an ASGI application directly (uvicorn --loop ...).
application = flaskasync.ASGIApp(app)
