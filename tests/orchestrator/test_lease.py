"""The control-plane lease's rules (orchestrator/lease.py), as tables: what a control plane does
after reading the lease, when it may act, and that two control planes following the rules are
never both allowed to act, whatever their clocks read within the margin."""

import pytest

from selfieless.orchestrator.lease import (LABEL_DEADLINE, LABEL_HOLDER, Lease, Step, Terms, from_labels, granted,
                                           may_act, next_step, released, renew_at, stop_by, to_labels)

T = Terms(seconds=10.0, margin=2.0)


@pytest.mark.parametrize("read,now,step,when", [
    (None, 100.0, Step.CREATE, 100.0),                       # no record yet
    (Lease("me", 105.0), 100.0, Step.RENEW, 100.0),           # ours, valid
    (Lease("me", 90.0), 100.0, Step.RENEW, 100.0),            # ours, lapsed: nobody took it, renew
    (Lease("other", 105.0), 100.0, Step.WAIT, 107.0),         # someone else's, valid: wait deadline + margin
    (Lease("other", 99.0), 100.0, Step.WAIT, 101.0),          # past the deadline but within the margin
    (Lease("other", 98.0), 100.0, Step.TAKE_OVER, 100.0),     # exactly deadline + margin
    (Lease("other", 50.0), 100.0, Step.TAKE_OVER, 100.0),     # long lapsed
    (Lease("", 105.0), 100.0, Step.TAKE_OVER, 100.0),         # released: at once
])
def test_next_step(read, now, step, when):
    assert next_step(read, "me", now, T) == (step, when)


@pytest.mark.parametrize("held,now,ok", [
    (None, 100.0, False),                  # never acquired
    (Lease("me", 110.0), 100.0, True),
    (Lease("me", 110.0), 107.9, True),
    (Lease("me", 110.0), 108.0, False),    # deadline - margin: stop
    (Lease("me", 110.0), 111.0, False),
    (Lease("other", 110.0), 100.0, False),  # what we last wrote was not ours (cannot happen, but no)
    (Lease("", 110.0), 100.0, False),      # released
])
def test_may_act(held, now, ok):
    assert may_act(held, "me", now, T) is ok


def test_a_grant_runs_from_the_time_the_write_was_sent_and_renews_every_third():
    g = granted("me", 100.0, T)
    assert g == Lease("me", 110.0)
    assert renew_at(g, T) == pytest.approx(100.0 + 10 / 3)
    assert stop_by(g, T) == 108.0
    # Two renewals fit before the holder has to stop.
    assert renew_at(g, T) + T.renew_every < stop_by(g, T)
    assert released(g) == Lease("", 110.0)


@pytest.mark.parametrize("seconds,margin", [(10, 3), (4, 1.5), (10, 0), (10, -1)])
def test_terms_refuse_a_margin_that_leaves_no_second_renewal(seconds, margin):
    with pytest.raises(ValueError):
        Terms(seconds=seconds, margin=margin)


@pytest.mark.parametrize("labels,lease", [
    ({LABEL_HOLDER: "a", LABEL_DEADLINE: "12.5"}, Lease("a", 12.5)),
    ({LABEL_HOLDER: "", LABEL_DEADLINE: "12.5", "other": "x"}, Lease("", 12.5)),
    ({LABEL_HOLDER: "a"}, None),
    ({LABEL_DEADLINE: "1"}, None),
    ({LABEL_HOLDER: "a", LABEL_DEADLINE: "soon"}, None),
    ({LABEL_HOLDER: "a", LABEL_DEADLINE: "nan"}, None),
    (None, None),
])
def test_labels(labels, lease):
    assert from_labels(labels) == lease


def test_labels_round_trip():
    lease = Lease("host:12:ab", 1765061234.512)
    assert from_labels(to_labels(lease)) == lease


@pytest.mark.parametrize("skew", [-3.9, 0.0, 3.9])
@pytest.mark.parametrize("renewals_fail_from", [0.0, 3.0, 7.5])
def test_two_control_planes_never_act_at_once(skew, renewals_fail_from):
    """A holder whose renewals start failing at `renewals_fail_from`, and a second control plane
    whose clock reads `skew` seconds ahead of the holder's (less than twice the margin: the gap
    between the holder's stop and the takeover): walking true time in small steps, at no moment
    do both may_act."""
    a_held = granted("a", 0.0, T)
    b_held = None
    b_acted_at = None
    t = 0.0
    while t < 30.0:
        if t >= renew_at(a_held, T) and t < renewals_fail_from:
            a_held = granted("a", t, T)
        a_acts = may_act(a_held, "a", t, T)
        b_now = t + skew
        # b reads what was last committed; a's writes stop at renewals_fail_from.
        stored = a_held if b_held is None else b_held
        step, _ = next_step(stored, "b", b_now, T)
        if step in (Step.TAKE_OVER, Step.RENEW):
            b_held = granted("b", b_now, T)
        b_acts = may_act(b_held, "b", b_now, T)
        if b_acts and b_acted_at is None:
            b_acted_at = t
        assert not (a_acts and b_acts), f"both act at {t}"
        t = round(t + 0.05, 2)
    assert b_acted_at is not None   # the takeover happens
    assert b_acted_at >= a_held.deadline + T.margin - skew - 0.05
