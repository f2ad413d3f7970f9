"""The socket edge: client and replica connections as callback-style ``asyncio.Protocol``\\s.

One :class:`ClientConnection` per accepted client socket parses requests with httptools and
proxies them one at a time (pipelined requests queue behind the active one). One
:class:`UpstreamConnection` per replica socket parses responses; it is lent to a client
connection for one exchange and then parked in the replica's idle list for keep-alive reuse.

Why callbacks and not streams: the request path is a handful of method calls per request with no
coroutine, task or future in it (measured ~5x faster than async/await streams). Coroutines are
used only off the hot path: opening a new replica connection and waiting for a ready replica.

Decisions (routing, replica choice, header rewriting, counting) live in the pure modules;
this one moves bytes, keeps flow control and handles failures:

* Flow control both ways: a full write buffer on one side pauses reading on the other, so a slow
  client or a 16 MiB upload never makes us hold a whole body.
* Passive health: a replica that refuses a connection, or resets/closes a fresh one before any
  response byte, is ejected; idempotent requests whose body we still hold are retried once on
  another replica. A reused keep-alive connection that dies that way is taken as stale (the
  replica closed it while idle) and the request is retried on a fresh connection to the same
  replica.
* A response head that arrives without body bytes is held until the next replica read (for a
  streaming response: until its first body bytes). A replica that dies in between has shown the
  client nothing, so the request is still retried elsewhere instead of answered with a
  truncated response.
* Timeouts are checked by one periodic sweep (see ``Gateway._sweep``) against per-connection
  deadlines, so the hot path only stores a float instead of arming a timer per request.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import deque

import httptools

from .headers import (
    CHUNK_END,
    FRAME_CHUNKED,
    BadRequest,
    ResponseHeadReader,
    build_request_head,
    websocket_upgrade,
    with_upgrade,
)
from .pool import READY
from .responses import CONTINUE_100, error_response, json_response
from .tunnel import Tunnel

log = logging.getLogger(__name__)

# Why client reading is paused (bit mask): reading resumes only when no reason is left.
P_UPSTREAM = 1  # the replica connection's write buffer is full
P_WAIT = 2  # body bytes arrived but no replica connection is attached yet
P_PIPELINE = 4  # a further request is queued behind the active one
P_DEAD = 8  # the connection is finishing (error answered or about to be)
P_UPGRADE = 16  # a WebSocket upgrade is sent: what follows is not HTTP, wait for the 101

# What the connection's single deadline currently means.
D_NONE = 0
D_IDLE = 1  # keep-alive idle: close quietly
D_HEADER = 2  # reading a request head: 408
D_BODY = 3  # reading a request body: 408
D_RESPONSE = 4  # waiting for the replica: its response head (504), or more of its body (close)
D_LINGER = 5  # answered and half-closed, draining what the client still sends: close
D_TUNNEL = 6  # an upgraded connection, silent for too long: close

# Closing a socket with unread input makes the kernel send RST, which can destroy the error
# response we just wrote before the client reads it. So after an error we half-close and read
# (and drop) what the client still sends for a little while, like nginx's lingering_close.
LINGER_SECONDS = 2.0

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
MAX_TRIES = 8  # attempts per request, all causes together (refused connects are cheap)


_MISS = object()


class _Abort(Exception):
    """Raised inside a parser callback to stop parsing after we have answered."""


def _nodelay(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass


class Request:
    """One client request on its way through the gateway.

    Defaults live on the class and only what differs is stored per instance: creating one per
    request is then a handful of stores instead of thirty.
    """

    pool = None
    stats = None
    counted = False
    keep_alive = True
    http11 = True
    ka_header = False  # HTTP/1.0 client that asked for keep-alive: say so in the response
    received = 0
    complete = False
    unsent: tuple | list = ()  # body bytes (framed) not yet written to the current replica
    replay: tuple | list | None = ()  # all body bytes so far while small enough to resend
    replay_size = 0
    sent = False  # some byte of this request was written to a replica
    replica = None
    tries = 0
    retried_other = False
    accounted = False
    local = None  # (status, payload) when the gateway answers itself
    expect_continue = False
    response_started = False
    framing = 0
    close_after = False
    status = 0
    waiter = None  # task: connecting or waiting for a ready replica
    upgrade = False  # a WebSocket upgrade request: a 101 turns the exchange into a tunnel
    early = b""  # bytes the client sent after an upgrade request, before the replica agreed
    # A chunked body is read (up to retry_body_limit) before a replica is chosen: its size is
    # unknown until its last chunk, and one that turns out too large or malformed early must not
    # reach a replica, which would count it and then see the client vanish.
    buffering = False

    def __init__(self, method: bytes, target: bytes, path: bytes, head: bytes, chunked: bool,
                 entry, started_at: float) -> None:
        self.method = method
        self.target = target
        self.path = path
        if entry is not None:
            self.pool, self.stats, self.counted = entry
        self.head = head
        self.chunked = chunked
        self.started_at = started_at
        self.idempotent = method in IDEMPOTENT
        self.is_head = method == b"HEAD"


class ClientConnection(asyncio.Protocol):
    """A client socket: parses requests, proxies them one at a time."""

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
        _nodelay(transport)
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
                method, target, self._headers, self.client_ip)
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
        entry = gw.resolved.get(path, _MISS)
        if entry is _MISS:
            entry = gw.resolve(path)
        r = Request(method, target, path, head, chunked, entry, self.loop.time())
        if not parser.should_keep_alive():
            r.keep_alive = False
        if parser.get_http_version() != "1.1":
            r.http11 = False
            r.ka_header = r.keep_alive
        if expect:
            r.expect_continue = True
        if upgrade is not None:
            r.upgrade = True
        if entry is None or path == b"/":
            r.local = (200, None) if path == b"/" else (404, {"error": "no route for this path"})
            if chunked or content_length > 0:
                # Not worth reading a body nobody will use: answer and close.
                self._client_error(r.local[0], "no route for this path", payload=r.local[1])
                raise _Abort
        self.cur = r
        if self.active is None:
            self.active = r
            if entry is not None and not chunked and content_length <= 0 and not expect:
                # Fast path, the common case: a bodiless request and a pooled connection.
                self.deadline_kind = D_NONE
                r.tries = 1
                rep = entry[0].acquire(None)
                if rep is not None:
                    r.replica = rep
                    conn = rep.take_idle(gw.now, self.up_idle_timeout)
                    if conn is not None:
                        self._attach(r, conn, True)
                    else:
                        r.waiter = self.loop.create_task(self._connect(r, rep))
                    return
                r.tries = 0
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
        if not r.complete:
            if r.expect_continue:
                self.transport.write(CONTINUE_100)
            self.deadline_kind = D_BODY
            self.deadline = self.gw.now + self.body_timeout
            if r.chunked and r.received <= self.retry_body_limit:
                r.buffering = True
                return
        self._dispatch(r)

    def _dispatch(self, r: Request, exclude=None) -> None:
        """Pick a replica for ``r`` and get a connection to it (pooled, or a new one)."""
        r.tries += 1
        if r.tries > MAX_TRIES:
            self._gateway_error(r, 502, "replicas failed")
            return
        rep = r.pool.acquire(exclude)
        if rep is None:
            r.waiter = self.loop.create_task(self._await_replica(r))
            return
        r.replica = rep
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
            self._connect_failed(r, rep, None)
            return
        except OSError as exc:
            self._connect_failed(r, rep, exc)
            return
        if conn.closed or conn.transport.is_closing():
            # Accepted, then reset before we could write (a replica dying with connections still
            # in its listen backlog): nothing was sent, so this is a refusal, not a lost exchange.
            self._connect_failed(r, rep, ConnectionResetError(errno.ECONNRESET, "reset right after connect"))
            return
        r.waiter = None
        if self.closed or r is not self.active or r.replica is not rep:
            # The client left meanwhile: keep the fresh connection for the next request.
            if not rep.put_idle(conn, self.gw.now, self.cfg.upstream_max_idle):
                conn.close()
            return
        self._attach(r, conn, False)

    def _connect_failed(self, r: Request, rep, exc: OSError | None) -> None:
        r.waiter = None
        if self.closed or r is not self.active or r.replica is not rep:
            return  # the client is gone; _abort_exchange released the replica
        r.replica = None
        r.pool.release(rep, False)
        if r.sent and not self._replayable(r):
            self._gateway_error(r, 502, "replica connection failed")
            return
        if exc is None:
            # Slow to accept is not proof of death: no ejection, but try someone else.
            if r.pool.ready_count > (1 if rep.state == "ready" else 0):
                r.stats.retries += 1
                self._dispatch(r, exclude=rep)
            else:
                self._gateway_error(r, 504, "replica connect timeout")
            return
        what = "connection reset" if isinstance(exc, ConnectionResetError) else "connection refused"
        reason = f"{what} ({exc.strerror or exc.__class__.__name__})"
        r.pool.eject(rep, reason)
        r.stats.retries += 1
        self._dispatch(r)  # nothing of this attempt was sent: any method may go elsewhere

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

    @staticmethod
    def _replayable(r: Request) -> bool:
        return not r.sent or (r.idempotent and r.replay is not None)

    # Called by UpstreamConnection -----------------------------------------------------------
    def _response_head(self, conn, code: int) -> bool:
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

    def _response_done(self, conn, reusable: bool) -> None:
        r = self.active
        self.upstream = None
        rep = r.replica
        r.replica = None
        if conn.read_paused:
            conn.resume_reading()  # an idle connection must notice the replica closing it
        # Park the connection for reuse (Replica.put_idle, inlined: this runs per request).
        idle = rep.idle
        if reusable and r.complete and rep.state == READY and not conn.closed \
                and len(idle) < self.up_max_idle:
            conn.idle_since = self.gw.now
            idle.append(conn)
        else:
            conn.close()
        # Count before the last bytes go out, so whoever sees the response sees it counted.
        # (ReplicaPool.release, inlined.)
        rep.in_flight -= 1
        rep.served += 1
        if rep.in_flight == 0 and rep._drain_waiters:
            r.pool.release_drained(rep)
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

    def _switch_protocols(self, conn, replica_bytes: bytes) -> None:
        """The replica agreed to a WebSocket upgrade: relay its 101 and splice the sockets."""
        r = self.active
        head = conn.response_head(101, True, True, True, False)[0]
        protocol = conn.upgrade_to or b"websocket"
        self.upstream = None
        self.active = None  # the HTTP exchange is over; the tunnel holds the replica now
        r.status = 101
        st = r.stats
        st.latency.observe(self.loop.time() - r.started_at)
        st.status_classes[1] += 1
        self.transport.write(with_upgrade(head, protocol) + replica_bytes)
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
            r.pool.release(r.replica, True)
            r.replica = None

        self.tunnel = Tunnel(self.transport, conn.transport, touch, ended,
                             client_full=self.write_paused, replica_full=conn.write_paused)

    def _upstream_lost(self, conn, got_bytes: bool) -> None:
        """The replica connection failed (closed, reset or bad response) mid-exchange."""
        r = self.active
        self.upstream = None
        rep = r.replica
        r.replica = None
        if r.response_started:
            if self.committed:
                # Mid-body: nothing honest to add; closing tells the client the body is short.
                r.pool.release(rep, False)
                self._close()
                return
            # The replica died between its response head (held back, see
            # UpstreamConnection.data_received) and its body: the client has seen nothing, so
            # this is a failure before the response, handled as such below.
            self.out.clear()
            r.response_started = False
            r.framing = 0
            r.pool.release(rep, False)
            r.pool.eject(rep, "connection closed in the middle of a response")
            if self._replayable(r) and not r.retried_other:
                r.retried_other = True
                r.stats.retries += 1
                self._dispatch(r)
                return
            self._gateway_error(r, 502, "replica closed the connection while responding")
            return
        r.pool.release(rep, False)
        if got_bytes:
            self._gateway_error(r, 502, "invalid response from replica")
            return
        if conn.reused:
            # Most likely a keep-alive connection the replica closed as we reused it.
            if self._replayable(r):
                r.tries += 1
                if r.tries <= MAX_TRIES:
                    rep.in_flight += 1
                    r.replica = rep
                    r.waiter = self.loop.create_task(self._connect(r, rep))
                    return
            self._gateway_error(r, 502, "replica closed the connection")
            return
        r.pool.eject(rep, "connection closed before any response byte")
        if self._replayable(r) and not r.retried_other:
            r.retried_other = True
            r.stats.retries += 1
            self._dispatch(r)
            return
        self._gateway_error(r, 502, "replica closed the connection before responding")

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
        status, payload = r.local
        if payload is None:
            payload = self.gw.status()
        keep = r.keep_alive and not self.eof
        r.close_after = not keep
        self.transport.write(json_response(status, payload, keep, head_only=r.is_head))
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

    def _client_error(self, status: int, message: str, payload=None) -> None:
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
        self.transport.write(json_response(status, body, keep_alive=False))
        self._linger()

    def _body_too_large(self, r: Request) -> None:
        if r is self.active and not r.response_started:
            self._client_error(413, "request body too large")
        elif r is self.active:
            self._abort_exchange(r)
            self._close()
        else:
            self._client_error(413, "request body too large")

    def _abort_exchange(self, r: Request) -> None:
        """Drop ``r``'s replica side: close its connection mid-exchange, release the replica."""
        if r.waiter is not None:
            r.waiter.cancel()
            r.waiter = None
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.client = None
            conn.abort()
        self.out.clear()  # a held response head must not leak into what we answer instead
        rep = r.replica
        if rep is not None:
            r.replica = None
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

    # Sweeper --------------------------------------------------------------------------------
    def check_deadline(self, now: float) -> None:
        kind = self.deadline_kind
        if kind == D_NONE or now < self.deadline or self.closed:
            return
        if kind == D_IDLE:
            if self.active is None and not self._in_head:
                self._close()
        elif kind == D_LINGER:
            self._close()
        elif kind == D_TUNNEL:
            self.tunnel.close()
        elif kind == D_HEADER:
            self._client_error(408, "request header timeout")
        elif kind == D_BODY:
            if self.pause_bits:
                self.deadline = now + self.body_timeout  # we are the ones not reading
            else:
                self._client_error(408, "request body timeout")
        elif kind == D_RESPONSE:
            r = self.active
            if r is None:
                self.deadline_kind = D_NONE
                return
            conn = self.upstream
            if conn is not None and conn.read_paused:
                self.deadline = now + self.response_timeout  # we are the ones not reading
                return
            if r.response_started:
                if self.committed:
                    # Stalled in the middle of the body: nothing honest to add, and closing
                    # tells the client its response is short.
                    if r.stats is not None:
                        r.stats.gateway_errors += 1
                    self._abort_exchange(r)
                    self._close()
                    return
                # Only a held-back head: the client has seen nothing, so it gets a clean 504.
                self.out.clear()
                r.response_started = False
            if conn is not None:
                self.upstream = None
                conn.client = None
                conn.abort()
            rep = r.replica
            if rep is not None:
                r.replica = None
                r.pool.release(rep, False)
            self._gateway_error(r, 504, "replica response timeout")


