"""flaskasync.Loop inherits the running interpreter's asyncio.SelectorEventLoop
behind its C core.  These tests check that the inheritance is sound on the
Python running them, so that a new Python version's asyncio cannot quietly
reach state the C core does not keep: every inherited method may only use
loop attributes that flaskasync's loop has."""

from __future__ import annotations

import asyncio
import inspect
import sys
import types
import warnings

import pytest

import flaskasync
from flaskasync import loop as fa_loop_module


def _code_names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _asyncio_loop_state() -> set:
    ref = asyncio.SelectorEventLoop()
    try:
        return set(vars(ref))
    finally:
        ref.close()


def _inherited_asyncio_functions(cls):
    """(owner, name, function) for every function of an asyncio class in
    cls's MRO that cls resolves to (i.e. not overridden)."""
    for owner in cls.__mro__:
        if not owner.__module__.startswith("asyncio."):
            continue
        for name, value in vars(owner).items():
            func = value.fget if isinstance(value, property) else value
            if not inspect.isfunction(func):
                continue
            if inspect.getattr_static(cls, name) is not value:
                continue  # overridden by flaskasync (C core or Python)
            yield owner, name, func


def test_loop_is_the_interpreters_selector_loop():
    loop = flaskasync.new_event_loop()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert isinstance(loop, asyncio.BaseEventLoop)
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()


def test_inherited_methods_use_only_state_the_loop_has():
    state = _asyncio_loop_state()
    loop = flaskasync.new_event_loop()
    try:
        missing = {}
        for owner, name, func in _inherited_asyncio_functions(type(loop)):
            for attr in _code_names(func.__code__) & state:
                if not hasattr(loop, attr):
                    missing.setdefault(f"{owner.__name__}.{name}", set()).add(attr)
        # A method listed here uses asyncio state flaskasync's loop does not
        # keep: override it, or add it to loop.SELECTOR_INTERNALS.
        assert missing == {}
    finally:
        loop.close()


def test_selector_internals_raise_not_implemented_naming_themselves():
    loop = flaskasync.new_event_loop()
    try:
        stubbed = [n for n in fa_loop_module.SELECTOR_INTERNALS if n in vars(type(loop))]
        assert "_run_once" in stubbed and "_process_events" in stubbed
        for name in stubbed:
            with pytest.raises(NotImplementedError, match=name):
                getattr(loop, name)()
    finally:
        loop.close()


def test_loop_state_comes_from_the_interpreters_base_event_loop():
    # What BaseEventLoop.__init__ sets on this Python (minus what the C core
    # keeps) is there, with asyncio's initial values.
    ref = asyncio.SelectorEventLoop()
    loop = flaskasync.new_event_loop()
    try:
        for name, value in vars(ref).items():
            if name in fa_loop_module._C_OWNED or name.startswith(("_selector", "_ssock", "_csock",
                                                                  "_transports")):
                continue
            assert hasattr(loop, name), name
            if isinstance(value, (bool, int, float, str, type(None))):
                assert getattr(loop, name) == value, name
        assert loop.slow_callback_duration == ref.slow_callback_duration
        assert loop.get_debug() == ref.get_debug()
    finally:
        loop.close()
        ref.close()


@pytest.mark.parametrize("name", ["_debug", "_current_handle", "_closed", "_thread_id"])
def test_c_owned_state_is_visible_as_asyncio_attributes(name):
    loop = flaskasync.new_event_loop()
    ref = asyncio.SelectorEventLoop()
    try:
        assert type(getattr(loop, name)) is type(getattr(ref, name))
        assert getattr(loop, name) == getattr(ref, name)
    finally:
        loop.close()
        ref.close()


@pytest.mark.parametrize("debug", [False, True])
def test_current_handle_is_the_running_handle_in_debug_mode(loop, debug):
    # asyncio records the running handle (for the exception handler's
    # handle_traceback) in debug mode only.
    seen = []
    loop.set_debug(debug)

    def cb():
        seen.append(loop._current_handle)

    h = loop.call_soon(cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [h if debug else None]
    assert loop._current_handle is None


def test_importing_flaskasync_touches_no_deprecated_asyncio_name():
    # asyncio's policy classes are deprecated from Python 3.14 on: importing
    # flaskasync must not build EventLoopPolicy (it is made on first use).
    import subprocess

    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import flaskasync, flaskasync.loop\n"
        "assert '_policy_class' not in vars(flaskasync.loop) or "
        "flaskasync.loop._policy_class is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_event_loop_policy_makes_flaskasync_loops():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.14+
        policy = flaskasync.EventLoopPolicy()
        assert isinstance(policy, asyncio.DefaultEventLoopPolicy)
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, flaskasync.Loop)
    finally:
        loop.close()


def test_transports_are_flow_control_transports(loop):
    # As the selector loop's: asyncio's sendfile fallback requires it.
    from asyncio import transports

    async def main():
        a, b = __import__("socket").socketpair()
        tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        try:
            assert isinstance(tr, transports._FlowControlMixin)
            assert isinstance(tr, asyncio.Transport)
            assert tr._loop is loop
            assert tr._protocol_paused is False
            tr.set_write_buffer_limits(high=100, low=10)
            assert (tr._low_water, tr._high_water) == (10, 100)
            assert tr.get_write_buffer_limits() == (10, 100)
        finally:
            tr.close()
            b.close()
            await asyncio.sleep(0)

    loop.run_until_complete(main())
