"""What the running interpreter's asyncio does where Python versions differ.

Every behaviour test runs on flaskasync's loop and on asyncio's own, so the
asyncio run is the reference.  Where a test must state an expectation that
changed between Python versions (a message, a documented change), it takes
it from here, with the change it follows, instead of encoding one version.
"""

from __future__ import annotations

import sys

PY = sys.version_info[:3]

#: Server.wait_closed() waits for the server's connections to end, even
#: after close() (fixed in 3.12.1, gh-79033); before, it returned at once
#: once the server was closed.
WAIT_CLOSED_WAITS_FOR_CONNECTIONS = PY >= (3, 12, 1)

#: create_unix_server(cleanup_socket=True) is the default from 3.13 on: the
#: socket file is removed when the server closes.
UNIX_SERVER_UNLINKS_SOCKET = PY >= (3, 13)

#: From 3.13 on a datagram transport sends an empty datagram for b"" (3.11
#: and 3.12 drop it) and counts 8 header bytes per queued datagram in
#: get_write_buffer_size().
DATAGRAM_SENDS_EMPTY = PY >= (3, 13)
DATAGRAM_HEADER_BYTES = 8 if PY >= (3, 13) else 0


def bind_error(address, exc: OSError) -> str:
    """The message of create_connection/create_server when binding fails:
    3.13 quotes str(exc) (with the errno), 3.11/3.12 exc.strerror."""
    detail = str(exc).lower() if PY >= (3, 13) else exc.strerror.lower()
    return f"[Errno {exc.errno}] error while attempting to bind on address {address!r}: {detail}"


def datagram_socket_expected(sock) -> str:
    """create_datagram_endpoint(sock=<stream socket>)'s ValueError message."""
    kind = "datagram socket" if PY >= (3, 13) else "UDP Socket"
    return f"A {kind} was expected, got {sock!r}"


def asyncio_bug(request, loop_kind: str, affected: bool, reason: str) -> None:
    """The running Python's asyncio has a bug this test catches: expect its
    asyncio run to fail (flaskasync's loop keeps the correct behaviour, and
    its run still must pass).  Not strict: a later patch release may fix it."""
    if loop_kind == "asyncio" and affected:
        import pytest

        request.applymarker(pytest.mark.xfail(reason=f"asyncio bug: {reason}", strict=False))


class record_unraisable:
    """Collect the unraisable exceptions of a block (instead of pytest's
    error), for a reference run whose asyncio reports one by mistake."""

    def __enter__(self):
        self.seen = []
        self._old = sys.unraisablehook
        sys.unraisablehook = lambda u: self.seen.append(u.exc_value)
        return self

    def __exit__(self, *exc):
        sys.unraisablehook = self._old
        return False
