"""The transport hooks of flaskasync.Loop.

flaskasync.Loop derives from the running interpreter's own
``asyncio.SelectorEventLoop``, so the Python-shaped, once-per-connection
work (resolving and connecting, happy eyeballs, ``create_server`` and the
``Server`` object, accepting, Unix sockets, TLS through ``SSLProtocol``,
``start_tls``, ``sendfile``'s fallback, pipes, ``create_datagram_endpoint``,
subprocesses) is asyncio's code of that Python version, errors and all.
asyncio's loops reach their transports through a small set of hooks
(``_make_socket_transport`` and friends, ``_add_reader``...); this module
supplies them with flaskasync's C transports and C fd watchers, which run
the hot paths (reading, writing, flow control, closing) without Python code
of ours.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading

from asyncio import constants, sslproto, trsock, unix_events

from . import _core

logger = logging.getLogger("asyncio")

_MODE_SOCKET, _MODE_READ_PIPE, _MODE_WRITE_PIPE = 0, 1, 2


class SocketTransport(_core.StreamTransport):
    """A TCP or Unix socket transport (asyncio.Transport API)."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE


class PipeTransport(_core.StreamTransport):
    """A read or write pipe transport (loop.sendfile() does not take it)."""


class DatagramTransport(_core.DatagramTransport):
    """A UDP or Unix datagram transport (asyncio.DatagramTransport API)."""

    @property
    def max_size(self) -> int:
        """The largest datagram received (asyncio's 256 KiB).  Read-only: the
        receive buffer is the C transport's, so setting it raises instead of
        being ignored."""
        return 256 * 1024


def _socket_extra(sock, extra) -> dict:
    """The extra info asyncio's selector transports give a socket."""
    extra = {} if extra is None else dict(extra)
    extra["socket"] = trsock.TransportSocket(sock)
    try:
        extra["sockname"] = sock.getsockname()
    except OSError:
        extra["sockname"] = None
    if "peername" not in extra:
        try:
            extra["peername"] = sock.getpeername()
        except OSError:
            extra["peername"] = None
    return extra


