"""The client side of the socket edge: one :class:`ClientConnection` per accepted client socket.

It parses requests with httptools and proxies them one at a time (pipelined requests queue
behind the active one) over an :class:`~selfieless.gateway.upstream.UpstreamConnection` to a
backend. When the backend side fails or a deadline passes, it asks
:mod:`~selfieless.gateway.exchange` what to do and carries out the answer.

Why callbacks and not streams: the request path is a handful of method calls per request with no
coroutine, task or future in it (measured ~5x faster than async/await streams). Coroutines are
used only off the hot path: opening a new replica connection and waiting for a ready replica.

Decisions (routing, backend choice, header rewriting, counting, what a failure or a deadline
means) live in the pure modules; this one moves bytes and keeps flow control:

* Flow control both ways: a full write buffer on one side pauses reading on the other, so a slow
  client or a 16 MiB upload never makes us hold a whole body.
* Passive health and retries: see :mod:`~selfieless.gateway.exchange` for the rules.
* A response head that arrives without body bytes is held until the next backend read (for a
  streaming response: until its first body bytes). A backend that dies in between has shown the
  client nothing, so the request can still be retried elsewhere instead of answered with a
  truncated response.
* Timeouts are checked by one periodic sweep (see ``Gateway._sweep``) against per-connection
  deadlines, so the hot path only stores a float instead of arming a timer per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import httptools

from .exchange import SAFE, Act, Deadline, Decision, Failure, Progress, on_deadline, on_failure
from .front import Answer, host_of
from .headers import CHUNK_END, FRAME_CHUNKED, BadRequest, build_request_head, websocket_upgrade, with_upgrade
from .pool import READY
from .request import Request
from .responses import CONTINUE_100, error_response, json_response
from .tunnel import Tunnel
from .upstream import UpstreamConnection, set_nodelay

log = logging.getLogger(__name__)

# Why client reading is paused (bit mask): reading resumes only when no reason is left.
P_UPSTREAM = 1  # the replica connection's write buffer is full
P_WAIT = 2  # body bytes arrived but no replica connection is attached yet
P_PIPELINE = 4  # a further request is queued behind the active one
P_DEAD = 8  # the connection is finishing (error answered or about to be)
P_UPGRADE = 16  # a WebSocket upgrade is sent: what follows is not HTTP, wait for the 101

# What the connection's single deadline currently means (exchange.Deadline, as plain ints: they
# are compared on the hot path, where an exact int is the cheapest thing to compare).
D_NONE, D_IDLE, D_HEADER, D_BODY, D_RESPONSE, D_LINGER, D_TUNNEL = (int(d) for d in Deadline)

# Closing a socket with unread input makes the kernel send RST, which can destroy the error
# response we just wrote before the client reads it. So after an error we half-close and read
# (and drop) what the client still sends for a little while, like nginx's lingering_close.
LINGER_SECONDS = 2.0


_MISS = object()


class _Abort(Exception):
    """Raised inside a parser callback to stop parsing after we have answered."""


class ClientConnection(asyncio.Protocol):
    """A client socket: parses requests, proxies them one at a time."""

    proto = b"http"  # the scheme replicas hear in X-Forwarded-Proto (tls.TlsClientConnection: https)

    def __init__(self, gw) -> None:
        self.gw = gw
        cfg = self.cfg = gw.config
        self.loop = gw.loop
        # Settings read on every request, copied here to save attribute hops.
        self.max_header_size = cfg.max_header_size
        self.max_body_size = cfg.max_body_size
        self.retry_body_limit = cfg.retry_body_limit
        self.up_idle_timeout = cfg.upstream_idle_timeout
        self.up_max_idle = cfg.upstream_max_idle
        self.header_timeout = cfg.header_timeout
        self.body_timeout = cfg.body_timeout
        self.keepalive_timeout = cfg.keepalive_timeout
        self.response_timeout = cfg.response_timeout
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = b"unknown"
        self._url = b""
        self._headers: list = []
        self._in_head = False
        self._head_bytes = 0
        self.cur: Request | None = None  # request whose head/body is being parsed
        self.active: Request | None = None  # request being proxied or answered
        self.queue: deque[Request] = deque()
        self.upstream: UpstreamConnection | None = None
        self.pause_bits = 0
        self.write_paused = False
        self.closed = False
        self.eof = False
        self.pending_error: tuple[int, str] | None = None
        self.deadline = 0.0
        self.deadline_kind = D_NONE
        # Response bytes relayed during one upstream read, written together when that read is
        # processed (see flush): head and body of a small response leave in one syscall.
        self.out: list = []
        # Whether any byte of the current response has been written to the client. Until then
        # a replica that dies can still be replaced (the held head is simply dropped).
        self.committed = False
        self.tunnel: Tunnel | None = None  # set once a WebSocket upgrade succeeded

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
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
        r = self.active
        if r is not None:
            self._abort_exchange(r)
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
        self.write_paused = True
        up = self.upstream
        if up is not None:
            up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self.upstream
        if up is not None:
            up.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.pause_bits & P_DEAD:
            return  # answered an error; the parser state is no longer trustworthy
        if self._in_head or self.cur is None:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if self.closed or self.pause_bits & P_DEAD or isinstance(exc.__context__, _Abort):
                return
            log.error("gateway: internal error handling a request", exc_info=exc.__context__ or exc)
            self._client_error(500, "internal gateway error")
            return
        except httptools.HttpParserUpgrade as exc:
            # Whatever follows on this socket is not HTTP we can parse. A WebSocket upgrade
            # waits for the replica's answer (101: tunnel; anything else: answer and close);
            # other upgrades went out as plain HTTP (Upgrade stripped): finish and close.
            r = self.queue[-1] if self.queue else self.active or self.cur
            if r is None:
                self._close()  # answered already (by the gateway itself): nothing more to say
                return
            r.close_after = True
            if r.upgrade and r.complete:
                r.early = data[exc.args[0]:]
                self._pause(P_UPGRADE)
            else:
                self._pause(P_DEAD)
            return
        except httptools.HttpParserError:
            self._client_error(400, "malformed HTTP request")
            return
        if self._in_head and self._head_bytes > self.max_header_size:
            self._client_error(431, "request header fields too large")

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
        parser = self.parser
        target = self._url
        if target[:1] != b"/":
            target = self._origin_form(target)
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
        gw = self.gw
        # By path alone unless routes name hosts or TLS is on (see front.decide).
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
            r.ka_header = r.keep_alive
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
        self.cur = r
        if self.active is None:
            self.active = r
            self._start(r)
        else:
            self.queue.append(r)
            self._pause(P_PIPELINE)

    def _origin_form(self, target: bytes) -> bytes:
        """``http://host/path?q`` -> ``/path?q``; anything else (``*``, garbage) is a 400."""
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            url = None
        if url is None or not url.path:
            self._client_error(400, "invalid request target")
            raise _Abort
        return url.path + (b"?" + url.query if url.query else b"")

    def on_body(self, body: bytes) -> None:
        r = self.cur
        r.received += len(body)
        if r.received > self.max_body_size:
            self._body_too_large(r)
            raise _Abort
        if r.chunked:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        replay = r.replay
        if replay is not None:
            r.replay_size += len(body)
            if r.replay_size > self.retry_body_limit:
                r.replay = None  # too big to keep: this request can no longer be replayed
            elif replay:
                replay.append(body)
            else:
                r.replay = [body]
        up = self.upstream
        if up is not None and r is self.active and r.sent:
            up.transport.write(body)
        else:
            if r.unsent:
                r.unsent.append(body)
            else:
                r.unsent = [body]
            if r.buffering and r.received > self.retry_body_limit:
                r.buffering = False  # a large chunked body: stream it from here on
                self._dispatch(r)  # may attach at once and send what is buffered
            if not r.buffering and not (r.sent and self.upstream is not None):
                self._pause(P_WAIT)
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
        if r.chunked:
            if r.replay is not None:
                r.replay = [*r.replay, CHUNK_END]
            up = self.upstream
            if up is not None and r is self.active and r.sent:
                up.transport.write(CHUNK_END)
            else:
                r.unsent = [*r.unsent, CHUNK_END]
            if r.buffering:
                r.buffering = False
                self.deadline_kind = D_NONE
                self._dispatch(r)
                return
        if r is self.active:
            if r.sent:
                self.deadline_kind = D_RESPONSE
                self.deadline = self.gw.now + self.response_timeout
            elif self.deadline_kind == D_BODY:
                self.deadline_kind = D_NONE

    # Exchange -------------------------------------------------------------------------------
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
                r.buffering = True
                return
        self._dispatch(r)

    def _dispatch(self, r: Request, exclude=None) -> None:
        """Pick a backend for ``r`` and get a connection to it (pooled, or a new one).

        (How many tries a request gets is the exchange's decision, made before a retry.)
        """
        r.tries += 1
        rep = r.pool.acquire(exclude)
        if rep is None:
            r.waiter = self.loop.create_task(self._await_replica(r))
            return
        r.backend = rep
        conn = rep.take_idle(self.gw.now, self.up_idle_timeout)
        if conn is not None:
            self._attach(r, conn, True)
        else:
            r.waiter = self.loop.create_task(self._connect(r, rep))

    async def _await_replica(self, r: Request) -> None:
        """No ready replica: hold the request until one is added, or answer 503."""
        loop = self.loop
        pool = r.pool
        if not self.gw.hold(pool.service):
            r.waiter = None
            self._gateway_error(r, 503, f"no ready replica for service {pool.service} (too many requests waiting)")
            return
        try:
            deadline = loop.time() + self.cfg.no_replica_wait
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(pool.wait_ready(), remaining)
                except asyncio.TimeoutError:
                    break
                if self.closed or r is not self.active:
                    return
                if pool.ready_count:
                    r.waiter = None
                    r.tries -= 1  # waiting is not an attempt
                    self._dispatch(r)
                    return
        finally:
            self.gw.unhold(pool.service)
        r.waiter = None
        if not self.closed and r is self.active:
            self._gateway_error(r, 503, f"no ready replica for service {pool.service}")

    async def _connect(self, r: Request, rep) -> None:
        loop = self.loop
        gw = self.gw
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(gw, rep), rep.host, rep.port),
                self.cfg.connect_timeout,
            )
        except asyncio.TimeoutError:
            self._connect_failed(r, rep, Failure.CONNECT_TIMEOUT, "")
            return
        except OSError as exc:
            kind = Failure.RESET if isinstance(exc, ConnectionResetError) else Failure.REFUSED
            self._connect_failed(r, rep, kind, exc.strerror or exc.__class__.__name__)
            return
        if conn.closed or conn.transport.is_closing():
            # Accepted, then reset before we could write (a backend dying with connections still
            # in its listen backlog): nothing was sent, so this is a refusal, not a lost exchange.
            self._connect_failed(r, rep, Failure.RESET, "reset right after connect")
            return
        r.waiter = None
        if self.closed or r is not self.active or r.backend is not rep:
            # The client left meanwhile: keep the fresh connection for the next request.
            if not rep.put_idle(conn, self.gw.now, self.cfg.upstream_max_idle):
                conn.close()
            return
        self._attach(r, conn, False)

    def _connect_failed(self, r: Request, rep, kind: Failure, detail: str) -> None:
        r.waiter = None
        if self.closed or r is not self.active or r.backend is not rep:
            return  # the client is gone; _abort_exchange released the backend
        facts = r.facts(others_ready=r.pool.ready_count > (1 if rep.state == READY else 0))
        self._carry_out(r, rep, on_failure(kind, facts, detail))

    def _carry_out(self, r: Request, rep, d: Decision) -> None:
        """Do what the exchange decided after ``r``'s attempt on backend ``rep`` failed."""
        act = d.act
        if act is Act.RETRY_SAME:
            # ``rep`` stays counted in flight: the request is still its.
            r.tries += 1
            r.waiter = self.loop.create_task(self._connect(r, rep))
            return
        r.backend = None
        pool = r.pool
        if rep is not None:
            pool.release(rep, False)
            if d.eject is not None:
                pool.eject(rep, d.eject)
        if act is Act.RETRY_OTHER:
            if d.moves:
                r.retried_other = True
            if d.retry_counted:
                r.stats.retries += 1
            self._dispatch(r, exclude=rep)
        elif act is Act.ANSWER:
            self._gateway_error(r, d.status, d.message)
        else:  # Act.CLOSE
            if d.error_counted and r.stats is not None:
                r.stats.gateway_errors += 1
            self._abort_exchange(r)
            self._close()

    def _attach(self, r: Request, conn: UpstreamConnection, reused: bool) -> None:
        """Send ``r`` on ``conn``: head, then the body received so far; the rest streams."""
        self.upstream = conn
        conn.client = self
        conn.reused = reused
        conn.got_bytes = conn.head_done = conn.until_close = conn.done = conn.body_seen = False
        self.committed = False
        conn.begin_head()
        data = r.replay if r.sent else r.unsent
        if r.unsent:
            r.unsent = ()
        r.sent = True
        t = conn.transport
        if data:
            t.write(r.head + b"".join(data))
        else:
            t.write(r.head)
        if self.pause_bits & P_WAIT:
            self._unpause(P_WAIT)
        if conn.write_paused:
            self._pause(P_UPSTREAM)
        if self.write_paused:
            conn.pause_reading()
        if r.complete:
            self.deadline_kind = D_RESPONSE
            self.deadline = self.gw.now + self.response_timeout
        if not r.accounted:
            # Counted once it reaches a replica, however many attempts it takes.
            r.accounted = True
            st = r.stats
            st.requests += 1
            if r.counted:
                st.api_requests += 1
                if st.first_request_at is None:
                    st.first_request_at = time.monotonic()

    # Called by UpstreamConnection -----------------------------------------------------------
    def upstream_full(self, full: bool) -> None:
        """The backend connection's write buffer filled up (True) or drained: stop/resume reading."""
        if full:
            self._pause(P_UPSTREAM)
        else:
            self._unpause(P_UPSTREAM)

    def response_head(self, conn, code: int) -> bool:
        """Relay the response head; returns whether the replica delimits the body by closing."""
        r = self.active
        no_body = r.is_head or code == 204 or code == 304
        keep = r.keep_alive and r.complete and not self.eof and self.pending_error is None \
            and not r.close_after and not self.gw.stopping
        head, framing, keep, until_close = conn.response_head(
            code, no_body, r.http11, keep, r.ka_header)
        r.framing = framing
        r.close_after = not keep
        r.status = code
        r.response_started = True
        if self.deadline_kind == D_RESPONSE:
            self.deadline = self.gw.now + self.response_timeout  # now: silence within the body
        self.out.append(head)
        return until_close

    def flush(self) -> None:
        """Write what the last upstream read produced (see ``out``)."""
        out = self.out
        if out:
            if not self.closed:
                # One bytes object and write(): uvloop sends it straight away, while writelines()
                # takes libuv's queued-write path (a request and a callback). ``out`` holds what
                # one replica read produced, so the copy is bounded by uvloop's read size.
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            self.committed = True

    def response_done(self, conn, reusable: bool) -> None:
        r = self.active
        self.upstream = None
        rep = r.backend
        r.backend = None
        if conn.read_paused:
            conn.resume_reading()  # an idle connection must notice the backend closing it
        # Park the connection for reuse, or close it; count the request served. Before the last
        # bytes go out, so whoever sees the response sees it counted.
        r.pool.finish(rep, conn, reusable and r.complete, self.gw.now, self.up_max_idle)
        st = r.stats
        st.latency.observe(self.loop.time() - r.started_at)
        code = r.status
        st.status_classes[code // 100 if 100 <= code < 600 else 5] += 1
        if code >= 500:
            # Passed through unchanged, but a hint worth a health probe now rather than at the
            # next interval: a replica answering 500 to everything fails many requests per second.
            self.gw.replica_error(r.pool.service, rep.id, code)
        out = self.out
        if r.framing == FRAME_CHUNKED:
            out.append(CHUNK_END)
        if out:
            self.flush()
        self._finish(r)

    def switch_protocols(self, conn, backend_bytes: bytes) -> None:
        """The backend agreed to a WebSocket upgrade: relay its 101 and splice the sockets."""
        r = self.active
        head = conn.response_head(101, True, True, True, False)[0]
        protocol = conn.upgrade_to or b"websocket"
        self.upstream = None
        self.active = None  # the HTTP exchange is over; the tunnel holds the backend now
        r.status = 101
        st = r.stats
        st.latency.observe(self.loop.time() - r.started_at)
        st.status_classes[1] += 1
        self.transport.write(with_upgrade(head, protocol) + backend_bytes)
        if r.early:
            conn.transport.write(r.early)
        self.pause_bits = 0  # reading is the tunnel's business from now on
        self.deadline_kind = D_TUNNEL
        self.deadline = self.gw.now + self.cfg.tunnel_idle_timeout

        def touch() -> None:
            self.deadline = self.gw.now + self.cfg.tunnel_idle_timeout

        def ended() -> None:
            self.closed = True
            self.deadline_kind = D_NONE
            self.gw.clients.discard(self)
            r.pool.release(r.backend, True)
            r.backend = None

        self.tunnel = Tunnel(self.transport, conn.transport, touch, ended,
                             client_full=self.write_paused, replica_full=conn.write_paused)

    def upstream_lost(self, conn, got_bytes: bool, bad: bool = False) -> None:
        """The backend connection failed mid-exchange: closed or reset, or (``bad``) it sent
        something that is not a valid response."""
        r = self.active
        self.upstream = None
        rep = r.backend
        progress = self._progress(r, got_bytes)
        if progress == Progress.HEAD_HELD:
            self._forget_held_head(r)
        facts = r.facts(reused=conn.reused, progress=progress)
        self._carry_out(r, rep, on_failure(Failure.BAD_RESPONSE if bad else Failure.CLOSED, facts))

    def _forget_held_head(self, r: Request) -> None:
        """The backend failed between its response head (held back, see
        UpstreamConnection.data_received) and its body: the client has seen nothing."""
        self.out.clear()
        r.response_started = False
        r.framing = 0

    def _progress(self, r: Request, got_bytes: bool) -> Progress:
        if r.response_started:
            return Progress.COMMITTED if self.committed else Progress.HEAD_HELD
        return Progress.PARTIAL if got_bytes else Progress.NOTHING

    # Endings --------------------------------------------------------------------------------
    def _finish(self, r: Request) -> None:
        """``r`` is answered: go on with the next request, or close."""
        self.active = None
        if self.pause_bits & (P_UPSTREAM | P_WAIT):
            self._unpause(P_UPSTREAM | P_WAIT)
        if self.pending_error is not None:
            status, msg = self.pending_error
            self.pending_error = None
            self.transport.write(error_response(status, msg, keep_alive=False))
            self._linger()
            return
        if r.close_after or self.closed or (self.eof and not self.queue):
            if r.complete or self.closed:
                self._close()
            else:
                self._pause(P_DEAD)
                self._linger()  # the client may still be sending the body we did not want
            return
        if self.queue:
            nxt = self.queue.popleft()
            if not self.queue:
                self._unpause(P_PIPELINE)
            self.active = nxt
            self._start(nxt)
            return
        if self.pause_bits & P_PIPELINE:
            self._unpause(P_PIPELINE)
        if self._in_head:
            self.deadline_kind = D_HEADER
            self.deadline = self.gw.now + self.header_timeout
        else:
            self.deadline_kind = D_IDLE
            self.deadline = self.gw.now + self.keepalive_timeout

    def _answer_local(self, r: Request) -> None:
        status, payload, headers = r.local
        if payload is None:
            payload = self.gw.status()
        keep = r.keep_alive and not self.eof
        r.close_after = not keep
        self.transport.write(json_response(status, payload, keep, r.is_head, headers))
        self._finish(r)

    def _gateway_error(self, r: Request, status: int, message: str) -> None:
        """Answer the active request ourselves (no response byte has been relayed yet)."""
        st = r.stats
        if st is not None:
            st.gateway_errors += 1
            st.status_classes[status // 100] += 1
        keep = r.keep_alive and r.complete and not self.eof
        r.close_after = r.close_after or not keep
        self.transport.write(error_response(status, message, not r.close_after, r.is_head))
        self._finish(r)

    def _client_error(self, status: int, message: str, payload=None, headers: bytes = b"") -> None:
        """The client sent something we refuse: answer ``status`` and close this connection."""
        if self.closed or self.pause_bits & P_DEAD:
            return
        self._pause(P_DEAD)
        r = self.active
        if r is not None and r is not self.cur and r.complete:
            # The error is about a later (pipelined) request: finish the active one first.
            self.pending_error = (status, message)
            return
        if r is not None:
            if r.response_started:
                self._abort_exchange(r)
                self._close()
                return
            self._abort_exchange(r)
            if r.stats is not None:
                r.stats.gateway_errors += 1
        body = payload if payload is not None else {"error": message}
        self.transport.write(json_response(status, body, False, False, headers))
        self._linger()

    def _body_too_large(self, r: Request) -> None:
        if r is self.active and not r.response_started:
            self._client_error(413, "request body too large")
        elif r is self.active:
            self._abort_exchange(r)
            self._close()
        else:
            self._client_error(413, "request body too large")

    def _drop_upstream(self, r: Request) -> None:
        """Drop the connect ``r`` is waiting for, if any, and abort the upstream connection."""
        if r.waiter is not None:
            r.waiter.cancel()
            r.waiter = None
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.client = None
            conn.abort()

    def _abort_exchange(self, r: Request) -> None:
        """Drop ``r``'s backend side: close its connection mid-exchange, release the backend."""
        self._drop_upstream(r)
        self.out.clear()  # a held response head must not leak into what we answer instead
        rep = r.backend
        if rep is not None:
            r.backend = None
            r.pool.release(rep, False)
        self.active = None

    def _linger(self) -> None:
        """Half-close after a final response, drop further input for a while, then close."""
        if self.closed:
            return
        self.pause_bits |= P_DEAD  # data_received drops everything from now on
        try:
            self.transport.resume_reading()
            self.transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            self._close()
            return
        self.deadline_kind = D_LINGER
        self.deadline = self.gw.now + LINGER_SECONDS

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.deadline_kind = D_NONE
            self.transport.close()

    def _pause(self, bit: int) -> None:
        if not self.pause_bits and not self.closed:
            self.transport.pause_reading()
        self.pause_bits |= bit

    def _unpause(self, bit: int) -> None:
        if self.pause_bits & bit:
            self.pause_bits &= ~bit
            if not self.pause_bits and not self.closed:
                self.transport.resume_reading()

    # Backends that fail or stall (called by the gateway, off the request path) ---------------
    def waiting_on(self):
        """The backend the active request waits on before the client has seen a byte of the
        response (maybe still connecting, or with part of a head or a held-back head), or None."""
        r = self.active
        if r is None or self.closed or self.committed:
            return None
        return r.backend

    def silent_read(self, now: float) -> float:
        """How long a read request sent whole has waited for its backend's next byte while the
        client has seen nothing of the response (0: it is not such a request). The response
        deadline is pushed back on every backend read, so its start is when the silence began."""
        if self.deadline_kind != D_RESPONSE:
            return 0.0
        r = self.active
        if r is None or self.upstream is None or self.committed or r.method not in SAFE:
            return 0.0
        return now - (self.deadline - self.response_timeout)

    def backend_out(self, rep, kind: Failure) -> None:
        """``rep`` was removed as failed (``REMOVED``) or withdrawn as stalled (``STALLED``):
        if the active request waits on it and the client has seen nothing yet, the exchange
        decides whether it moves, is answered 502 now, or keeps waiting."""
        if self.waiting_on() is not rep:
            return
        r = self.active
        conn = self.upstream
        progress = self._progress(r, conn is not None and conn.got_bytes)
        d = on_failure(kind, r.facts(progress=progress, others_ready=r.pool.ready_count > 0))
        if d.act is Act.WAIT:
            return
        if progress == Progress.HEAD_HELD:
            self._forget_held_head(r)
        self._drop_upstream(r)
        self._carry_out(r, rep, d)

    # Sweeper --------------------------------------------------------------------------------
    def check_deadline(self, now: float) -> None:
        kind = self.deadline_kind
        if kind == D_NONE or now < self.deadline or self.closed:
            return
        r = self.active
        conn = self.upstream
        if kind == D_RESPONSE:
            paused = conn is not None and conn.read_paused
            progress = Progress.NOTHING if r is None else self._progress(r, False)
        else:
            paused = bool(self.pause_bits)
            progress = Progress.NOTHING
        d = on_deadline(kind, r is not None, self._in_head, paused, progress)
        act = d.act
        if act is Act.WAIT:
            return
        if act is Act.EXTEND:
            self.deadline = now + (self.response_timeout if kind == D_RESPONSE else self.body_timeout)
        elif act is Act.DISARM:
            self.deadline_kind = D_NONE
        elif act is Act.REFUSE:
            self._client_error(d.status, d.message)
        elif kind == D_TUNNEL:
            self.tunnel.close()
        elif kind != D_RESPONSE:
            self._close()  # Act.CLOSE: idle or lingering
        else:
            # The backend fell silent: a CLOSE mid-body, or a clean 504. The connection is
            # dropped either way (aborted: it may still answer, to nobody).
            if act is Act.ANSWER:
                self.out.clear()  # only a held-back head: the client has seen nothing
                r.response_started = False
            if conn is not None:
                self.upstream = None
                conn.client = None
                conn.abort()
            self._carry_out(r, r.backend, d)

