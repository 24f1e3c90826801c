"""create_datagram_endpoint for flaskasync.Loop (being written)."""

from __future__ import annotations


class DatagramMixin:
    """The UDP methods of flaskasync.Loop above the C datagram transport."""

    async def create_datagram_endpoint(self, protocol_factory, local_addr=None, remote_addr=None,
                                       **kwargs):
        """Not implemented yet: raises NotImplementedError naming create_datagram_endpoint."""
        raise NotImplementedError(
            "Loop.create_datagram_endpoint() is not implemented yet in flaskasync: use "
            "asyncio's own loop for UDP meanwhile."
        )