def _set_nodelay(sock) -> None:
    # As asyncio's _SelectorSocketTransport: TCP_NODELAY on TCP sockets.
    if (
        sock.family in (socket.AF_INET, socket.AF_INET6)
        and sock.type == socket.SOCK_STREAM
        and sock.proto == socket.IPPROTO_TCP
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TransportHooks:
    """The hooks asyncio's event loop classes call to make transports and to
    watch fds, answered by the C core."""

    # ------------------------------------------------------------ fds

    def _ensure_fd_no_transport(self, fd) -> None:
        """RuntimeError if fd belongs to a live transport (as asyncio)."""
        self._check_fd_no_transport(fd)

    # _add_reader & co. are CLoop's C methods: asyncio's internals call them
    # for listening sockets and pidfds, without the transport check.

    # ------------------------------------------------------------ transports

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        _set_nodelay(sock)
        # The transport attaches itself to server (Server._attach) first,
        # as asyncio's do.
        return SocketTransport(self, sock, protocol, _socket_extra(sock, extra), _MODE_SOCKET,
                               waiter, server)

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *,
                            server_side=False, server_hostname=None, extra=None, server=None,
                            **ssl_kwargs):
        # As asyncio's selector loop: the stdlib's SSLProtocol over a
        # socket transport (ssl_kwargs: the timeouts and flags that version
        # of SSLProtocol takes).
        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname, **ssl_kwargs
        )
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return DatagramTransport(self, sock, protocol, _socket_extra(sock, extra), address, waiter)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        # The checks of asyncio's _UnixReadPipeTransport.__init__.
        mode = os.fstat(pipe.fileno()).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(pipe.fileno(), False)
        return PipeTransport(self, pipe, protocol, _pipe_extra(pipe, extra), _MODE_READ_PIPE,
                             waiter)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        # The checks of asyncio's _UnixWritePipeTransport.__init__.
        mode = os.fstat(pipe.fileno()).st_mode
        is_fifo, is_socket = stat.S_ISFIFO(mode), stat.S_ISSOCK(mode)
        if not (stat.S_ISCHR(mode) or is_fifo or is_socket):
            raise ValueError("Pipe transport is only for pipes, sockets and character devices")
        os.set_blocking(pipe.fileno(), False)
        # Watching the write end of a pipe or socket for "readable" tells
        # when the reader went away, as asyncio's write pipe transport does.
        return PipeTransport(self, pipe, protocol, _pipe_extra(pipe, extra), _MODE_WRITE_PIPE,
                             waiter, None, is_fifo or is_socket)

    async def _sendfile_native(self, transp, file, offset, count):
        # As asyncio's selector loop: wait for the write buffer to drain
        # with reading paused, then hand the fd to sock_sendfile.
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        try:
            return await self.sock_sendfile(transp._sock, file, offset, count, fallback=False)
        finally:
            transp._reset_empty_waiter()
            if resume_reading:
                transp.resume_reading()

    # ------------------------------------------------------------ subprocesses

    async def _make_subprocess_transport(self, protocol, args, shell, stdin, stdout, stderr,
                                         bufsize, extra=None, **kwargs):
        # asyncio's Unix subprocess transport (Popen and pipe transports);
        # the child's exit is watched by this loop through a pidfd instead
        # of a process-wide child watcher.
        waiter = self.create_future()
        transport = unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs,
        )
        self._watch_child(transport)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    def _watch_child(self, transport) -> None:
        """Call transport._process_exited(returncode) on this loop when the
        child exits: through a pidfd watched by the loop where Linux has
        them, else from a thread blocked in waitpid."""
        pid = transport.get_pid()
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            threading.Thread(target=self._wait_child_thread, args=(pid, transport),
                             name=f"flaskasync-waitpid-{pid}", daemon=True).start()
            return

        def on_exit():
            self._remove_reader(pidfd)
            self._child_pidfds.pop(pidfd, None)
            os.close(pidfd)
            transport._process_exited(_reap(pid, transport))

        try:
            self._add_reader(pidfd, on_exit)
        except BaseException:
            os.close(pidfd)
            raise
        self._child_pidfds[pidfd] = (pid, transport)

    def _close_child_watchers(self) -> None:
        """loop.close(): stop watching children.  Their exit goes unreported
        (the loop is gone), but a thread still reaps each one when it exits,
        so that no zombie is left behind (asyncio 3.11's threaded child
        watcher does; 3.12+'s pidfd watcher leaves a zombie)."""
        watched, self._child_pidfds = self._child_pidfds, {}
        for pidfd, (pid, transport) in watched.items():
            self._remove_reader(pidfd)
            os.close(pidfd)
            threading.Thread(target=_reap_after_close, args=(self, pid, transport),
                             name=f"flaskasync-waitpid-{pid}", daemon=True).start()

    def _wait_child_thread(self, pid, transport) -> None:
        returncode = _reap(pid, transport)
        try:
            self.call_soon_threadsafe(transport._process_exited, returncode)
        except RuntimeError:
            logger.warning("Loop %r closed before child process %d exited", self, pid)


def _pipe_extra(pipe, extra) -> dict:
    extra = {} if extra is None else dict(extra)
    extra["pipe"] = pipe
    return extra


def _reap_after_close(loop, pid, transport) -> None:
    _reap(pid, transport)
    logger.warning("Loop %r that handles pid %r is closed", loop, pid)


def _reap(pid, transport) -> int:
    """Collect the exit status of pid (it has exited or is about to)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # Someone else reaped it (Popen.poll() in transport.close()).
        proc = getattr(transport, "_proc", None)
        if proc is not None and proc.returncode is not None:
            return proc.returncode
        logger.warning("child process pid %d exit status already read: will report returncode 255",
                       pid)
        return 255
    return os.waitstatus_to_exitcode(status)
