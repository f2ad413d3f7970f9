"""Upgraded connections (WebSocket): after a replica's ``101 Switching Protocols`` the client
socket and the replica socket are spliced, and bytes are relayed both ways as they come.

Flow control as in the proxy: a full write buffer on one side pauses reading on the other. A
half-close is passed on (EOF from one side becomes a write EOF on the other), and the tunnel ends
when both directions are done, when either socket closes, or when the client connection's
sweeper sees it silent for ``tunnel_idle_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class _Side(asyncio.Protocol):
    """Reads one socket of a tunnel and writes what it reads to the other."""

    def __init__(self, tunnel: Tunnel, transport) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.peer: _Side | None = None
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)
        self.tunnel.touch()

    def eof_received(self):
        self.eof = True
        if self.peer.eof:
            self.tunnel.close()
            return False
        try:
            self.peer.transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            self.tunnel.close()
            return False
        return True  # the other direction may still have things to say

    def connection_lost(self, exc) -> None:
        self.tunnel.close()

    def pause_writing(self) -> None:
        if not self.peer.transport.is_closing():
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()


class Tunnel:
    """Takes over a client transport and a replica transport (``set_protocol``) until it ends.

    ``touch`` is called on every relayed read (the idle clock); ``on_end`` once, when the tunnel
    is over and both transports are closing. ``client_full``/``replica_full``: that transport's
    write buffer is over its high-water mark right now.
    """

    def __init__(self, client_transport, replica_transport, touch: Callable[[], None],
                 on_end: Callable[[], None], client_full: bool = False,
                 replica_full: bool = False) -> None:
        self.touch = touch
        self._on_end = on_end
        self.closed = False
        self.client = _Side(self, client_transport)
        self.replica = _Side(self, replica_transport)
        self.client.peer, self.replica.peer = self.replica, self.client
        client_transport.set_protocol(self.client)
        replica_transport.set_protocol(self.replica)
        # A write buffer already over its high-water mark has had its pause_writing call (it
        # went to the HTTP protocol): hold the other side until resume_writing reaches the tunnel.
        for reader, full in ((client_transport, replica_full), (replica_transport, client_full)):
            if full:
                reader.pause_reading()
            else:
                reader.resume_reading()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client.transport.close()  # flushes what is still buffered, then closes
        self.replica.transport.close()
        self._on_end()
