"""What to do when one request's exchange with a backend fails or times out (pure, no sockets).

The protocol classes (``client``, ``upstream``) describe what they know about the request and
what went wrong; :func:`on_failure` and :func:`on_deadline` say what to do, and the protocol
classes carry it out. Nothing here touches a socket, a clock or a pool, so every case is a line
in a table test (tests/gateway/test_exchange.py).

The rules, in words:

* Nothing of a request may reach a second backend unless we can send all of it again: either
  nothing was sent yet, or the method is idempotent and its body is still held (small enough to
  keep, see ``retry_body_limit``).
* A backend that refuses or resets a connection, or closes a fresh one before it has answered,
  is ejected (passive health). A connect timeout is not proof of death: try someone else, eject
  nobody.
* A reused keep-alive connection that dies before any response byte was most likely closed by the
  backend while idle: retry on a fresh connection to the same backend, and eject nobody.
* Once a response byte has reached the client, nothing honest can be added: close the
  connection (a short body tells the client the response is incomplete).
* A response head held back (not yet written, see ``upstream``) has shown the client nothing, so
  a failure then is handled like one before the response.
* A request is tried at most ``MAX_TRIES`` times, all causes together; after a send, it goes to
  another backend at most once.
* A backend the control plane removes because it failed its health check (``REMOVED``) will not
  answer: a request waiting on it without any response byte goes elsewhere if it can be sent
  again (the rules above), else it is answered 502 at once instead of waiting for a timeout.
  A response already under way is left to finish or time out.
* A backend withdrawn as stalled (``STALLED``, see :mod:`.stall`) is not proven dead, only
  silent while its siblings answer: only a *safe* request (GET, HEAD, ...; never a write, which
  may legitimately take seconds) moves elsewhere; everything else keeps waiting on it, and its
  health probe decides.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

MAX_TRIES = 8  # attempts per request, all causes together (refused connects are cheap)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
SAFE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})  # reads: no effect on the server


class Failure(enum.Enum):
    """What went wrong with the backend side of an exchange."""

    REFUSED = "refused"  # connect() refused (or another OSError while connecting)
    RESET = "reset"  # connection reset while connecting, or accepted then reset before a write
    CONNECT_TIMEOUT = "connect timeout"  # connect() took longer than connect_timeout
    CLOSED = "closed"  # an open connection was closed or reset mid-exchange
    BAD_RESPONSE = "bad response"  # the backend sent bytes that are not a valid response
    RESPONSE_TIMEOUT = "response timeout"  # the backend was silent past response_timeout
    REMOVED = "removed"  # the control plane removed the backend as failed (health probe)
    STALLED = "stalled"  # the gateway withdrew the backend as stalled (silent, siblings answer)


class Progress(enum.IntEnum):
    """How far the response got when the failure happened."""

    NOTHING = 0  # no byte from the backend
    PARTIAL = 1  # some bytes, but not a whole response head
    HEAD_HELD = 2  # a whole head, held back: the client has seen nothing
    COMMITTED = 3  # response bytes were written to the client


class Deadline(enum.IntEnum):
    """What a client connection's single deadline currently means."""

    NONE = 0
    IDLE = 1  # keep-alive idle: close quietly
    HEADER = 2  # reading a request head: 408
    BODY = 3  # reading a request body: 408
    RESPONSE = 4  # waiting for the backend: its response head (504), or more of its body (close)
    LINGER = 5  # answered and half-closed, draining what the client still sends: close
    TUNNEL = 6  # an upgraded connection, silent for too long: close


class Act(enum.Enum):
    """What the connection does next."""

    RETRY_SAME = "retry on a fresh connection to the same backend"
    RETRY_OTHER = "retry on another backend"
    ANSWER = "answer the request ourselves (status); the connection may go on"
    REFUSE = "answer status and close the client connection (client's fault)"
    CLOSE = "close the client connection without a word"
    EXTEND = "push the deadline back: we are the ones not reading"
    DISARM = "nothing is waiting: clear the deadline"
    WAIT = "nothing to do yet"


@dataclass(frozen=True, slots=True)
class Facts:
    """One request's exchange at the moment something went wrong.

    Built by the protocol classes from their state; only read here.
    """

    idempotent: bool = True  # the method may be sent twice (GET, PUT, ...)
    safe: bool = True  # the method only reads (GET, HEAD, ...)
    sent: bool = False  # some byte of the request was written to a backend (this or an earlier try)
    body_held: bool = True  # every body byte so far is kept for a resend (not over retry_body_limit)
    tries: int = 1  # attempts so far, this one included
    retried_other: bool = False  # already moved to another backend after a send
    reused: bool = False  # the failed connection was a keep-alive one taken from the idle pool
    progress: Progress = Progress.NOTHING
    others_ready: bool = True  # a ready backend other than this one exists
    reading_paused: bool = False  # we stopped reading (the other side's buffer is full)


class Decision(NamedTuple):
    act: Act
    status: int = 0  # for ANSWER / REFUSE
    message: str = ""  # for ANSWER / REFUSE, and the log
    eject: str | None = None  # eject the backend, with this reason
    retry_counted: bool = False  # counts in the service's ``retries``
    moves: bool = False  # this retry is the request's one move to another backend after a send
    error_counted: bool = False  # a CLOSE that counts in the service's ``gateway_errors``


def replayable(f: Facts) -> bool:
    """The whole request can still be sent to a backend (again)."""
    return not f.sent or (f.idempotent and f.body_held)


def _answer(status: int, message: str, eject: str | None = None) -> Decision:
    return Decision(Act.ANSWER, status, message, eject)


