"""The backend side of the socket edge: one :class:`UpstreamConnection` per backend socket.

It parses responses (httptools) and reports what it reads to the
:class:`~selfieless.gateway.backend_exchange.BackendExchange` it is lent to for one request
(``lend``); between requests it is parked in its backend's idle list for keep-alive reuse. It
decides nothing: it reports a response head, body bytes, the end of a read, the end of the
response, a switch to another protocol, or the loss of the connection, and the exchange acts.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import httptools

from .flow import FlowControl
from .headers import ResponseHeadReader

if TYPE_CHECKING:
    from .backend_exchange import BackendExchange


def set_nodelay(transport) -> None:
    """Send small writes at once (a proxy's writes are whole heads and bodies, never dribbles)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass


class UpstreamConnection(ResponseHeadReader, asyncio.Protocol):
    """A connection to one backend; lent to one exchange per request.

    Its response parser calls :class:`ResponseHeadReader`'s ``on_status``/``on_header``, which
    rewrite the head as it arrives.
    """

    def __init__(self, gw, backend) -> None:
        self.gw = gw
        self.backend = backend
        self.transport = None
        self.flow: FlowControl | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.heard = False  # bytes arrived since the gateway's sweep last looked (see heard_since)
        # Who the response goes to, whether the connection was reused (taken from the idle pool)
        # and the response's state: set per request by ``lend``.
        self.lend(None, False, False, False)

    def lend(self, exchange: BackendExchange | None, reused: bool, expect_upgrade: bool,
             head_only: bool) -> None:
        """From now on the response read here goes to ``exchange``: a fresh response state."""
        self.exchange = exchange
        self.reused = reused
        self.begin_head()
        self.expect_upgrade = expect_upgrade  # a 101 is the answer we hope for (WebSocket)
        self.head_only = head_only  # a HEAD request: the response has no body, whatever it says
        self.got_bytes = False  # any byte of this response
        self.head_done = False
        self.body_seen = False
        self.until_close = False  # the backend delimits the body by closing
        self.done = False
        self.keep = False  # the backend keeps the connection open after this response
        self.skip = False  # an informational (1xx) response is being dropped
        self.switching = False

    def heard_since(self) -> bool:
        """Whether bytes came since the last call, or reading is paused (we are the silent
        ones). The gateway's sweep asks once per pass; a backend paused between its head and
        its body must not look alive for ever, so only new bytes count."""
        heard, self.heard = self.heard, False
        return heard or bool(self.flow.paused_by)

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)
        cfg = self.gw.config
        transport.set_write_buffer_limits(cfg.write_buffer_high, cfg.write_buffer_low)
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # Bytes on an idle connection: not a response to anything of ours. Unusable.
            self.close()
            return
        self.got_bytes = self.heard = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.switching and self.exchange is ex:
                self.exchange = None
                ex.switched(self, data[exc.args[0]:])
            else:
                self._bad_response(ex)  # a 101 nobody asked for
            return
        except httptools.HttpParserError:
            self._bad_response(ex)
            return
        if self.done and self.exchange is ex:
            self.exchange = None
            ex.done(self, self.keep)
            return
        ex.read_done(self.body_seen)

    def _bad_response(self, ex: BackendExchange) -> None:
        """The backend sent something that is not a valid response (to this request)."""
        if self.exchange is ex:
            self.exchange = None
            ex.bad_response(self, self.body_seen, self.done)

    def eof_received(self):
        return False  # close our side too; connection_lost does the rest

    def connection_lost(self, exc) -> None:
        self.closed = True
        ex = self.exchange
        if ex is None:
            return  # idle (the pool skips closed connections) or already detached
        self.exchange = None
        if self.head_done and (self.done or (self.until_close and exc is None)):
            ex.done(self, False)
        else:
            ex.lost(self, self.got_bytes)

    def pause_writing(self) -> None:
        self.flow.writing_paused()

    def resume_writing(self) -> None:
        self.flow.writing_resumed()

    # httptools callbacks ---------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        code = self.parser.get_status_code()
        if code < 200:
            if code == 101 and self.expect_upgrade:
                self.switching = True  # feed_data raises HttpParserUpgrade where the tunnel starts
                return
            # Informational (we never forward Expect, so no 100 is expected): drop it.
            self.skip = True
            return
        self.head_done = True
        self.until_close = self.exchange.head(self, code)
        if self.head_only:
            # The parser cannot know a HEAD response has no body; end it here and start a
            # fresh parser for the next response on this connection.
            self.keep = self.parser.should_keep_alive() and not self.until_close
            self.done = True
            self.parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.body_seen = True
            self.exchange.body(body)

    def on_message_complete(self) -> None:
        if self.skip:
            self.skip = False
            self.begin_head()
            return
        if not self.done:
            self.done = True
            self.keep = self.parser.should_keep_alive()

    # Helpers --------------------------------------------------------------------------------
    def close(self) -> None:
        self.exchange = None
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.exchange = None
        if not self.closed:
            self.closed = True
            self.transport.abort()
