"""Helpers shared by the Flask integration tests (imported as fa_helpers)."""

from __future__ import annotations

import time

import flask
import pytest

from flaskasync import FlaskAsync
from flaskasync import _flaskcompat

FLASK_VERSION = _flaskcompat.FLASK_VERSION
requires_flask_23 = pytest.mark.skipif(
    FLASK_VERSION < (2, 3), reason="Flask < 2.3 does not send signals to async receivers"
)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01):
    """Poll predicate() until it is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def make_app(name: str = "testapp", **config) -> flask.Flask:
    app = flask.Flask(name)
    app.config.update(TESTING=True, SECRET_KEY="test-secret", **config)
    FlaskAsync(app)
    return app
