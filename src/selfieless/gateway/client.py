"""The client side of the socket edge: one :class:`ClientConnection` per accepted client socket.

It parses requests with httptools, refuses what it must (400, 408, 413, 431), answers the few
requests the gateway answers itself (``/``, no route), and hands each other request, one at a
time, to its :class:`~selfieless.gateway.backend_exchange.BackendExchange`, which owns the way to
a backend and back. Pipelined requests queue behind the active one. When the exchange is done
(``answered``) it answers the next, keeps the connection idle, or closes it: whether the
connection stays open is :func:`~selfieless.gateway.keepalive.keep_open`'s call.

Why callbacks and not streams: the request path is a handful of method calls per request with no
coroutine, task or future in it (measured ~5x faster than async/await streams). Coroutines are
used only off the hot path: opening a new backend connection and waiting for a ready backend.

* Flow control both ways (:mod:`.flow`): a full write buffer on one side pauses reading on the
  other, so a slow client or a 16 MiB upload never makes us hold a whole body.
* Timeouts are checked by one periodic sweep (see ``Gateway._sweep``) against per-connection
  deadlines, so the hot path only stores a float instead of arming a timer per request. This
  connection keeps the deadlines of reading requests (idle, head, body), of a lingering close and
  of a tunnel; the exchange keeps the response deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import httptools

from .backend_exchange import BackendExchange
from .exchange import Act, Deadline, on_deadline
from .flow import NO_PEER, PEER_FULL, FlowControl
from .front import Answer, host_of
from .headers import BadRequest, build_request_head, origin_form, websocket_upgrade, with_upgrade
from .keepalive import keep_open
from .request import Request
from .responses import CONTINUE_100, error_response, json_response
from .tunnel import Tunnel
from .upstream import set_nodelay

log = logging.getLogger(__name__)

# Why client reading is paused, beyond flow.PEER_FULL and flow.NO_PEER (bits): reading resumes
# only when no reason is left.
P_PIPELINE = 4  # a further request is queued behind the active one
P_DEAD = 8  # the connection is finishing (error answered or about to be): what arrives is dropped
P_UPGRADE = 16  # a WebSocket upgrade is sent: what follows is not HTTP, wait for the 101

# What the connection's deadline currently means (exchange.Deadline, as plain ints: they are
# compared on the hot path, where an exact int is the cheapest thing to compare).
D_NONE, D_IDLE, D_HEADER, D_BODY, D_LINGER, D_TUNNEL = (
    int(d) for d in (Deadline.NONE, Deadline.IDLE, Deadline.HEADER, Deadline.BODY, Deadline.LINGER,
                     Deadline.TUNNEL))

# Closing a socket with unread input makes the kernel send RST, which can destroy the error
# response we just wrote before the client reads it. So after an error we half-close and read
# (and drop) what the client still sends for a little while, like nginx's lingering_close.
LINGER_SECONDS = 2.0


_MISS = object()


class _Abort(Exception):
    """Raised inside a parser callback to stop parsing after we have answered."""


class ClientConnection(asyncio.Protocol):
    """A client socket: parses requests, hands them one at a time to its exchange."""

    proto = b"http"  # the scheme replicas hear in X-Forwarded-Proto (tls.TlsClientConnection: https)
    relayed_headers = b""  # header lines added to every relayed response (tls: HSTS)

    def __init__(self, gw) -> None:
        self.gw = gw
        cfg = self.cfg = gw.config
        self.loop = gw.loop
        # Settings read on every request, copied here to save attribute hops.
        self.max_header_size = cfg.max_header_size
        self.max_body_size = cfg.max_body_size
        self.retry_body_limit = cfg.retry_body_limit
        self.header_timeout = cfg.header_timeout
        self.body_timeout = cfg.body_timeout
        self.keepalive_timeout = cfg.keepalive_timeout
        self.transport = None
        self.flow: FlowControl | None = None
        self.exchange: BackendExchange | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = b"unknown"
        self._url = b""
        self._headers: list = []
        self._in_head = False
        self._head_bytes = 0
        self.cur: Request | None = None  # request whose head/body is being parsed
        self.active: Request | None = None  # request being proxied or answered
        self.queue: deque[Request] = deque()
        self.closed = False
        self.eof = False
        self.pending_error: tuple[int, str] | None = None
        self.deadline = 0.0
        self.deadline_kind = D_NONE
        self.tunnel: Tunnel | None = None  # set once a WebSocket upgrade succeeded

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)
        self.exchange = BackendExchange(self, transport, self.flow)
        cfg = self.cfg
        transport.set_write_buffer_limits(cfg.write_buffer_high, cfg.write_buffer_low)
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0]).encode()
        self.gw.clients.add(self)
        self.deadline_kind = D_IDLE
        self.deadline = self.gw.now + cfg.keepalive_timeout

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.gw.clients.discard(self)
        if self.active is not None:
            self.exchange.abort()
            self.active = None
        self.queue.clear()

    def eof_received(self):
        if self.deadline_kind == D_LINGER:
            return False
        # A client may half-close after its last request; answer it before closing.
        if self.active is not None or self.queue:
            self.eof = True
            return True
        return False

    def pause_writing(self) -> None:
        self.flow.writing_paused()

    def resume_writing(self) -> None:
        self.flow.writing_resumed()

    def data_received(self, data: bytes) -> None:
        if self.flow.paused_by & P_DEAD:
            return  # answered an error; the parser state is no longer trustworthy
        if self._in_head or self.cur is None:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if self.closed or self.flow.paused_by & P_DEAD or isinstance(exc.__context__, _Abort):
                return
            log.error("gateway: internal error handling a request", exc_info=exc.__context__ or exc)
            self._client_error(500, "internal gateway error")
            return
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_requested(data[exc.args[0]:])
            return
        except httptools.HttpParserError:
            self._client_error(400, "malformed HTTP request")
            return
        if self._in_head and self._head_bytes > self.max_header_size:
            self._client_error(431, "request header fields too large")

    def _upgrade_requested(self, rest: bytes) -> None:
        """Whatever follows on this socket is not HTTP we can parse. A WebSocket upgrade waits
        for the backend's answer (101: tunnel; anything else: answer and close); other upgrades
        went out as plain HTTP (Upgrade stripped): finish and close."""
        r = self.queue[-1] if self.queue else self.active or self.cur
        if r is None:
            self.close()  # answered already (by the gateway itself): nothing more to say
            return
        r.close_after = True
        if r.upgrade and r.complete:
            r.early = rest
            self.flow.pause(P_UPGRADE)
        else:
            self.flow.pause(P_DEAD)

    # httptools callbacks ---------------------------------------------------------------------
    # (No on_message_begin: on_url comes first in every request and one callback is cheaper
    # than two. A request that never gets past its method is closed by the idle timeout.)
    def on_url(self, url: bytes) -> None:
        if self._in_head:
            self._url += url  # the URL arrived in pieces
            return
        self._in_head = True
        self._url = url
        self._headers = []
        if self.active is None:
            self.deadline_kind = D_HEADER
            self.deadline = self.gw.now + self.header_timeout

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_bytes > self.max_header_size and (
            len(self._url) + sum(len(n) + len(v) + 4 for n, v in self._headers)
            > self.max_header_size
        ):
            self._client_error(431, "request header fields too large")
            raise _Abort
        self._head_bytes = 0
        r = self.cur = self._request()
        if self.active is None:
            self.active = r
            self._start(r)
        else:
            self.queue.append(r)
            self.flow.pause(P_PIPELINE)

    def _request(self) -> Request:
        """The request whose head was just read, rewritten for a backend and routed (or, after
        answering a refusal, _Abort)."""
        parser = self.parser
        target = self._url
        if target[:1] != b"/":
            target = origin_form(target)
            if target is None:
                self._client_error(400, "invalid request target")
                raise _Abort
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        method = parser.get_method()
        try:
            head, content_length, chunked, expect = build_request_head(
                method, target, self._headers, self.client_ip, self.proto)
        except BadRequest as exc:
            self._client_error(400, str(exc))
            raise _Abort from None
        if content_length > self.max_body_size:
            self._client_error(413, "request body too large")
            raise _Abort
        upgrade = None
        if parser.should_upgrade() and method == b"GET" and content_length <= 0 and not chunked:
            upgrade = websocket_upgrade(self._headers)
            if upgrade is not None:
                head = with_upgrade(head, upgrade)
        # The route: one dict hit for a key seen before, else the gateway's route table. By path
        # alone unless routes name hosts or TLS is on (see front.decide).
        gw = self.gw
        key = path if gw.by_path else (self.proto, host_of(self._headers), path)
        entry = gw.resolved.get(key, _MISS)
        if entry is _MISS:
            entry = gw.resolve(key)
        answer = None
        if entry.__class__ is Answer:  # the gateway answers itself: a redirect, a challenge, `/`
            answer, entry = entry, None
        r = Request(method, target, path, head, chunked, entry, self.loop.time())
        if not parser.should_keep_alive():
            r.keep_alive = False
        if parser.get_http_version() != "1.1":
            r.http11 = False
        if expect:
            r.expect_continue = True
        if chunked or content_length > 0 or expect:
            r.reads_body = True
        if upgrade is not None:
            r.upgrade = True
        if answer is not None:
            r.local = answer.local(target)
        elif entry is None or (path == b"/" and key is path):  # (a keyed `/` came as an answer)
            r.local = (200, None, b"") if path == b"/" else (404, {"error": "no route for this path"}, b"")
        if r.local is not None and (chunked or content_length > 0):
            # Not worth reading a body nobody will use: answer and close.
            self._client_error(r.local[0], "no route for this path", payload=r.local[1], headers=r.local[2])
            raise _Abort
        return r

    def on_body(self, body: bytes) -> None:
        r = self.cur
        r.received += len(body)
        if r.received > self.max_body_size:
            self._body_too_large(r)
            raise _Abort
        if r.chunked:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        self.exchange.body_part(r, body)
        if self.deadline_kind == D_BODY and r is self.active:
            self.deadline = self.gw.now + self.body_timeout

    def on_message_complete(self) -> None:
        r = self.cur
        self.cur = None
        self._head_bytes = 0
        r.complete = True
        if r.local is not None:
            if r is self.active:
                self._answer_local(r)
            return
        if r is self.active and self.deadline_kind == D_BODY:
            self.deadline_kind = D_NONE  # the exchange's response deadline follows
        self.exchange.request_complete(r)

    # The active request ---------------------------------------------------------------------
    def _start(self, r: Request) -> None:
        """``r`` becomes the active request."""
        self.deadline_kind = D_NONE
        if r.local is not None:
            if r.complete:
                self._answer_local(r)
            return
        if r.reads_body and not r.complete:
            if r.expect_continue:
                self.transport.write(CONTINUE_100)
            self.deadline_kind = D_BODY
            self.deadline = self.gw.now + self.body_timeout
            if r.chunked and r.received <= self.retry_body_limit:
                # A chunked body is read (up to retry_body_limit) before a backend is chosen.
                r.buffering = True
                self.exchange.begin(r)
                return
        self.exchange.start(r)

    def answered(self, r: Request) -> None:
        """``r`` is answered: go on with the next request, or close."""
        self.active = None
        flow = self.flow
        if flow.paused_by & (PEER_FULL | NO_PEER):
            flow.resume(PEER_FULL | NO_PEER)
        if self.pending_error is not None:
            status, msg = self.pending_error
            self.pending_error = None
            self.transport.write(error_response(status, msg, keep_alive=False))
            self._linger()
            return
        if r.close_after or self.closed or (self.eof and not self.queue):
            if r.complete or self.closed:
                self.close()
            else:
                flow.pause(P_DEAD)
                self._linger()  # the client may still be sending the body we did not want
            return
        if self.queue:
            nxt = self.queue.popleft()
            if not self.queue:
                flow.resume(P_PIPELINE)
            self.active = nxt
            self._start(nxt)
            return
        if flow.paused_by & P_PIPELINE:
            flow.resume(P_PIPELINE)
        if self._in_head:
            self.deadline_kind = D_HEADER
            self.deadline = self.gw.now + self.header_timeout
        else:
            self.deadline_kind = D_IDLE
            self.deadline = self.gw.now + self.keepalive_timeout

    def _keep_open(self, r: Request) -> bool:  # after the gateway's own answer to ``r``
        return keep_open(r.keep_alive, r.complete, self.eof, r.close_after or self.gw.stopping)

    def _answer_local(self, r: Request) -> None:
        status, payload, headers = r.local
        if payload is None:
            payload = self.gw.status()
        keep = self._keep_open(r)
        r.close_after = not keep
        self.transport.write(json_response(status, payload, keep, r.is_head, headers, r.http11))
        self.answered(r)

    def answer_error(self, r: Request, status: int, message: str) -> None:
        """Answer the active request ourselves (the exchange has relayed no response byte)."""
        if r.stats is not None:
            r.stats.gateway_error(status)
        keep = self._keep_open(r)
        r.close_after = not keep
        self.transport.write(error_response(status, message, keep, r.is_head, r.http11))
        self.answered(r)

    def cut(self) -> None:
        """The exchange gave up mid-response: close without a word (the body is short)."""
        self.active = None
        self.close()

    def tunnel_to(self, conn, release) -> None:
        """The active request became a tunnel to ``conn`` (101 written); ``release`` at its end."""
        self.active = None
        tunnel_idle = self.cfg.tunnel_idle_timeout
        self.deadline_kind = D_TUNNEL
        self.deadline = self.gw.now + tunnel_idle

        def touch() -> None:
            self.deadline = self.gw.now + tunnel_idle

        def ended() -> None:
            self.closed = True
            self.deadline_kind = D_NONE
            self.gw.clients.discard(self)
            release()

        self.tunnel = Tunnel(self.flow, conn.flow, touch, ended)

    # Refusals and endings -------------------------------------------------------------------
    def _client_error(self, status: int, message: str, payload=None, headers: bytes = b"") -> None:
        """The client sent something we refuse: answer ``status`` and close this connection."""
        if self.closed or self.flow.paused_by & P_DEAD:
            return
        self.flow.pause(P_DEAD)
        r = self.active
        if r is not None and r is not self.cur and r.complete:
            # The error is about a later (pipelined) request: finish the active one first.
            self.pending_error = (status, message)
            return
        if r is not None:
            self.exchange.abort()
            self.active = None
            if r.response_started:
                self.close()  # part of a response is out: nothing honest to add
                return
            if r.stats is not None:
                r.stats.gateway_error(status)
        body = payload if payload is not None else {"error": message}
        self.transport.write(json_response(status, body, False, False, headers))
        self._linger()

    def _body_too_large(self, r: Request) -> None:
        if r is self.active and r.response_started:
            self.exchange.abort()
            self.cut()
        else:
            self._client_error(413, "request body too large")

    def _linger(self) -> None:
        """Half-close after a final response, drop further input for a while, then close."""
        if self.closed:
            return
        self.flow.pause(P_DEAD)  # data_received drops everything from now on ...
        try:
            self.transport.resume_reading()  # ... which it reads, so the kernel sends no RST
            self.transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            self.close()
            return
        self.deadline_kind = D_LINGER
        self.deadline = self.gw.now + LINGER_SECONDS

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.deadline_kind = D_NONE
            self.transport.close()

    # Sweeper --------------------------------------------------------------------------------
    def check_deadline(self, now: float) -> None:
        kind = self.deadline_kind
        if kind != D_NONE and now >= self.deadline and not self.closed:
            self._deadline_passed(kind, now)
        if self.exchange is not None:
            self.exchange.check_deadline(now)

    def _deadline_passed(self, kind: int, now: float) -> None:
        d = on_deadline(kind, self.active is not None, self._in_head, bool(self.flow.paused_by))
        act = d.act
        if act is Act.WAIT:
            return
        if act is Act.EXTEND:
            self.deadline = now + self.body_timeout  # reading a body we paused ourselves
        elif act is Act.DISARM:
            self.deadline_kind = D_NONE
        elif act is Act.REFUSE:
            self._client_error(d.status, d.message)
        elif kind == D_TUNNEL:
            self.tunnel.close()
        else:
            self.close()  # Act.CLOSE: idle or lingering
