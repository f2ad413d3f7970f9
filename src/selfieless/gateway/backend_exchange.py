"""The backend half of a request–response cycle: one :class:`BackendExchange` per client connection.

The client connection (``client.py``) reads requests and, when one becomes active, hands it
here (``start``). From then on this object alone owns the request's way to a backend and back:

* it picks a backend (``pool``), waits for one to be ready, takes a pooled connection or opens
  one, sends the head and the body read so far, and streams the rest of the body;
* it relays the response from the :class:`~selfieless.gateway.upstream.UpstreamConnection`
  to the client's socket, holding a head back until the next backend read (see below);
* when the backend side fails, a backend is taken out under it, or its response deadline
  passes, it asks :mod:`~selfieless.gateway.exchange` what to do and carries the answer out:
  retry (the same backend, or another, replaying a held body), answer an error, or close;
* a ``101 Switching Protocols`` hands both sockets to a :class:`~selfieless.gateway.tunnel.Tunnel`.

It tells the client connection four things only: the request is answered (``answered``),
answer it with this error (``answer_error``), the exchange gave up mid-response (``cut``),
and the request became a tunnel (``tunnel_to``). The upstream connection reports to it and
never touches the client connection. (uvicorn splits its HTTP protocol the same way: a
connection protocol, and a request–response cycle it creates per request.)

A response head that arrives without body bytes is held until the next backend read (for a
streaming response: until its first body bytes). A backend that dies in between has shown the
client nothing, so the request can still be retried elsewhere instead of answered with a
truncated response.

The response deadline is stored here as a float that every backend read pushes back; the
gateway's sweep checks it (``check_deadline``), so the hot path arms no timer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .exchange import SAFE, Act, Deadline, Decision, Failure, Progress, on_deadline, on_failure
from .flow import NO_PEER, FlowControl, couple, uncouple
from .headers import CHUNK_END, FRAME_CHUNKED, FRAME_NONE, with_upgrade
from .keepalive import connection_header, keep_open
from .request import Request
from .connect import open_connection, wait_for_backend
from .upstream import UpstreamConnection

if TYPE_CHECKING:
    from .client import ClientConnection

UNARMED = float("inf")  # no response deadline


class BackendExchange:
    """The exchange of one client connection's active request with its backends."""

    __slots__ = ("client", "gw", "loop", "transport", "client_flow", "r", "upstream", "out",
                 "committed", "chunk_out", "deadline", "relayed_headers", "retry_body_limit", "up_idle_timeout",
                 "up_max_idle", "response_timeout", "connect_timeout", "no_backend_wait")

    def __init__(self, client: ClientConnection, transport, client_flow: FlowControl) -> None:
        self.client = client
        gw = self.gw = client.gw
        self.loop = gw.loop
        self.transport = transport  # the client's: the response goes there
        self.client_flow = client_flow
        self.r: Request | None = None  # the request being exchanged (the client's active one)
        self.upstream: UpstreamConnection | None = None
        # Response bytes relayed during one upstream read, written together when that read is
        # processed (see flush): head and body of a small response leave in one syscall.
        self.out: list = []
        # Whether any byte of the current response has been written to the client. Until then
        # a backend that dies can still be replaced (the held head is simply dropped).
        self.committed = False
        self.chunk_out = False  # the response body is chunked by us
        self.deadline = UNARMED
        self.relayed_headers = client.relayed_headers  # added to every relayed response head
        cfg = gw.config  # settings read on every request, copied here to save attribute hops
        self.retry_body_limit = cfg.retry_body_limit
        self.up_idle_timeout = cfg.upstream_idle_timeout
        self.up_max_idle = cfg.upstream_max_idle
        self.response_timeout = cfg.response_timeout
        self.connect_timeout = cfg.connect_timeout
        self.no_backend_wait = cfg.no_replica_wait

    # From the client connection -------------------------------------------------------------
    def begin(self, r: Request) -> None:
        self.r = r  # the client's active request now (its body is buffered before it is sent)

    def start(self, r: Request) -> None:
        """``r`` is the client's active request now: send it to a backend."""
        self.r = r
        self.dispatch(r)

    def body_part(self, r: Request, body: bytes) -> None:
        """Body bytes of ``r`` (framed for the backend) were read: keep them for a replay while
        small enough, and send them on, or hold them until a backend connection is attached."""
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
        if up is not None and r is self.r and r.sent:
            up.transport.write(body)
            return
        if r.unsent:
            r.unsent.append(body)
        else:
            r.unsent = [body]
        if r.buffering and r.received > self.retry_body_limit:
            r.buffering = False  # a large chunked body: stream it from here on
            self.dispatch(r)  # may attach at once and send what is buffered
        if not r.buffering and not (r.sent and self.upstream is not None):
            self.client_flow.pause(NO_PEER)

    def request_complete(self, r: Request) -> None:
        """The whole of ``r`` has been read from the client."""
        if r.chunked:
            if r.replay is not None:
                r.replay = [*r.replay, CHUNK_END]
            up = self.upstream
            if up is not None and r is self.r and r.sent:
                up.transport.write(CHUNK_END)
            else:
                r.unsent = [*r.unsent, CHUNK_END]
            if r.buffering:
                r.buffering = False
                self.dispatch(r)
                return
        if r is self.r and r.sent:
            self.deadline = self.gw.now + self.response_timeout

    def abort(self) -> None:
        """Drop the backend side mid-exchange (a held head must not leak into what follows)."""
        r = self.r
        if r is None:
            return
        self._drop_upstream(r)
        self.out.clear()
        rep = r.backend
        if rep is not None:
            r.backend = None
            r.pool.release(rep, False)
        self._end()

    # Choosing a backend and getting a connection --------------------------------------------
    def dispatch(self, r: Request, exclude=None) -> None:
        """Pick a backend for ``r`` and get a connection to it (pooled, or a new one)."""
        r.tries += 1
        rep = r.pool.acquire(exclude)
        if rep is None:
            r.waiter = self.loop.create_task(wait_for_backend(self, r))
            return
        r.backend = rep
        conn = rep.take_idle(self.gw.now, self.up_idle_timeout)
        if conn is not None:
            self.attach(r, conn, True)
        else:
            r.waiter = self.loop.create_task(open_connection(self, r, rep))

    def wants(self, r: Request) -> bool:
        """``r`` is still this exchange's request, and its client is still there."""
        return r is self.r and not self.client.closed

    def connect_failed(self, r: Request, rep, kind: Failure, detail: str) -> None:
        """Connecting to ``rep`` for ``r`` failed (``kind``, ``detail``: the OS error's text)."""
        r.waiter = None
        if not self.wants(r) or r.backend is not rep:
            return  # the client is gone; abort() released the backend
        facts = r.facts(others_ready=r.pool.ready_count > (1 if rep.in_rotation else 0))
        self._carry_out(r, rep, on_failure(kind, facts, detail))

    def attach(self, r: Request, conn: UpstreamConnection, reused: bool) -> None:
        """Send ``r`` on ``conn``: head, then the body received so far; the rest streams."""
        self.upstream = conn
        conn.lend(self, reused, r.upgrade, r.is_head)
        self.committed = False
        data = r.replay if r.sent else r.unsent
        if r.unsent:
            r.unsent = ()
        r.sent = True
        t = conn.transport
        if data:
            t.write(r.head + b"".join(data))
        else:
            t.write(r.head)
        flow = self.client_flow
        if flow.paused_by:
            flow.resume(NO_PEER)
        couple(flow, conn.flow)
        if r.complete:
            self.deadline = self.gw.now + self.response_timeout
        if not r.accounted:
            r.accounted = True  # counted once it reaches a backend, however many attempts it takes
            r.stats.forwarded(r.counted)

    # Carrying out a decision ----------------------------------------------------------------
    def _carry_out(self, r: Request, rep, d: Decision) -> None:
        """Do what the exchange decided after ``r``'s attempt on backend ``rep`` failed."""
        act = d.act
        if act is Act.RETRY_SAME:
            # ``rep`` stays counted in flight: the request is still its.
            r.tries += 1
            r.waiter = self.loop.create_task(open_connection(self, r, rep))
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
                r.stats.retried()
            self.dispatch(r, exclude=rep)
        elif act is Act.ANSWER:
            self.answer(r, d.status, d.message)
        else:  # Act.CLOSE
            if d.error_counted and r.stats is not None:
                r.stats.gateway_error()
            self.abort()
            self.client.cut()

    def answer(self, r: Request, status: int, message: str) -> None:
        """The gateway answers ``r`` itself (no response byte has been relayed)."""
        self._end()
        self.client.answer_error(r, status, message)

    def _end(self) -> None:
        self.r = None
        self.deadline = UNARMED

    def _detach(self) -> UpstreamConnection | None:
        """The upstream connection no longer serves this exchange (it is returned)."""
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            uncouple(self.client_flow, conn.flow)
        return conn

    def _drop_upstream(self, r: Request) -> None:
        """Drop the connect ``r`` is waiting for, if any, and abort the upstream connection."""
        if r.waiter is not None:
            r.waiter.cancel()
            r.waiter = None
        conn = self._detach()
        if conn is not None:
            conn.abort()

    # From the upstream connection -----------------------------------------------------------
    def head(self, conn: UpstreamConnection, code: int) -> bool:
        """Relay (hold) the response head; returns whether the backend delimits the body by closing."""
        r = self.r
        http11 = r.http11
        frame, until_close = conn.body_framing(r.is_head or code == 204 or code == 304, http11)
        keep = keep_open(r.keep_alive, r.complete, self.client.eof, r.close_after or self.gw.stopping, frame)
        self.out.append(conn.render_head(code, frame, connection_header(keep, http11) + self.relayed_headers))
        r.framing = frame
        self.chunk_out = frame == FRAME_CHUNKED
        r.close_after = not keep
        r.status = code
        r.response_started = True
        if self.deadline != UNARMED:
            self.deadline = self.gw.now + self.response_timeout  # now: silence within the body
        return until_close

    def body(self, data: bytes) -> None:
        if self.chunk_out:
            self.out.append(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.out.append(data)

    def read_done(self, body_seen: bool) -> None:
        """One backend read is processed: the backend is not silent; write what it brought,
        unless that was only the response head (held back until body bytes come: if the
        backend dies in between, the client has seen nothing and the request can go elsewhere)."""
        if self.deadline != UNARMED:
            self.deadline = self.gw.now + self.response_timeout
        if body_seen or self.committed:
            self.flush()

    def flush(self) -> None:
        """Write what the last upstream read produced (see ``out``)."""
        out = self.out
        if out:
            if not self.client.closed:
                # One bytes object and write(): uvloop sends it straight away, while writelines()
                # takes libuv's queued-write path (a request and a callback). ``out`` holds what
                # one backend read produced, so the copy is bounded by uvloop's read size.
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            self.committed = True

    def done(self, conn: UpstreamConnection, reusable: bool) -> None:
        """The response is complete: park or close ``conn``, count, write the rest, hand back."""
        r = self.r
        self.upstream = None
        uncouple(self.client_flow, conn.flow)  # an idle connection must read: to see the backend close
        rep = r.backend
        r.backend = None
        # Park the connection for reuse, or close it; count the request served. Before the last
        # bytes go out, so whoever sees the response sees it counted.
        r.pool.finish(rep, conn, reusable and r.complete, self.gw.now, self.up_max_idle)
        code = r.status
        r.stats.answered(code, self.loop.time() - r.started_at)
        if code >= 500:
            # Passed through unchanged, but a hint worth a health probe now rather than at the
            # next interval: a backend answering 500 to everything fails many requests per second.
            self.gw.backend_error(r.pool.service, rep.id, code)
        out = self.out
        if self.chunk_out:
            out.append(CHUNK_END)
        if out:
            self.flush()
        self.r = None  # (_end, inline: this runs once per request)
        self.deadline = UNARMED
        self.client.answered(r)

    def bad_response(self, conn: UpstreamConnection, body_seen: bool, done: bool) -> None:
        """The backend sent something that is not a valid response (to this request)."""
        if body_seen or self.committed:
            self.flush()  # relay the good part; the close tells the client it is short
        conn.abort()
        if done:
            self.done(conn, False)
        else:
            self.lost(conn, True, bad=True)

    def lost(self, conn: UpstreamConnection, got_bytes: bool, bad: bool = False) -> None:
        """The backend connection was closed or reset mid-exchange, or (``bad``) sent garbage."""
        r = self.r
        self._detach()
        progress = self._progress(r, got_bytes)
        if progress == Progress.HEAD_HELD:
            self._forget_held_head(r)
        facts = r.facts(reused=conn.reused, progress=progress)
        self._carry_out(r, r.backend, on_failure(Failure.BAD_RESPONSE if bad else Failure.CLOSED, facts))

    def switched(self, conn: UpstreamConnection, backend_bytes: bytes) -> None:
        """The backend agreed to a WebSocket upgrade: relay its 101 and splice the sockets."""
        r = self.r
        conn.body_framing(True, True)
        head = with_upgrade(conn.render_head(101, FRAME_NONE, b""), conn.upgrade_to or b"websocket")
        self._detach()
        self._end()  # the HTTP exchange is over; the tunnel holds the backend now
        r.status = 101
        r.stats.answered(101, self.loop.time() - r.started_at)
        self.transport.write(head + backend_bytes)
        if r.early:
            conn.transport.write(r.early)

        def release() -> None:
            r.pool.release(r.backend, True)
            r.backend = None

        self.client.tunnel_to(conn, release)

    def _forget_held_head(self, r: Request) -> None:
        """The response head held back (read_done) is dropped: the client has seen nothing."""
        self.out.clear()
        r.response_started = False
        r.framing = 0
        self.chunk_out = False

    def _progress(self, r: Request, got_bytes: bool) -> Progress:
        if r.response_started:
            return Progress.COMMITTED if self.committed else Progress.HEAD_HELD
        return Progress.PARTIAL if got_bytes else Progress.NOTHING

    # Backends that fail or stall, deadlines (called by the gateway, off the request path) ----
    def waiting_on(self):
        """The backend the request waits on before the client has seen a byte of the response
        (maybe still connecting, or with part of a head or a held-back head), or None."""
        r = self.r
        if r is None or self.client.closed or self.committed:
            return None
        return r.backend

    def silent_read(self, now: float) -> float:
        """How long a read request sent whole has waited for its backend's next byte while the
        client has seen nothing of the response (0: it is not such a request). The response
        deadline is pushed back on every backend read, so its start is when the silence began."""
        if self.deadline == UNARMED:
            return 0.0
        r = self.r
        if r is None or self.upstream is None or self.committed or r.method not in SAFE:
            return 0.0
        return now - (self.deadline - self.response_timeout)

    def observe(self, now: float, silent: dict) -> None:
        """What the gateway's sweep learns here: the backend was heard from since the last
        sweep, or a read waits on it in silence (``silent``: backend -> longest such wait)."""
        up = self.upstream
        if up is not None and up.heard_since():
            up.backend.heard_at = now
            return
        waited = self.silent_read(now)
        if waited > 0:
            rep = self.r.backend
            if waited > silent.get(rep, 0.0):
                silent[rep] = waited

    def backend_out(self, rep, kind: Failure) -> None:
        """``rep`` was removed as failed (``REMOVED``) or withdrawn as stalled (``STALLED``):
        if the request waits on it and the client has seen nothing yet, the exchange decides
        whether it moves, is answered 502 now, or keeps waiting."""
        if self.waiting_on() is not rep:
            return
        r = self.r
        conn = self.upstream
        progress = self._progress(r, conn is not None and conn.got_bytes)
        d = on_failure(kind, r.facts(progress=progress, others_ready=r.pool.ready_count > 0))
        if d.act is Act.WAIT:
            return
        if progress == Progress.HEAD_HELD:
            self._forget_held_head(r)
        self._drop_upstream(r)
        self._carry_out(r, rep, d)

    def check_deadline(self, now: float) -> None:
        """The response deadline: the backend silent for ``response_timeout``."""
        if now < self.deadline or self.client.closed:
            return
        r = self.r
        conn = self.upstream
        paused = conn is not None and bool(conn.flow.paused_by)
        progress = Progress.NOTHING if r is None else self._progress(r, False)
        d = on_deadline(Deadline.RESPONSE, r is not None, False, paused, progress)
        act = d.act
        if act is Act.WAIT:
            return
        if act is Act.EXTEND:
            self.deadline = now + self.response_timeout
            return
        if act is Act.DISARM:
            self.deadline = UNARMED
            return
        # The backend fell silent: a CLOSE mid-body, or a clean 504. The connection is dropped
        # either way (aborted: it may still answer, to nobody).
        if act is Act.ANSWER:
            self._forget_held_head(r)  # only a held-back head: the client has seen nothing
        conn = self._detach()
        if conn is not None:
            conn.abort()
        self._carry_out(r, r.backend, d)
