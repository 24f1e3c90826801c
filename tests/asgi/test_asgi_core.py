"""csrc/asgi.c against its Python twins in flaskasync/_asgi.py: the scope to
environ and start_response to http.response.start conversions."""

from __future__ import annotations

import gc
import sys
import tracemalloc

import pytest

pytest.importorskip("greenlet")

from flaskasync import _asgi, _core  # noqa: E402

BASE = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
    "scheme": "http", "path": "/", "raw_path": b"/", "root_path": "", "query_string": b"",
    "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555), "headers": [],
}

SCOPES = [
    {},
    {"path": "/a/b", "query_string": b"x=1&y=%20"},
    {"path": "/pfx/a", "root_path": "/pfx"},
    {"path": "/other", "root_path": "/pfx"},
    {"path": "/caf\u00e9/\u65e5\u672c", "root_path": "/r\u00e9"},
    {"server": None, "client": None},
    {"server": ("example.test", None), "http_version": "1.0", "scheme": "https"},
    {"headers": [(b"host", b"h.test:81"), (b"content-type", b"text/plain"),
                 (b"content-length", b"12"), (b"x-forwarded-for", b"1.2.3.4"),
                 (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"accept", b"a"),
                 (b"accept", b"b"), (b"x-caf\xe9", b"\xff\xfe")]},
    {"headers": [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")]},
    {"headers": [(b"content-length", b" 0 ")]},
    {"headers": [(b"x-" + b"long" * 60, b"v")]},
]


@pytest.mark.parametrize("extra", SCOPES, ids=range(len(SCOPES)))
def test_environ_matches_the_python_twin(extra):
    scope = dict(BASE, **extra)
    body = object()
    environ, has_body, chunked = _core._asgi_environ(scope, body, sys.stderr, {})
    assert environ == _asgi.build_environ(scope, body)
    assert (has_body, chunked) == _asgi._body_kind(scope)
    assert environ["wsgi.input"] is body and environ["asgi.scope"] is scope
    # The header-key cache gives the same answer the second time.
    cache: dict = {}
    _core._asgi_environ(scope, body, sys.stderr, cache)
    assert _core._asgi_environ(scope, body, sys.stderr, cache)[0] == environ


@pytest.mark.parametrize("bad", [
    {"headers": [(b"host",)]},
    {"headers": [("host", "h")]},
    {"headers": 42},
    {"path": b"/bytes"},
    {"query_string": "str"},
    {"server": ("only-host",)},
])
def test_environ_rejects_malformed_scopes(bad):
    with pytest.raises(TypeError):
        _core._asgi_environ(dict(BASE, **bad), None, sys.stderr, {})


def test_environ_needs_method_and_path():
    for key in ("method", "path"):
        scope = dict(BASE)
        del scope[key]
        with pytest.raises(KeyError):
            _core._asgi_environ(scope, None, sys.stderr, {})


@pytest.mark.parametrize("status, headers", [
    ("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "5")]),
    ("404 NOT FOUND", []),
    ("599 Custom", [("X-A", "caf\u00e9"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]),
    ("204", [("Content-Length", "not-a-number")]),
])
def test_start_message_matches_the_python_twin(status, headers):
    assert _core._asgi_start(status, headers) == _asgi._start_message([status], headers)


@pytest.mark.parametrize("status, headers, exc", [
    ("OK", [], ValueError),
    ("2000 OK", [], ValueError),
    (b"200 OK", [], TypeError),
    ("200 OK", [("a",)], TypeError),
    ("200 OK", [(b"a", b"b")], TypeError),
    ("200 OK", [("a", "\u65e5")], UnicodeEncodeError),
    ("200 OK", 42, TypeError),
])
def test_start_message_rejects_bad_input(status, headers, exc):
    with pytest.raises(exc):
        _core._asgi_start(status, headers)


def test_no_leaks():
    scope = dict(BASE, **SCOPES[7])
    headers = [("Content-Type", "text/plain"), ("Content-Length", "2")]

    def work():
        for _ in range(2000):
            _core._asgi_environ(scope, None, sys.stderr, {})
            _core._asgi_start("200 OK", headers)
            try:
                _core._asgi_start("200 OK", [("a", "\u65e5")])
            except UnicodeEncodeError:
                pass

    work()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown


# ------------------------------------------------------------ Python code run mid-conversion
#
# Header names that are bytes or str subclasses, and scope values with a
# __str__, run Python code while the C code converts them; that code can drop
# the last reference to what is being converted (the values are big, so that
# a use after free touches unmapped memory and crashes even without ASan).

BIG = 256 * 1024


def test_environ_holds_a_header_whose_list_a_name_hash_clears():
    headers: list = []

    class Name(bytes):
        def __hash__(self):
            headers.clear()
            return bytes.__hash__(self)

        __eq__ = bytes.__eq__

    for kind in (tuple, list):
        # The list holds the only references to the pair and its value.
        headers[:] = [kind((Name(b"x-a"), b"v" * BIG)), (b"x-b", b"never seen")]
        environ = _core._asgi_environ(dict(BASE, headers=headers), None, sys.stderr, {})[0]
        assert environ["HTTP_X_A"] == "v" * BIG
        assert "HTTP_X_B" not in environ


def test_environ_holds_a_header_pair_a_name_hash_empties():
    class Name(bytes):
        def __hash__(self):
            pair.clear()
            return bytes.__hash__(self)

        __eq__ = bytes.__eq__

    pair = [Name(b"x-a"), b"v" * BIG]
    environ = _core._asgi_environ(dict(BASE, headers=[pair]), None, sys.stderr, {})[0]
    assert environ["HTTP_X_A"] == "v" * BIG


@pytest.mark.parametrize("key", ["server", "client"])
def test_environ_holds_server_and_client_while_converting_them(key):
    scope = dict(BASE)

    class Host:
        def __str__(self):
            del scope[key]  # the scope held the only reference to the pair
            return "h"

    scope[key] = [Host(), "9" * BIG]
    environ = _core._asgi_environ(scope, None, sys.stderr, {})[0]
    if key == "server":
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("h", "9" * BIG)
    else:
        assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("h", "9" * BIG)


def test_start_converts_headers_a_name_lower_clears():
    headers: list = []

    class Name(str):
        def lower(self):
            headers.clear()
            return str.lower(self)

    headers[:] = [(Name("X-A"), "v" * BIG), ("X-B", "w"), ("Content-Length", "3")]
    msg, length = _core._asgi_start("200 OK", headers)
    # The pairs given are converted, all of them, as the list was when called.
    assert msg["headers"] == [(b"x-a", b"v" * BIG), (b"x-b", b"w"), (b"content-length", b"3")]
    assert length == 3


def test_start_rejects_a_name_whose_lower_is_not_a_str():
    class Name(str):
        def lower(self):
            return b"x-a"

    with pytest.raises(TypeError, match="lower"):
        _core._asgi_start("200 OK", [(Name("X-A"), "v")])


def test_environ_rejects_a_header_cache_with_non_str_values():
    scope = dict(BASE, headers=[(b"x-a", b"v")])
    with pytest.raises(TypeError, match="header_cache"):
        _core._asgi_environ(scope, None, sys.stderr, {b"x-a": 42})
