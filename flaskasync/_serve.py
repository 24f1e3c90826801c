"""``python -m flaskasync serve`` and ``flaskasync.GunicornWorker``.

Both run :class:`flaskasync.ASGIApp` on uvicorn (with httptools) and
flaskasync's loop; worker processes come from uvicorn's own process
manager (``--workers``) or from gunicorn.  No HTTP parsing happens here.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import subprocess
import sys
import traceback
from typing import Any, Optional, Sequence

_EXTRA_HINT = "pip install 'flaskasync[serve]'"

try:
    import uvicorn
    from uvicorn.importer import ImportFromStringError, import_from_string
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        f"flaskasync's ASGI serving needs uvicorn, httptools and greenlet: {_EXTRA_HINT}"
    ) from exc

#: uvicorn's loop option: flaskasync's loop (uvicorn imports and calls it).
LOOP = "flaskasync:new_event_loop"

# How `serve` tells the worker processes (which import the application by
# name) what to serve.
_ENV_TARGET = "FLASKASYNC_SERVE_APP"
_ENV_THREADS = "FLASKASYNC_SERVE_THREADS"

# The server processes' garbage collection policy (docs/guide.md, "Garbage
# collection in the server processes"): "tuned" (the default) or "python".
_ENV_GC = "FLASKASYNC_GC"
GC_POLICIES = ("tuned", "python")
# CPython's default thresholds, the ones the tuning was measured against:
# 3.11 and 3.12 start at (700, 10, 10), 3.13 at (2000, 10, 10).
_PYTHON_THRESHOLDS = ((700, 10, 10), (2000, 10, 10))
# The youngest generation's threshold in a tuned process: a young
# collection once allocations exceed deallocations by 10,000 objects.
GC_YOUNG_THRESHOLD = 10_000
# The oldest generation's threshold in a tuned process: a full collection
# after 100 collections of the middle generation instead of 10.
GC_OLDEST_THRESHOLD = 100


def gc_policy() -> str:
    """The policy FLASKASYNC_GC names ("tuned" when unset)."""
    policy = os.environ.get(_ENV_GC) or "tuned"
    if policy not in GC_POLICIES:
        raise ValueError(f"{_ENV_GC} must be one of {', '.join(GC_POLICIES)}, got {policy!r}")
    return policy


def tune_gc() -> bool:
    """Apply the "tuned" policy to this process, once its app is loaded;
    True if it did.

    A request that waits (on a timer, an upstream) keeps its objects alive
    across many young collections, so they reach the oldest generation and
    count towards its next full collection: under load CPython then runs a
    full collection every second or so, each traversing every live object
    (the app's modules, and every request in flight) and finding almost no
    garbage.  Young collections cost for the same reason: each one walks
    the objects of every request in flight, which are alive and cannot be
    freed.  So: the objects that exist once the app is loaded
    (modules, functions, classes, the app) are collected once and then
    frozen, out of every later collection; the youngest generation is
    collected after 10,000 net allocations instead of 700 (2,000 on 3.13);
    and the oldest generation waits for 100 middle-generation collections
    instead of 10.  Thresholds an app set itself (anything but CPython
    3.11-3.13's defaults) are left as they are; so is the collector of a
    Python whose defaults differ (3.14's incremental one)."""
    if gc_policy() != "tuned":
        return False
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    if thresholds in _PYTHON_THRESHOLDS:
        gc.set_threshold(GC_YOUNG_THRESHOLD, thresholds[1], GC_OLDEST_THRESHOLD)
    return True


def wrap(obj: Any, threads: Optional[int] = None) -> Any:
    """The ASGI application for obj: a Flask app is wrapped in ASGIApp; an
    ASGIApp is returned as it is."""
    import flask

    from ._asgi import DEFAULT_THREADS, ASGIApp

    if isinstance(obj, ASGIApp):
        return obj
    if isinstance(obj, flask.Flask):
        return ASGIApp(obj, threads=threads or DEFAULT_THREADS)
    raise TypeError(
        f"flaskasync serve: expected a Flask app (or a flaskasync.ASGIApp), got {obj!r}"
    )


class _LoadError(Exception):
    """The app named on the command line cannot be served (one line for
    the user)."""


def _load(target: str, threads: Optional[int]) -> Any:
    """The ASGI application for module:attribute, as each server process
    makes it (in a running loop).  _LoadError when the name does not lead
    to a Flask app or an ASGIApp; an exception the module raises while
    imported propagates."""
    try:
        obj = import_from_string(target)
    except ImportFromStringError as exc:
        raise _LoadError(f"flaskasync serve: cannot load {target!r}: {exc}") from None
    try:
        return wrap(obj, threads)
    except TypeError as exc:
        raise _LoadError(str(exc)) from None


def application() -> Any:
    """uvicorn's application factory in each `serve` process."""
    target = os.environ.get(_ENV_TARGET)
    if not target:
        raise RuntimeError(f"{_ENV_TARGET} is not set (use python -m flaskasync serve)")
    threads = int(os.environ.get(_ENV_THREADS) or 0) or None
    app = _load_or_report(_load, target, threads)
    if app is None:
        raise SystemExit(2)
    tune_gc()
    return app


def _load_or_report(load, target: str, threads: Optional[int]) -> Any:
    """load(target, threads), or None once its error is reported: one line,
    after the traceback when the module raised while imported."""
    try:
        return load(target, threads)
    except _LoadError as exc:
        print(exc, file=sys.stderr, flush=True)
    except Exception:
        traceback.print_exc()
        print(f"flaskasync serve: importing {target!r} failed (the traceback is above)",
              file=sys.stderr, flush=True)
    return None


def _check_in_child(target: str, threads: int) -> int:
    """Load the app as a server process would, in a short child process:
    before uvicorn's process manager starts workers, which it restarts
    forever when they fail to load the app.  The exit status: 0 or 2."""
    code = ("import sys; from flaskasync._serve import _check_main; "
            "sys.exit(_check_main(sys.argv[1], int(sys.argv[2])))")
    proc = subprocess.run([sys.executable, "-c", code, target, str(threads)])
    return 0 if proc.returncode == 0 else 2


def _check_main(target: str, threads: int) -> int:
    """The child process of _check_in_child."""
    from . import new_event_loop

    async def load(target: str, threads: int) -> None:
        _load(target, threads)

    def run_load(target: str, threads: int) -> bool:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(load(target, threads))
        return True

    return 0 if _load_or_report(run_load, target, threads) else 2


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flaskasync",
        description="Serve a Flask app with flaskasync's ASGI mode (uvicorn + httptools "
        "on flaskasync's loop): async views hold no thread while they wait.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a Flask app over HTTP")
    serve.add_argument("app", help="the Flask app (or ASGIApp) as module:attribute")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port to bind (default 8000)")
    serve.add_argument("--workers", type=_positive, default=1,
                       help="worker processes (uvicorn's process manager; default 1)")
    serve.add_argument("--threads", type=_positive, default=8,
                       help="threads per process running sync views (default 8)")
    serve.add_argument("--root-path", default="", help="ASGI root_path (SCRIPT_NAME)")
    serve.add_argument("--access-log", action="store_true",
                       help="log every request (off by default, as gunicorn)")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug", "trace"])
    serve.add_argument("--gc", choices=GC_POLICIES, default=None,
                       help="garbage collection in the server processes: 'tuned' (the default: the "
                            "loaded app frozen, fewer full collections) or 'python' (as Python "
                            f"sets it); also {_ENV_GC}")
    serve.add_argument("--timeout-keep-alive", type=int, default=5,
                       help="seconds an idle keep-alive connection is kept (default 5)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    # As `flask run` and gunicorn do: the current directory is importable.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    # Check the name without importing the module: the app is imported by
    # each server process while its loop runs (where flaskasync.run()
    # refuses to block), the same with one process or many.
    module, _, attr = args.app.partition(":")
    try:
        found = bool(module and attr) and importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        print(f"flaskasync serve: cannot find {args.app!r} (expected module:attribute, "
              "with the module importable from the current directory)", file=sys.stderr)
        return 2
    if args.workers > 1 and _check_in_child(args.app, args.threads) != 0:
        # uvicorn's process manager restarts a worker that cannot load the
        # app, forever: load it once in a child process first.  (A single
        # process loads it in application(), which exits 2 if it cannot.)
        return 2
    if args.gc is not None:
        os.environ[_ENV_GC] = args.gc
    try:
        gc_policy()
    except ValueError as exc:
        print(f"flaskasync serve: {exc}", file=sys.stderr)
        return 2
    os.environ[_ENV_TARGET] = args.app
    os.environ[_ENV_THREADS] = str(args.threads)
    uvicorn.run(
        "flaskasync._serve:application",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop=LOOP,
        http="httptools",
        lifespan="on",
        root_path=args.root_path,
        access_log=args.access_log,
        log_level=args.log_level,
        timeout_keep_alive=args.timeout_keep_alive,
    )
    return 0


# --------------------------------------------------------------- gunicorn

try:
    from uvicorn_worker import UvicornWorker as _UvicornWorker
except ImportError:  # pragma: no cover - older installs: uvicorn's own
    try:
        from uvicorn.workers import UvicornWorker as _UvicornWorker  # type: ignore[no-redef]
    except ImportError:
        _UvicornWorker = None  # type: ignore[assignment,misc]


if _UvicornWorker is not None:

    class GunicornWorker(_UvicornWorker):  # type: ignore[misc,valid-type]
        """gunicorn worker class: ``gunicorn -k flaskasync.GunicornWorker module:app``.

        uvicorn with httptools on flaskasync's loop in each worker process;
        a Flask app is wrapped in :class:`flaskasync.ASGIApp` (its sync views
        run in a pool of ``--threads`` threads, 8 when gunicorn's default of
        1 is left).  gunicorn manages the processes (``-w``), graceful
        shutdown (SIGTERM) included: lifespan shutdown gives background
        tasks ``FLASKASYNC_SHUTDOWN_TIMEOUT`` seconds.  Each worker tunes
        its garbage collection once the app is loaded, as ``serve`` does
        (:func:`tune_gc`; ``FLASKASYNC_GC=python`` to keep Python's).
        """

        CONFIG_KWARGS = {"loop": LOOP, "http": "httptools", "lifespan": "on"}

        def load_wsgi(self) -> None:
            super().load_wsgi()
            threads = self.cfg.threads if self.cfg.threads > 1 else None
            self.wsgi = wrap(self.wsgi, threads)
            tune_gc()

else:  # pragma: no cover

    class GunicornWorker:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError(
                f"flaskasync.GunicornWorker needs gunicorn and uvicorn-worker: {_EXTRA_HINT}"
            )
