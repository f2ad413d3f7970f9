"""The exchange's decisions as a table: every failure kind in every request state, no sockets.

``STATES`` is every combination of the facts ``on_failure`` reads; each test walks the whole
product for one failure kind and checks the decision against the rules written out again here,
case by case, in the words of ``gateway/exchange.py``'s docstring. A handful of named rows pin
the exact statuses, messages and ejection reasons the socket tests rely on.
"""

from __future__ import annotations

import itertools

import pytest

from selfieless.gateway.exchange import (
    MAX_TRIES, Act, Deadline, Decision, Facts, Failure, Progress, on_deadline, on_failure, replayable,
)

CONNECT = (Failure.REFUSED, Failure.RESET, Failure.CONNECT_TIMEOUT)
LOST = (Failure.CLOSED, Failure.BAD_RESPONSE)
OUT = (Failure.REMOVED, Failure.STALLED)  # the backend left the rotation while the request waited

STATES = [
    Facts(idempotent=idem, safe=safe, sent=sent, body_held=held, tries=tries, retried_other=moved,
          reused=reused, progress=progress, others_ready=others, reading_paused=paused)
    for idem, safe, sent, held, tries, moved, reused, progress, others, paused in itertools.product(
        (True, False), (True, False), (True, False), (True, False), (1, 2, MAX_TRIES - 1, MAX_TRIES),
        (False, True), (False, True), tuple(Progress), (True, False), (False, True))
    if idem or not safe  # every safe method is idempotent
]
ALL_KINDS = tuple(Failure)


def test_the_table_is_every_combination():
    assert len(STATES) == 3 * 2 * 2 * 4 * 2 * 2 * 4 * 2 * 2 == 3072
    assert len(set(STATES)) == len(STATES)


def test_replayable():
    assert replayable(Facts(idempotent=False, sent=False, body_held=False))  # nothing sent yet
    assert replayable(Facts(idempotent=True, sent=True, body_held=True))
    assert not replayable(Facts(idempotent=True, sent=True, body_held=False))  # body not kept
    assert not replayable(Facts(idempotent=False, sent=True, body_held=True))  # POST sent


@pytest.mark.parametrize("kind", CONNECT, ids=lambda k: k.name)
def test_connect_failures(kind):
    """Nothing of this attempt was sent: what decides is whether an earlier attempt sent."""
    for f in STATES:
        d = on_failure(kind, f, "Connection refused")
        if f.sent and not (f.idempotent and f.body_held):
            assert d == Decision(Act.ANSWER, 502, "replica connection failed"), f
        elif kind is Failure.CONNECT_TIMEOUT and not f.others_ready:
            assert d == Decision(Act.ANSWER, 504, "replica connect timeout"), f
        elif kind is Failure.CONNECT_TIMEOUT:
            # Slow is not dead: nobody is ejected; someone else is tried (while tries last).
            expect = (Decision(Act.ANSWER, 502, "replicas failed") if f.tries >= MAX_TRIES
                      else Decision(Act.RETRY_OTHER, retry_counted=True))
            assert d == expect, f
        else:
            what = "connection reset" if kind is Failure.RESET else "connection refused"
            reason = f"{what} (Connection refused)"
            expect = (Decision(Act.ANSWER, 502, "replicas failed", reason) if f.tries >= MAX_TRIES
                      else Decision(Act.RETRY_OTHER, eject=reason, retry_counted=True))
            assert d == expect, f
        # A connect failure never uses up the request's one move after a send.
        assert not d.moves


