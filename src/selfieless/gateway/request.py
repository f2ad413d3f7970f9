"""One client request on its way through the gateway: what was asked, and where its exchange stands.

A plain record, written by the client connection and its backend exchange, and read by the
exchange's decisions (through ``exchange.Facts``); it holds no sockets and decides nothing.
"""

from __future__ import annotations

from .exchange import IDEMPOTENT, SAFE, Facts, Progress


class Request:
    """One client request on its way through the gateway, and where its exchange stands.

    Slots, every field set in ``__init__``: the hot path reads most of them once per request,
    and a slot read is far cheaper than falling back to a class-level default.
    """

    __slots__ = (
        "method", "target", "path", "head", "chunked", "started_at", "idempotent", "is_head",
        "pool", "stats", "counted", "local",
        "keep_alive", "http11", "expect_continue", "upgrade",
        "reads_body", "received", "complete", "unsent", "replay", "replay_size", "buffering", "early",
        "backend", "waiter", "tries", "sent", "retried_other", "accounted",
        "response_started", "framing", "status", "close_after",
    )

    def __init__(self, method: bytes, target: bytes, path: bytes, head: bytes, chunked: bool,
                 entry, started_at: float) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.head = head  # rewritten for the backend
        self.chunked = chunked
        self.started_at = started_at
        self.idempotent = method in IDEMPOTENT  # may be sent twice
        self.is_head = method == b"HEAD"

        # Where it goes (from the route table: pool, stats, whether it counts as an API call).
        if entry is not None:
            self.pool, self.stats, self.counted = entry
        else:
            self.pool = self.stats = None
            self.counted = False
        self.local = None  # (status, payload) when the gateway answers itself (no route, or "/")

        # What the client asked for (set from the head by the client connection).
        self.keep_alive = True  # by its HTTP version and Connection header (keepalive.py)
        self.http11 = True
        self.expect_continue = False
        self.upgrade = False  # a WebSocket upgrade request: a 101 turns the exchange into a tunnel

        # The request body, as read from the client.
        self.reads_body = False  # a body (or an Expect: 100-continue) comes after the head
        self.received = 0
        self.complete = False  # the whole request (head and body) has been read
        self.unsent: tuple | list = ()  # body bytes (framed) not yet written to the current backend
        self.replay: tuple | list | None = ()  # all body bytes so far while small enough to resend
        self.replay_size = 0
        # A chunked body is read (up to retry_body_limit) before a backend is chosen: its size is
        # unknown until its last chunk, and one that turns out too large or malformed early must
        # not reach a backend, which would count it and then see the client vanish.
        self.buffering = False
        self.early = b""  # bytes the client sent after an upgrade request, before the backend agreed

        # The exchange with a backend (the facts exchange.on_failure decides on).
        self.backend = None  # pool.Backend this attempt holds (counted in its in_flight)
        self.waiter = None  # task: connecting, or waiting for a ready backend
        self.tries = 0  # attempts so far, all causes together
        self.sent = False  # some byte of this request was written to a backend
        self.retried_other = False  # moved to another backend once after a send
        self.accounted = False  # counted in the service's requests (once, however many attempts)

        # The response.
        self.response_started = False  # a backend's response head was read (maybe held back)
        self.framing = 0
        self.status = 0
        self.close_after = False  # close the client connection after this response

    def facts(self, reused: bool = False, progress: Progress = Progress.NOTHING,
              others_ready: bool = True) -> Facts:
        """This request as the exchange's decisions see it, with what the connection adds."""
        return Facts(idempotent=self.idempotent, safe=self.method in SAFE, sent=self.sent, body_held=self.replay is not None,
                     tries=self.tries, retried_other=self.retried_other, reused=reused,
                     progress=progress, others_ready=others_ready)
