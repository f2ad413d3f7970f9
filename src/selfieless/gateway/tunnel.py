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

from .flow import PEER_FULL, FlowControl


class _Side(asyncio.Protocol):
    """Reads one socket of a tunnel and writes what it reads to the other."""

    def __init__(self, tunnel: Tunnel, flow: FlowControl) -> None:
        self.tunnel = tunnel
        self.flow = flow
        self.transport = flow.transport
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
        self.flow.writing_paused()

    def resume_writing(self) -> None:
        self.flow.writing_resumed()


class Tunnel:
    """Takes over a client socket and a replica socket (``set_protocol``) until it ends.

    Each comes with its :class:`~.flow.FlowControl` (whatever paused its reading before is over:
    from now on only the other side's full write buffer does). ``touch`` is called on every
    relayed read (the idle clock); ``on_end`` once, when the tunnel is over and both transports
    are closing.
    """

    def __init__(self, client_flow: FlowControl, replica_flow: FlowControl, touch: Callable[[], None],
                 on_end: Callable[[], None]) -> None:
        self.touch = touch
        self._on_end = on_end
        self.closed = False
        self.client = _Side(self, client_flow)
        self.replica = _Side(self, replica_flow)
        self.client.peer, self.replica.peer = self.replica, self.client
        client_flow.transport.set_protocol(self.client)
        replica_flow.transport.set_protocol(self.replica)
        # A write buffer already over its high-water mark has had its pause_writing call (it
        # went to the HTTP protocol): hold the other side until resume_writing reaches the tunnel.
        client_flow.peer, replica_flow.peer = replica_flow, client_flow
        client_flow.only(PEER_FULL if replica_flow.write_paused else 0)
        replica_flow.only(PEER_FULL if client_flow.write_paused else 0)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client.transport.close()  # flushes what is still buffered, then closes
        self.replica.transport.close()
        self._on_end()
