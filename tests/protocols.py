"""Protocols shared by the transport tests (streams, Unix sockets, TLS):
each records the callbacks it receives, so that a test compares the record
on flaskasync's loop with the one on asyncio's."""

from __future__ import annotations

import asyncio


class Proto(asyncio.Protocol):
    """Records every callback it receives, in order.

    events: "made", "data", "eof", "lost" (consecutive data merged); data:
    every byte received; data_types: the types data came as (asyncio passes
    bytes, and so must we: checked here too); flow: "pause"/"resume" of
    writing; made/eof/lost: futures set by the first such callback.
    eof_received returns eof_result (True keeps the transport half-open)."""

    def __init__(self, loop, eof_result=None):
        self.loop = loop
        self.events = []
        self.data = bytearray()
        self.data_types = set()
        self.transport = None
        self.eof_result = eof_result
        self.lost_calls = []
        self.flow = []
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        self.data_types.add(type(data))
        assert type(data) is bytes, type(data)
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.flow.append("pause")

    def resume_writing(self):
        self.flow.append("resume")


class Echo(Proto):
    """Writes back what it receives."""

    def data_received(self, data):
        super().data_received(data)
        self.transport.write(data)


class Factory:
    """A protocol factory that keeps the protocols it made."""

    def __init__(self, cls, loop):
        self.cls = cls
        self.loop = loop
        self.made = []

    def __call__(self):
        p = self.cls(self.loop)
        self.made.append(p)
        return p
