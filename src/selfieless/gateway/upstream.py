"""The backend side of the socket edge: one :class:`UpstreamConnection` per backend socket.

It parses responses (httptools) and hands what it reads to the client connection it is lent to
for one exchange; between exchanges it is parked in its backend's idle list for keep-alive
reuse. It decides nothing about failures: it reports them (``upstream_lost``) and the client
connection asks :mod:`~selfieless.gateway.exchange` what to do.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import httptools

from .headers import FRAME_CHUNKED, ResponseHeadReader

if TYPE_CHECKING:
    from .client import ClientConnection


def set_nodelay(transport) -> None:
    """Send small writes at once (a proxy's writes are whole heads and bodies, never dribbles)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass


class UpstreamConnection(ResponseHeadReader, asyncio.Protocol):
    """A connection to one backend; lent to one client connection per exchange.

    Its response parser calls :class:`ResponseHeadReader`'s ``on_status``/``on_header``, which
    rewrite the head as it arrives.
    """

    def __init__(self, gw, backend) -> None:
        self.gw = gw
        self.backend = backend
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: ClientConnection | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.got_bytes = False
        self.heard = False  # bytes arrived since the gateway's last sweep (it clears this)
        self.write_paused = False
        self.read_paused = False
        self.begin_head()
        self.head_done = False
        self.body_seen = False
        self.until_close = False
        self.done = False
        self.keep = False
        self.skip = False
        self.switching = False

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        cfg = self.gw.config
        transport.set_write_buffer_limits(cfg.write_buffer_high, cfg.write_buffer_low)
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes on an idle connection: not a response to anything of ours. Unusable.
            self.close()
            return
        self.got_bytes = self.heard = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.switching and self.client is client:
                self.client = None
                client.switch_protocols(self, data[exc.args[0]:])
            else:
                self._bad_response(client)  # a 101 nobody asked for
            return
        except httptools.HttpParserError:
            self._bad_response(client)
            return
        if self.done and self.client is client:
            self.client = None
            client.response_done(self, self.keep)  # flushes, ending included
            return
        client.deadline = self.gw.now + client.response_timeout  # the replica is not silent
        if self.body_seen or client.committed:
            client.flush()
        # else: this read held only the response head. Keep it back until the next read brings
        # body bytes (uvicorn, for one, writes head and body separately): if the replica dies
        # in between, the client has seen nothing and the request can still go elsewhere.

    def _bad_response(self, client: ClientConnection) -> None:
        """The replica sent something that is not a valid response (to this request)."""
        if self.body_seen or client.committed:
            client.flush()  # relay the good part; the close tells the client it is short
        if self.client is client:
            self.client = None
            self.abort()
            if self.done:
                client.response_done(self, False)
            else:
                client.upstream_lost(self, True, bad=True)

    def eof_received(self):
        return False  # close our side too; connection_lost does the rest

    def connection_lost(self, exc) -> None:
        self.closed = True
        client = self.client
        if client is None:
            return  # idle (the pool skips closed connections) or already detached
        self.client = None
        if self.head_done and (self.done or (self.until_close and exc is None)):
            client.response_done(self, False)
        else:
            client.upstream_lost(self, self.got_bytes)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.client is not None:
            self.client.upstream_full(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.client is not None:
            self.client.upstream_full(False)

    # httptools callbacks ---------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        code = self.parser.get_status_code()
        if code < 200:
            if code == 101 and self.client.active.upgrade:
                self.switching = True  # feed_data raises HttpParserUpgrade where the tunnel starts
                return
            # Informational (we never forward Expect, so no 100 is expected): drop it.
            self.skip = True
            return
        client = self.client
        self.head_done = True
        self.until_close = client.response_head(self, code)
        if client.active.is_head:
            # The parser cannot know a HEAD response has no body; end it here and start a
            # fresh parser for the next response on this connection.
            self.keep = self.parser.should_keep_alive() and not self.until_close
            self.done = True
            self.parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.body_seen = True
            client = self.client
            if client.active.framing == FRAME_CHUNKED:
                client.out.append(b"%x\r\n%b\r\n" % (len(body), body))
            else:
                client.out.append(body)

    def on_message_complete(self) -> None:
        if self.skip:
            self.skip = False
            self.begin_head()
            return
        if not self.done:
            self.done = True
            self.keep = self.parser.should_keep_alive()

    # Helpers --------------------------------------------------------------------------------
    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.client = None
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.client = None
        if not self.closed:
            self.closed = True
            self.transport.abort()
