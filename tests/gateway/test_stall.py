"""The stall decision as a table (gateway/stall.py): which backends leave the rotation, no sockets."""

from __future__ import annotations

import pytest

from selfieless.gateway.stall import TOGETHER_AFTER, Seen, stalled_together, to_withdraw

T = 0.5
ANSWERING = Seen(True, False, 0.0, 0.05)  # in rotation, answered within the last sweep
STALLED = Seen(True, False, 0.8, 0.8)  # a read waiting 0.8 s, nothing from it for 0.8 s
IDLE = Seen(True, False, 0.0, 5.0)  # nothing waiting on it, nothing from it (no traffic)
SLACK = 0.1
WITHDRAWN = Seen(False, True, 0.0, 3.0)
EJECTED = Seen(False, False, 0.0, 3.0)  # out for another reason (refused, draining)

ROWS = [
    ("a cut node among answering siblings", [ANSWERING, ANSWERING, STALLED], [2]),
    ("two replicas, one stalled", [STALLED, ANSWERING], [0]),
    ("a single replica is never left with nothing", [STALLED], []),
    ("all stalling together (a shared dependency): none", [STALLED, STALLED, STALLED], []),
    ("stalled ones while nobody answers (idle siblings): none", [STALLED, IDLE, IDLE], []),
    ("a backend that answered meanwhile is only slow on one request",
     [ANSWERING, Seen(True, False, 3.0, 0.1)], []),
    ("a read not waiting long enough", [ANSWERING, Seen(True, False, 0.4, 0.9)], []),
    ("quiet but nothing waiting on it (a write is not evidence: the sweep counts reads only)",
     [ANSWERING, IDLE], []),
    ("at most half the service: the longest stalled goes first",
     [ANSWERING, Seen(True, False, 0.7, 0.7), Seen(True, False, 1.2, 1.2)], [2]),
    ("four replicas: two may go", [ANSWERING, ANSWERING, STALLED, Seen(True, False, 2.0, 2.0)], [3, 2]),
    ("the budget counts those already withdrawn", [ANSWERING, ANSWERING, WITHDRAWN, STALLED], [3]),
    ("and stops there", [ANSWERING, WITHDRAWN, STALLED], []),
    ("ejected or draining backends neither answer nor count",
     [ANSWERING, EJECTED, EJECTED, STALLED], [3]),
    ("a sibling with a read waiting too is no evidence (a shared stall beginning)",
     [Seen(True, False, 0.3, 0.1), STALLED], []),
    ("clients that wait for answers all end up on the stalled one: its siblings went idle after it",
     [Seen(True, False, 0.0, 0.62), Seen(True, False, 0.0, 0.6), Seen(True, False, 0.55, 0.7)], [2]),
    ("siblings idle since before the read was sent are no evidence",
     [Seen(True, False, 0.0, 0.9), Seen(True, False, 0.55, 0.7)], []),
]


@pytest.mark.parametrize("what,seen,expect", ROWS, ids=[r[0] for r in ROWS])
def test_rows(what, seen, expect):
    assert to_withdraw(seen, T, SLACK) == expect


def test_off():
    assert to_withdraw([ANSWERING, STALLED], 0) == []


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("stalled", range(0, 9))
def test_never_all_never_more_than_half(n, stalled):
    """Whatever the mix: an answering backend stays in rotation, and at most half (one at least) go."""
    stalled = min(stalled, n)
    seen = [STALLED] * stalled + [ANSWERING] * (n - stalled)
    out = to_withdraw(seen, T, SLACK)
    assert all(seen[i] is STALLED for i in out)
    if stalled == n:
        assert out == []
    else:
        assert len(out) == min(stalled, max(1, n // 2))


@pytest.mark.parametrize("what,seen,slack,expect", [
    # A read waiting exactly the threshold, with nothing from its backend for exactly as long: stalled.
    ("exactly at the threshold", [ANSWERING, Seen(True, False, T, T)], 0.0, [1]),
    ("just under it (waiting)", [ANSWERING, Seen(True, False, T - 0.01, 1.0)], 0.0, []),
    ("just under it (quiet)", [ANSWERING, Seen(True, False, 1.0, T - 0.01)], 0.0, []),
    # The sibling's own waiting read must stay under half the threshold to count as answering.
    ("a sibling waiting just under half", [Seen(True, False, T / 2 - 0.01, 0.05), STALLED], 0.0, [1]),
    ("a sibling waiting half the threshold", [Seen(True, False, T / 2, 0.05), STALLED], 0.0, []),
    # "Answered since the read was sent": the sibling's last answer no older than the wait (plus slack).
    ("the sibling answered as the read was sent", [Seen(True, False, 0.0, 0.8), STALLED], 0.0, [1]),
    ("the sibling answered just before it", [Seen(True, False, 0.0, 0.85), STALLED], 0.0, []),
    ("...which the sweep's slack forgives", [Seen(True, False, 0.0, 0.85), STALLED], 0.1, [1]),
])
def test_boundaries(what, seen, slack, expect):
    assert to_withdraw(seen, T, slack) == expect


def test_no_slack_unless_given():
    # The sweep passes its interval as slack; a caller that passes none gets none.
    assert to_withdraw([Seen(True, False, 0.0, 0.85), STALLED], T) == []
    assert to_withdraw([ANSWERING, STALLED], T) == [1]


def test_the_budget_rounds_down_but_never_below_one():
    # 3 backends: half is 1.5, so one at most; 5: two at most.
    assert to_withdraw([ANSWERING, STALLED, STALLED], T, SLACK) == [1]
    assert len(to_withdraw([ANSWERING, STALLED, STALLED, STALLED, STALLED], T, SLACK)) == 2
    assert to_withdraw([ANSWERING, STALLED], T, SLACK, max_fraction=0.1) == [1]
    assert to_withdraw([ANSWERING, ANSWERING, STALLED, STALLED], T, SLACK, max_fraction=1.0) == [2, 3]


LONG = Seen(True, False, T * TOGETHER_AFTER, T * TOGETHER_AFTER)  # silent long enough together
TOGETHER_ROWS = [
    ("every replica silent with reads waiting, long enough: on", [LONG, LONG, LONG], False, True),
    ("not long enough yet", [LONG, STALLED, LONG], False, False),
    ("one answering: a stall of the others, not a shared one", [LONG, LONG, ANSWERING], False, False),
    ("one idle with nothing waiting: no evidence it stalls too", [LONG, LONG, IDLE], False, False),
    ("a single replica: its own fault or not, nothing to compare", [LONG], False, False),
    ("replicas out of rotation neither count nor clear it", [LONG, LONG, WITHDRAWN, EJECTED], False, True),
    ("reported: stays on while none answers (one episode, one event)", [LONG, IDLE, STALLED], True, True),
    ("reported: off once one answered again", [LONG, ANSWERING], True, False),
]


@pytest.mark.parametrize("what,seen,reported,expect", TOGETHER_ROWS, ids=[r[0] for r in TOGETHER_ROWS])
def test_stalled_together_rows(what, seen, reported, expect):
    assert stalled_together(seen, T, reported) is expect


def test_stalled_together_off():
    assert stalled_together([LONG, LONG], 0, False) is False
