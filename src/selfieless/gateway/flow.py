"""Flow control of one socket: why its reading is paused, and whether its write buffer is full.

Every protocol of the socket edge (the client connection, the backend connection, both sides of
a tunnel) has one :class:`FlowControl`. Two of them are *coupled* while bytes flow between their
sockets (a client and the backend answering it, or the two ends of a tunnel): when one's write
buffer goes over its high-water mark, the other stops reading (``PEER_FULL``) until it drains, so
a slow reader never makes the gateway hold a whole body.

Reading may be paused for several reasons at once (a bit each); it resumes when none is left.
"""

from __future__ import annotations

PEER_FULL = 1  # the coupled socket's write buffer is full: what we read could not be written on
NO_PEER = 2  # body bytes arrived but nothing is attached to write them to yet (held until then)


class FlowControl:
    """Pause/resume bookkeeping of one transport (uvicorn keeps one such object per connection)."""

    __slots__ = ("transport", "paused_by", "write_paused", "peer")

    def __init__(self, transport) -> None:
        self.transport = transport
        self.paused_by = 0  # reasons reading is paused (bits); 0: reading
        self.write_paused = False  # our write buffer is over its high-water mark
        self.peer: FlowControl | None = None  # the socket what we write comes from

    def pause(self, reason: int) -> None:
        if not self.paused_by and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused_by |= reason

    def resume(self, reason: int) -> None:
        if self.paused_by & reason:
            self.paused_by &= ~reason
            if not self.paused_by and not self.transport.is_closing():
                self.transport.resume_reading()

    def only(self, reason: int) -> None:
        """Paused for ``reason`` alone (0: reading), whatever the reasons were until now."""
        self.paused_by = reason
        if reason:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # The transport's own calls (asyncio.Protocol.pause_writing / resume_writing) ------------
    def writing_paused(self) -> None:
        self.write_paused = True
        if self.peer is not None:
            self.peer.pause(PEER_FULL)

    def writing_resumed(self) -> None:
        self.write_paused = False
        if self.peer is not None:
            self.peer.resume(PEER_FULL)


def couple(a: FlowControl, b: FlowControl) -> None:
    """From now on a full write buffer on either side pauses reading on the other."""
    a.peer, b.peer = b, a
    if a.write_paused:
        b.pause(PEER_FULL)
    if b.write_paused:
        a.pause(PEER_FULL)


def uncouple(a: FlowControl, b: FlowControl) -> None:
    """The exchange between the two is over: neither holds the other's reading any more."""
    a.peer = b.peer = None
    if a.paused_by:
        a.resume(PEER_FULL)
    if b.paused_by:
        b.resume(PEER_FULL)