class UpstreamConnection(ResponseHeadReader, asyncio.Protocol):
    """A connection to one replica; lent to one client connection per exchange.

    Its response parser calls :class:`ResponseHeadReader`'s ``on_status``/``on_header``, which
    rewrite the head as it arrives.
    """

    def __init__(self, gw, replica) -> None:
        self.gw = gw
        self.replica = replica
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: ClientConnection | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.got_bytes = False
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
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes on an idle connection: not a response to anything of ours. Unusable.
            self.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.switching and self.client is client:
                self.client = None
                client._switch_protocols(self, data[exc.args[0]:])
            else:
                self._bad_response(client)  # a 101 nobody asked for
            return
        except httptools.HttpParserError:
            self._bad_response(client)
            return
        if self.done and self.client is client:
            self.client = None
            client._response_done(self, self.keep)  # flushes, ending included
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
                client._response_done(self, False)
            else:
                client._upstream_lost(self, True)

    def eof_received(self):
        return False  # close our side too; connection_lost does the rest

    def connection_lost(self, exc) -> None:
        self.closed = True
        client = self.client
        if client is None:
            return  # idle (the pool skips closed connections) or already detached
        self.client = None
        if self.head_done and (self.done or (self.until_close and exc is None)):
            client._response_done(self, False)
        else:
            client._upstream_lost(self, self.got_bytes)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.client is not None:
            self.client._pause(P_UPSTREAM)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.client is not None:
            self.client._unpause(P_UPSTREAM)

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
        self.until_close = client._response_head(self, code)
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