@pytest.mark.parametrize("kind", LOST, ids=lambda k: k.name)
def test_lost_connections(kind):
    for f in STATES:
        d = on_failure(kind, f)
        again = (not f.sent or (f.idempotent and f.body_held))
        progress = f.progress
        if kind is Failure.BAD_RESPONSE and progress is Progress.NOTHING:
            progress = Progress.PARTIAL
        if progress is Progress.COMMITTED:
            assert d.act is Act.CLOSE and d.eject is None and not d.error_counted, f
        elif progress is Progress.HEAD_HELD:
            reason = "connection closed in the middle of a response"
            if again and not f.retried_other:
                expect = (Decision(Act.ANSWER, 502, "replicas failed", reason) if f.tries >= MAX_TRIES
                          else Decision(Act.RETRY_OTHER, eject=reason, retry_counted=True, moves=True))
            else:
                expect = Decision(Act.ANSWER, 502, "replica closed the connection while responding", reason)
            assert d == expect, f
        elif progress is Progress.PARTIAL:
            assert d == Decision(Act.ANSWER, 502, "invalid response from replica"), f
        elif f.reused:
            # A stale keep-alive connection: same backend, fresh connection, nobody ejected.
            if again and f.tries < MAX_TRIES:
                assert d == Decision(Act.RETRY_SAME), f
            else:
                assert d == Decision(Act.ANSWER, 502, "replica closed the connection"), f
        else:
            reason = "connection closed before any response byte"
            if again and not f.retried_other:
                expect = (Decision(Act.ANSWER, 502, "replicas failed", reason) if f.tries >= MAX_TRIES
                          else Decision(Act.RETRY_OTHER, eject=reason, retry_counted=True, moves=True))
            else:
                expect = Decision(Act.ANSWER, 502, "replica closed the connection before responding", reason)
            assert d == expect, f


def test_response_timeout():
    for f in STATES:
        d = on_failure(Failure.RESPONSE_TIMEOUT, f)
        if f.reading_paused:
            assert d == Decision(Act.EXTEND), f  # the client is slow to read: the silence is ours
        elif f.progress is Progress.COMMITTED:
            assert d.act is Act.CLOSE and d.error_counted and d.eject is None, f
        else:
            assert d == Decision(Act.ANSWER, 504, "replica response timeout"), f


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.name)
def test_rules_that_hold_in_every_state(kind):
    for f in STATES:
        d = on_failure(kind, f, "x")
        retry = d.act in (Act.RETRY_SAME, Act.RETRY_OTHER)
        # Nothing reaches a second backend unless all of it can be sent again.
        if retry:
            assert replayable(f), f
            assert f.tries < MAX_TRIES, f
        # After a response byte reached the client: no retry, no answer of ours.
        if f.progress is Progress.COMMITTED and kind in OUT:
            assert d.act is Act.WAIT, f  # a response under way is left to finish or time out
        elif f.progress is Progress.COMMITTED and kind not in CONNECT:
            assert d.act in (Act.CLOSE, Act.EXTEND), f
        # After a send, a request moves to another backend once at most.
        if f.sent and f.retried_other and (kind in LOST or kind in OUT):
            assert d.act is not Act.RETRY_OTHER, f
        # Only proof of a dead backend ejects it: never a timeout or a stale keep-alive reuse.
        if kind in (Failure.CONNECT_TIMEOUT, Failure.RESPONSE_TIMEOUT) or d.act is Act.RETRY_SAME:
            assert d.eject is None, f
        # Leaving the rotation is the pool's business already: no ejection on top, no retry on it.
        if kind in OUT:
            assert d.eject is None and d.act is not Act.RETRY_SAME, f
        # Statuses are the gateway's own, never a client error.
        if d.act is Act.ANSWER:
            assert d.status in (502, 504) and d.message, f
        assert d.act not in (Act.REFUSE, Act.DISARM), f
        if kind not in OUT:
            assert d.act is not Act.WAIT, f


def test_a_backend_removed_as_failed():
    """It will never answer: what waits on it with no response byte goes elsewhere when it may be
    sent again, else gets a 502 now (never a POST replayed once sent)."""
    for f in STATES:
        d = on_failure(Failure.REMOVED, f)
        if f.progress is Progress.COMMITTED:
            assert d == Decision(Act.WAIT), f
        elif f.tries >= MAX_TRIES and (not f.sent or (replayable(f) and not f.retried_other)):
            assert d == Decision(Act.ANSWER, 502, "replicas failed"), f
        elif not f.sent:
            assert d == Decision(Act.RETRY_OTHER, retry_counted=True), f
        elif f.idempotent and f.body_held and not f.retried_other:
            assert d == Decision(Act.RETRY_OTHER, retry_counted=True, moves=True), f
        else:
            assert d == Decision(Act.ANSWER, 502, "replica failed its health check before responding"), f


def test_a_backend_withdrawn_as_stalled():
    """It may only be slow: only a read (or what was never sent) moves, and only when it can;
    a write keeps waiting (the long category delete must not run twice); nothing is answered."""
    for f in STATES:
        d = on_failure(Failure.STALLED, f)
        moves = (f.progress is not Progress.COMMITTED and f.tries < MAX_TRIES and f.others_ready
                 and (not f.sent or (f.safe and f.body_held and not f.retried_other)))
        if not moves:
            assert d == Decision(Act.WAIT), f
        else:
            assert d == Decision(Act.RETRY_OTHER, retry_counted=True, moves=f.sent), f
        assert d.act in (Act.WAIT, Act.RETRY_OTHER), f


# Named rows: the cases the socket tests (test_balancing_and_retries, test_failures,
# test_raw_upstream) exercise end to end.
ROWS = [
    ("GET to a refusing backend goes elsewhere and ejects it",
     Failure.REFUSED, Facts(idempotent=True), "ECONNREFUSED",
     Decision(Act.RETRY_OTHER, eject="connection refused (ECONNREFUSED)", retry_counted=True)),
    ("POST to a refusing backend too: nothing was sent",
     Failure.REFUSED, Facts(idempotent=False), "",
     Decision(Act.RETRY_OTHER, eject="connection refused", retry_counted=True)),
    ("a POST a backend lost after reading it is never replayed",
     Failure.CLOSED, Facts(idempotent=False, sent=True), "",
     Decision(Act.ANSWER, 502, "replica closed the connection before responding",
              "connection closed before any response byte")),
    ("a GET whose big body was not kept cannot be replayed",
     Failure.CLOSED, Facts(idempotent=True, sent=True, body_held=False, reused=True), "",
     Decision(Act.ANSWER, 502, "replica closed the connection")),
    ("a GET lost on a stale keep-alive connection goes to the same backend again",
     Failure.CLOSED, Facts(sent=True, reused=True), "", Decision(Act.RETRY_SAME)),
    ("a backend dying after a held-back head: the client saw nothing",
     Failure.CLOSED, Facts(sent=True, progress=Progress.HEAD_HELD), "",
     Decision(Act.RETRY_OTHER, eject="connection closed in the middle of a response",
              retry_counted=True, moves=True)),
    ("a backend dying mid-body: close",
     Failure.CLOSED, Facts(sent=True, progress=Progress.COMMITTED), "",
     Decision(Act.CLOSE, message="replica lost in the middle of a response")),
    ("garbage instead of a response",
     Failure.BAD_RESPONSE, Facts(sent=True), "", Decision(Act.ANSWER, 502, "invalid response from replica")),
    ("the only backend is slow to accept",
     Failure.CONNECT_TIMEOUT, Facts(others_ready=False), "", Decision(Act.ANSWER, 504, "replica connect timeout")),
    ("the eighth refusal ends it",
     Failure.REFUSED, Facts(tries=MAX_TRIES), "", Decision(Act.ANSWER, 502, "replicas failed", "connection refused")),
    ("a silent backend mid-body: close, and count it",
     Failure.RESPONSE_TIMEOUT, Facts(sent=True, progress=Progress.COMMITTED), "",
     Decision(Act.CLOSE, message="replica stalled in the middle of a response", error_counted=True)),
    ("a GET waiting on a backend that failed its probe goes elsewhere",
     Failure.REMOVED, Facts(sent=True), "", Decision(Act.RETRY_OTHER, retry_counted=True, moves=True)),
    ("a POST sent to a backend that failed its probe: 502 now, not replayed",
     Failure.REMOVED, Facts(idempotent=False, safe=False, sent=True), "",
     Decision(Act.ANSWER, 502, "replica failed its health check before responding")),
    ("a GET on a stalled backend goes elsewhere",
     Failure.STALLED, Facts(sent=True), "", Decision(Act.RETRY_OTHER, retry_counted=True, moves=True)),
    ("a DELETE on a stalled backend waits for its answer",
     Failure.STALLED, Facts(safe=False, sent=True), "", Decision(Act.WAIT)),
    ("a GET whose head is held back when its backend fails its probe goes elsewhere",
     Failure.REMOVED, Facts(sent=True, progress=Progress.HEAD_HELD), "",
     Decision(Act.RETRY_OTHER, retry_counted=True, moves=True)),
    ("a GET whose head is held back on a stalled backend goes elsewhere",
     Failure.STALLED, Facts(sent=True, progress=Progress.HEAD_HELD), "",
     Decision(Act.RETRY_OTHER, retry_counted=True, moves=True)),
    ("a GET half-way through a head from a stalled backend goes elsewhere",
     Failure.STALLED, Facts(sent=True, progress=Progress.PARTIAL), "",
     Decision(Act.RETRY_OTHER, retry_counted=True, moves=True)),
    ("a stalled backend mid-body: the client has part of it, wait for its deadline",
     Failure.STALLED, Facts(sent=True, progress=Progress.COMMITTED), "", Decision(Act.WAIT)),
    ("a POST whose head is held back when its backend fails its probe: 502, not replayed",
     Failure.REMOVED, Facts(idempotent=False, safe=False, sent=True, progress=Progress.HEAD_HELD), "",
     Decision(Act.ANSWER, 502, "replica failed its health check before responding")),
    ("a silent backend after a held-back head: 504",
     Failure.RESPONSE_TIMEOUT, Facts(sent=True, progress=Progress.HEAD_HELD), "",
     Decision(Act.ANSWER, 504, "replica response timeout")),
]


@pytest.mark.parametrize("what,kind,facts,detail,expect", ROWS, ids=[r[0] for r in ROWS])
def test_named_rows(what, kind, facts, detail, expect):
    assert on_failure(kind, facts, detail) == expect


def test_an_ejection_reason_without_detail_is_just_the_cause():
    assert on_failure(Failure.RESET, Facts()).eject == "connection reset"
    assert on_failure(Failure.REFUSED, Facts()).eject == "connection refused"


# Client-side deadlines: every kind in every connection state.
DEADLINE_STATES = list(itertools.product((False, True), (False, True), (False, True), tuple(Progress)))


@pytest.mark.parametrize("kind", tuple(Deadline), ids=lambda k: k.name)
def test_deadlines(kind):
    for busy, in_head, paused, progress in DEADLINE_STATES:
        d = on_deadline(kind, busy, in_head, paused, progress)
        assert d == on_deadline(int(kind), busy, in_head, paused, progress)  # as the connection stores it
        state = (busy, in_head, paused, progress)
        if kind == Deadline.NONE:
            assert d == Decision(Act.WAIT), state
        elif kind == Deadline.IDLE:
            # Idle means nothing is going on; a request that started meanwhile is not closed.
            assert d == (Decision(Act.CLOSE) if not busy and not in_head else Decision(Act.WAIT)), state
        elif kind in (Deadline.LINGER, Deadline.TUNNEL):
            assert d == Decision(Act.CLOSE), state
        elif kind == Deadline.HEADER:
            assert d == Decision(Act.REFUSE, 408, "request header timeout"), state
        elif kind == Deadline.BODY:
            assert d == (Decision(Act.EXTEND) if paused else Decision(Act.REFUSE, 408, "request body timeout")), state
        else:
            assert kind == Deadline.RESPONSE
            if not busy:
                assert d == Decision(Act.DISARM), state
            else:
                assert d == on_failure(Failure.RESPONSE_TIMEOUT, Facts(progress=progress, reading_paused=paused))


def test_a_request_describes_itself_to_the_exchange():
    from selfieless.gateway.request import Request

    r = Request(b"POST", b"/api/v1/acts", b"/api/v1/acts", b"POST ...\r\n\r\n", False, None, 0.0)
    assert r.facts() == Facts(idempotent=False, safe=False, sent=False, body_held=True, tries=0)
    r.sent, r.replay, r.tries, r.retried_other = True, None, 2, True
    assert r.facts(reused=True, progress=Progress.HEAD_HELD, others_ready=False) == Facts(
        idempotent=False, safe=False, sent=True, body_held=False, tries=2, retried_other=True, reused=True,
        progress=Progress.HEAD_HELD, others_ready=False)
    assert Request(b"GET", b"/", b"/", b"", False, None, 0.0).facts().safe
    d = Request(b"DELETE", b"/", b"/", b"", False, None, 0.0).facts()
    assert d.idempotent and not d.safe
