"""What flaskasync needs from Flask beyond its public API, in one place.

The rest of the integration uses Flask's public API only
(``flask.has_request_context``, ``flask.request``, ``flask.current_app``,
``app.ensure_sync`` ...).  This module holds:

- the Flask version, and the behaviours that depend on it (known from
  Flask's changelog, checked against each release by tests/flask);
- every access to Flask's private internals: the ``ContextVar`` holding the
  app context (``flask.globals._cv_app``, Flask 2.2 to 3.2), and for
  Flask < 3.1 the request context's ``ContextVar`` and its push tokens.

If a future Flask changes one of them, importing the integration fails here
with a :class:`FlaskChanged` error naming what changed, instead of a
request failing somewhere deep inside.
"""

from __future__ import annotations

import contextvars
from importlib import metadata
from typing import Any, Callable, Optional

import flask


class FlaskChanged(ImportError):
    """The installed Flask lacks an internal flaskasync relies on."""


def _version() -> "tuple[tuple, str]":
    try:
        text = metadata.version("flask")
    except metadata.PackageNotFoundError:  # not installed as a distribution
        return (99, 0), "unknown version"  # assume a current Flask
    parts = text.split(".")[:2]
    return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts), text


#: (major, minor) of the installed Flask.
FLASK_VERSION: tuple
FLASK_VERSION, _VERSION_TEXT = _version()


def _changed(what: str) -> FlaskChanged:
    return FlaskChanged(
        f"flaskasync does not support this Flask ({_VERSION_TEXT}): {what}. "
        "Flask changed an internal that flaskasync's Flask integration relies on "
        "(flaskasync/_flaskcompat.py); please report it to flaskasync."
    )


#: Flask < 3.0 calls template context processors directly instead of
#: through ``app.ensure_sync``: async ones need our update_template_context.
CONTEXT_PROCESSORS_BYPASS_ENSURE_SYNC: bool = FLASK_VERSION < (3, 0)

#: Flask < 3.1's ``stream_with_context`` pushes the request context when it
#: is called, not when the response is iterated (see :func:`run_keeping_push_tokens`).
STREAM_WITH_CONTEXT_PUSHES_EARLY: bool = FLASK_VERSION < (3, 1)

# --------------------------------------------------------------- the app context

try:
    from flask.globals import _cv_app
except ImportError:  # pragma: no cover - a future Flask
    raise _changed("flask.globals has no _cv_app (the ContextVar of the app context)") from None
if not isinstance(_cv_app, contextvars.ContextVar):  # pragma: no cover
    raise _changed(f"flask.globals._cv_app is {_cv_app!r}, not a ContextVar")


def app_in(context: Optional[contextvars.Context]) -> Any:
    """The Flask app whose app context is current in context, or None.

    context None: the current context (Flask's public API).  A given
    Context needs the private ContextVar: Flask has no public way to read
    another Context, and ``context.run()`` fails on a Context that is
    entered (a running task's own)."""
    if context is None:
        if not flask.has_app_context():
            return None
        return flask.current_app._get_current_object()  # type: ignore[attr-defined]
    app_ctx = context.get(_cv_app)
    return None if app_ctx is None else app_ctx.app


# --------------------------------------------------------------- Flask < 3.1

try:
    from flask.globals import _cv_request  # Flask < 3.2 (3.2 merged it into _cv_app)
except ImportError:
    _cv_request = None
if STREAM_WITH_CONTEXT_PUSHES_EARLY and _cv_request is None:  # pragma: no cover
    raise _changed("flask.globals has no _cv_request (Flask < 3.1 has it)")


def run_keeping_push_tokens(run: Callable[..., Any], coro: Any, **kwargs: Any) -> Any:
    """``run(coro, **kwargs)``, re-creating in this thread's Context the
    tokens of request context pushes the coroutine made (Flask < 3.1).

    Flask < 3.1's ``stream_with_context()`` called in an async view pushes
    the request context inside the view's task, whose Context is a copy of
    this thread's.  Flask later resets that push's token here, in this
    thread's Context, and fails ("Token was created in a different
    Context"; asgiref has the same problem).  The values are already copied
    back by run(); the tokens (``RequestContext._cv_tokens`` and
    ``AppContext._cv_tokens``, lists of Flask 2.2 to 3.0) are re-created
    here."""
    ctx = _cv_request.get(None)
    before = len(ctx._cv_tokens) if ctx is not None else 0
    try:
        return run(coro, **kwargs)
    finally:
        if ctx is not None and len(ctx._cv_tokens) > before:
            for i in range(before, len(ctx._cv_tokens)):
                _token, app_ctx = ctx._cv_tokens[i]
                if app_ctx is not None and app_ctx._cv_tokens:
                    app_ctx._cv_tokens[-1] = _cv_app.set(app_ctx)
                ctx._cv_tokens[i] = (_cv_request.set(ctx), app_ctx)