def _elsewhere(f: Facts, eject: str | None, moves: bool = False) -> Decision:
    """Retry on another backend, unless the request has used up its tries."""
    if f.tries >= MAX_TRIES:
        return _answer(502, "replicas failed", eject)
    return Decision(Act.RETRY_OTHER, eject=eject, retry_counted=True, moves=moves)


def on_failure(kind: Failure, f: Facts, detail: str = "") -> Decision:
    """The decision for failure ``kind`` of the exchange described by ``f``.

    ``detail`` (an OS error's text) only goes into an ejection reason.
    """
    if kind is Failure.REFUSED or kind is Failure.RESET or kind is Failure.CONNECT_TIMEOUT:
        return _connect_failed(kind, f, detail)
    if kind is Failure.RESPONSE_TIMEOUT:
        return _response_timeout(f)
    if kind is Failure.REMOVED:
        return _removed(f)
    if kind is Failure.STALLED:
        return _stalled(f)
    return _lost(kind, f)


def _connect_failed(kind: Failure, f: Facts, detail: str) -> Decision:
    # Nothing of this attempt was sent; an earlier attempt may have sent (part of) the request.
    if not replayable(f):
        return _answer(502, "replica connection failed")
    if kind is Failure.CONNECT_TIMEOUT:
        # Slow to accept is not proof of death: no ejection, but try someone else.
        if not f.others_ready:
            return _answer(504, "replica connect timeout")
        return _elsewhere(f, None)
    what = "connection reset" if kind is Failure.RESET else "connection refused"
    return _elsewhere(f, f"{what} ({detail})" if detail else what)


def _lost(kind: Failure, f: Facts) -> Decision:
    progress = f.progress
    if kind is Failure.BAD_RESPONSE and progress is Progress.NOTHING:
        progress = Progress.PARTIAL  # bad bytes are bytes
    if progress is Progress.COMMITTED:
        # Mid-body: nothing honest to add; closing tells the client the body is short.
        return Decision(Act.CLOSE, message="replica lost in the middle of a response")
    if progress is Progress.HEAD_HELD:
        reason = "connection closed in the middle of a response"
        if replayable(f) and not f.retried_other:
            return _elsewhere(f, reason, moves=True)
        return _answer(502, "replica closed the connection while responding", reason)
    if progress is Progress.PARTIAL:
        return _answer(502, "invalid response from replica")
    if f.reused:
        # Most likely a keep-alive connection the backend closed as we reused it: not its fault.
        if replayable(f) and f.tries < MAX_TRIES:
            return Decision(Act.RETRY_SAME)
        return _answer(502, "replica closed the connection")
    reason = "connection closed before any response byte"
    if replayable(f) and not f.retried_other:
        return _elsewhere(f, reason, moves=True)
    return _answer(502, "replica closed the connection before responding", reason)


def _removed(f: Facts) -> Decision:
    # The backend failed its health check: nothing more will come from it.
    if f.progress is Progress.COMMITTED:
        return Decision(Act.WAIT)  # the client has part of it: its own deadline applies
    if not f.sent:
        return _elsewhere(f, None)  # still connecting: nothing of it reached anyone
    if replayable(f) and not f.retried_other:
        return _elsewhere(f, None, moves=True)
    return _answer(502, "replica failed its health check before responding")


def _stalled(f: Facts) -> Decision:
    # Silent while its siblings answer, but perhaps only slow: move what cannot hurt to move.
    # A response begun but unseen by the client (part of a head, or a held-back head: a replica
    # paused between its head and its body) moves like one not begun.
    if f.progress is Progress.COMMITTED or f.tries >= MAX_TRIES or not f.others_ready:
        return Decision(Act.WAIT)
    if not f.sent:
        return _elsewhere(f, None)
    if f.safe and f.body_held and not f.retried_other:
        return _elsewhere(f, None, moves=True)
    return Decision(Act.WAIT)  # a write (or a body we no longer hold) waits for its answer


def _response_timeout(f: Facts) -> Decision:
    if f.reading_paused:
        return Decision(Act.EXTEND)  # the client is slow to read, not the backend to answer
    if f.progress is Progress.COMMITTED:
        # Stalled in the middle of the body: nothing honest to add, and closing tells the client
        # its response is short.
        return Decision(Act.CLOSE, message="replica stalled in the middle of a response",
                        error_counted=True)
    # Nothing (or only a held-back head) reached the client: it gets a clean 504.
    return _answer(504, "replica response timeout")


def on_deadline(kind: Deadline, busy: bool, in_head: bool, reading_paused: bool,
                progress: Progress = Progress.NOTHING) -> Decision:
    """A client connection's deadline of ``kind`` has passed.

    ``kind`` may be the plain int the connection stores. ``busy``: a request is being proxied
    or answered; ``in_head``: a request head is being read; ``reading_paused``: we stopped
    reading the side that fell silent (flow control), so the silence is ours; ``progress``: of
    the active request's response (for ``RESPONSE``).
    """
    if kind == Deadline.IDLE:
        return Decision(Act.CLOSE) if not busy and not in_head else Decision(Act.WAIT)
    if kind == Deadline.LINGER or kind == Deadline.TUNNEL:
        return Decision(Act.CLOSE)
    if kind == Deadline.HEADER:
        return Decision(Act.REFUSE, 408, "request header timeout")
    if kind == Deadline.BODY:
        if reading_paused:
            return Decision(Act.EXTEND)
        return Decision(Act.REFUSE, 408, "request body timeout")
    if kind == Deadline.RESPONSE:
        if not busy:
            return Decision(Act.DISARM)
        return _response_timeout(Facts(progress=progress, reading_paused=reading_paused))
    return Decision(Act.WAIT)
