"""One client request on its way through the gateway: what was asked, and where its exchange stands.

A plain record, written by the client connection and read by the exchange's decisions (through
``exchange.Facts``); it holds no sockets and decides nothing.
"""

from __future__ import annotations

from .exchange import IDEMPOTENT


class Request:
    """One client request on its way through the gateway, and where its exchange stands.

    Defaults live on the class and only what differs is stored per instance: creating one per
    request is then a handful of stores instead of thirty. The fields, by what they describe:
    """

    # Where it goes (from the route table: pool, stats, and whether it counts as an API call).
    pool = None
    stats = None
    counted = False
    local = None  # (status, payload) when the gateway answers itself (no route, or "/")

    # What the client asked for (set from the head).
    keep_alive = True
    http11 = True
    ka_header = False  # HTTP/1.0 client that asked for keep-alive: say so in the response
    expect_continue = False
    upgrade = False  # a WebSocket upgrade request: a 101 turns the exchange into a tunnel

    # The request body, as read from the client.
    reads_body = False  # a body (or an Expect: 100-continue) comes after the head
    received = 0
    complete = False  # the whole request (head and body) has been read
    unsent: tuple | list = ()  # body bytes (framed) not yet written to the current backend
    replay: tuple | list | None = ()  # all body bytes so far while small enough to resend
    replay_size = 0
    # A chunked body is read (up to retry_body_limit) before a backend is chosen: its size is
    # unknown until its last chunk, and one that turns out too large or malformed early must not
    # reach a backend, which would count it and then see the client vanish.
    buffering = False
    early = b""  # bytes the client sent after an upgrade request, before the backend agreed

    # The exchange with a backend (the facts exchange.on_failure decides on).
    backend = None  # pool.Backend this attempt holds (counted in its in_flight)
    waiter = None  # task: connecting, or waiting for a ready backend
    tries = 0  # attempts so far, all causes together
    sent = False  # some byte of this request was written to a backend
    retried_other = False  # moved to another backend once after a send
    accounted = False  # counted in the service's requests (once, however many attempts)

    # The response.
    response_started = False  # a backend's response head was read (maybe held back)
    framing = 0
    status = 0
    close_after = False  # close the client connection after this response

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
