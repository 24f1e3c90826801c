"""create_datagram_endpoint for flaskasync.Loop.

The transport is C (:class:`flaskasync._core.DatagramTransport`): receiving,
sending, queueing, flow control and closing run no Python code of ours.
This module does what runs once per endpoint: checking the arguments,
resolving the addresses (numeric ones without a lookup), creating, binding
and connecting the socket, and waiting for ``connection_made``.  The
behaviour, errors included, is that of Python 3.11's asyncio
(``BaseEventLoop.create_datagram_endpoint``).
"""

from __future__ import annotations

import logging
import os
import socket
import stat

from asyncio import trsock

from . import _core
from ._net import _set_reuseport

logger = logging.getLogger("asyncio")



class DatagramTransport(_core.DatagramTransport):
    """A UDP or Unix datagram transport (asyncio.DatagramTransport API)."""

    @property
    def max_size(self) -> int:
        """The largest datagram received (asyncio's 256 KiB).  Read-only: the
        receive buffer is the C transport's, so setting it raises instead of
        being ignored."""
        return 256 * 1024


class DatagramMixin:
    """The UDP methods of flaskasync.Loop above the C datagram transport."""

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
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
        return DatagramTransport(self, sock, protocol, extra, address, waiter)

    async def create_datagram_endpoint(self, protocol_factory, local_addr=None, remote_addr=None,
                                       *, family=0, proto=0, flags=0, reuse_port=None,
                                       allow_broadcast=None, sock=None):
        """Create a datagram (UDP or Unix datagram) endpoint.

        Returns ``(transport, protocol)`` once ``protocol.connection_made``
        has been called.  Arguments and errors are asyncio's.
        """
        created = False
        if sock is not None:
            if sock.type != socket.SOCK_DGRAM:
                raise ValueError(f"A UDP Socket was expected, got {sock!r}")
            if (local_addr or remote_addr or family or proto or flags or reuse_port
                    or allow_broadcast):
                opts = dict(local_addr=local_addr, remote_addr=remote_addr, family=family,
                            proto=proto, flags=flags, reuse_port=reuse_port,
                            allow_broadcast=allow_broadcast)
                problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
                raise ValueError(
                    f"socket modifier keyword arguments can not be used when sock is "
                    f"specified. ({problems})")
            sock.setblocking(False)
            r_addr = None
        else:
            if not (local_addr or remote_addr):
                if family == 0:
                    raise ValueError("unexpected address family")
                addr_pairs_info = (((family, proto), (None, None)),)
            elif hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
                for addr in (local_addr, remote_addr):
                    if addr is not None and not isinstance(addr, str):
                        raise TypeError("string is expected")
                if local_addr and local_addr[0] not in (0, "\x00"):
                    try:
                        if stat.S_ISSOCK(os.stat(local_addr).st_mode):
                            os.remove(local_addr)
                    except FileNotFoundError:
                        pass
                    except OSError as err:
                        # The directory may only allow creating the socket.
                        logger.error("Unable to check or remove stale UNIX socket %r: %r",
                                     local_addr, err)
                addr_pairs_info = (((family, proto), (local_addr, remote_addr)),)
            else:
                # Group the addresses by (family, proto), in resolution order.
                addr_infos = {}
                for idx, addr in ((0, local_addr), (1, remote_addr)):
                    if addr is not None:
                        if not (isinstance(addr, tuple) and len(addr) == 2):
                            raise TypeError("2-tuple is expected")
                        infos = await self._resolve(addr, family=family, type=socket.SOCK_DGRAM,
                                                   proto=proto, flags=flags)
                        if not infos:
                            raise OSError("getaddrinfo() returned empty list")
                        for fam, _, pro, _, address in infos:
                            key = (fam, pro)
                            if key not in addr_infos:
                                addr_infos[key] = [None, None]
                            addr_infos[key][idx] = address
                # Each given address needs an entry for the pair.
                addr_pairs_info = [
                    (key, addr_pair) for key, addr_pair in addr_infos.items()
                    if not ((local_addr and addr_pair[0] is None)
                            or (remote_addr and addr_pair[1] is None))
                ]
                if not addr_pairs_info:
                    raise ValueError("can not get address information")

            exceptions = []
            for (family, proto), (local_address, remote_address) in addr_pairs_info:
                sock = None
                r_addr = None
                try:
                    sock = socket.socket(family=family, type=socket.SOCK_DGRAM, proto=proto)
                    if reuse_port:
                        _set_reuseport(sock)
                    if allow_broadcast:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    sock.setblocking(False)
                    if local_addr:
                        sock.bind(local_address)
                    if remote_addr:
                        if not allow_broadcast:
                            await self.sock_connect(sock, remote_address)
                        r_addr = remote_address
                except OSError as exc:
                    if sock is not None:
                        sock.close()
                    exceptions.append(exc)
                except BaseException:
                    if sock is not None:
                        sock.close()
                    raise
                else:
                    break
            else:
                try:
                    raise exceptions[0]
                finally:
                    exceptions = None
            created = True

        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            transport = self._make_datagram_transport(sock, protocol, r_addr, waiter)
        except BaseException:
            if created:
                sock.close()  # ours: asyncio would leave it to the collector
            raise
        if self.get_debug():
            if local_addr:
                logger.info("Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                            local_addr, remote_addr, transport, protocol)
            else:
                logger.debug("Datagram endpoint remote_addr=%r created: (%r, %r)",
                             remote_addr, transport, protocol)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol
