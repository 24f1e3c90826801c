"""Fixtures for the Flask integration tests."""

from __future__ import annotations

import asyncio

import flask
import pytest

import flaskasync
from flaskasync import _tasks

from fa_helpers import make_app


@pytest.fixture
def app() -> flask.Flask:
    """A flask.Flask app with FlaskAsync installed, in testing mode."""
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


async def _cancel_all(tasks):
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=2.0)


@pytest.fixture(autouse=True)
def _no_leftover_background_tasks():
    """Cancel background tasks a test leaves behind, so tests stay independent."""
    yield
    leftovers = [t for t in list(_tasks._background) if not t.done()]
    if leftovers:
        flaskasync.run(_cancel_all(leftovers))
