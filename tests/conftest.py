"""Shared fixtures: every loop behaviour test runs on flaskasync's loop and on
asyncio's own loop, which is the reference."""

from __future__ import annotations

import asyncio
import faulthandler
import gc

import pytest

import flaskasync

LOOP_KINDS = {
    "flaskasync": flaskasync.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}

# A hanging test would hang the whole run: a loop blocked in its poll does
# not run Python signal handlers, so pytest-timeout's SIGALRM may never be
# handled.  Past pytest-timeout's limit, dump every thread's stack and exit.
WATCHDOG_SECONDS = 150


@pytest.fixture(autouse=True)
def _watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(params=list(LOOP_KINDS), ids=list(LOOP_KINDS))
def loop_kind(request):
    """'flaskasync' or 'asyncio'."""
    return request.param


@pytest.fixture
def loop_factory(loop_kind):
    """A callable returning a new loop of the kind under test."""
    return LOOP_KINDS[loop_kind]


@pytest.fixture
def loop(loop_factory):
    """A new loop of the kind under test, set as the current event loop."""
    lp = loop_factory()
    asyncio.set_event_loop(lp)
    try:
        yield lp
    finally:
        try:
            if not lp.is_closed() and not lp.is_running():
                # Collect first so that objects of this test (tasks, futures)
                # report to this loop while it is still open.
                gc.collect()
                lp.run_until_complete(lp.shutdown_asyncgens())
        finally:
            if not lp.is_running():
                lp.close()
            asyncio.set_event_loop(None)


@pytest.fixture
def fa_loop():
    """A flaskasync loop, for the tests that only apply to flaskasync."""
    lp = flaskasync.new_event_loop()
    asyncio.set_event_loop(lp)
    try:
        yield lp
    finally:
        if not lp.is_closed() and not lp.is_running():
            gc.collect()
            lp.run_until_complete(lp.shutdown_asyncgens())
        lp.close()
        asyncio.set_event_loop(None)


class ErrorCollector:
    """An exception handler that records every context it receives."""

    def __init__(self):
        self.contexts = []

    def __call__(self, loop, context):
        self.contexts.append(context)

    @property
    def messages(self):
        return [c.get("message") for c in self.contexts]


@pytest.fixture
def errors(loop):
    """Install an ErrorCollector as the loop's exception handler."""
    collector = ErrorCollector()
    loop.set_exception_handler(collector)
    return collector
