"""Pure decisions down to their exact outputs: plan actions with their reasons, backoff state,
health verdicts at the boundaries, autoscale reasons and counts, route normalisation.

These are the details `scripts/mutation` found unchecked: each assertion here fails for at least
one small change to the decision code (a `<` turned `<=`, a reason string lost, a field dropped).
"""

import time

import pytest

from selfieless.gateway.routing import RouteTable, normalise_prefix
from selfieless.orchestrator.autoscale import (
    ScaleDecision,
    RateState,
    Sample,
    WindowState,
    rate_step,
    window_count,
    window_next_deadline,
    window_step,
)
from selfieless.orchestrator.backoff import BackoffState, in_crash_loop, record_failure
from selfieless.orchestrator.health import Verdict, verdict
from selfieless.orchestrator.commands import CancelStart, ReplaceReplica, StopReplica
from selfieless.orchestrator.plan import PENDING, Slot, plan_service
from selfieless.orchestrator.replica import InvalidTransition, Replica, ReplicaState as S
from selfieless.orchestrator.stack import RatePolicy, WindowPolicy

PORTS = range(8000, 8010)


# --- plans -----------------------------------------------------------------------------------

def test_plan_actions_whole():
    slots = [Slot(8000, S.READY, "a"), Slot(8001, S.EXITED, "x"), Slot(8002, S.READY, "c"),
             Slot(8003, PENDING), Slot(8004, S.UNHEALTHY, "u")]
    assert plan_service(2, slots, PORTS) == [
        StopReplica("u", drain=False, reason="scale-in to 2: highest port first"),
        CancelStart(8003, "scale-in to 2"),
        StopReplica("c", drain=True, reason="scale-in to 2: highest port first"),
        ReplaceReplica("x", reason="replica is exited"),
    ]


def test_plan_exactly_desired_starts_nothing():
    assert plan_service(1, [Slot(8000, S.READY, "a")], PORTS) == []
    assert plan_service(0, [], PORTS) == []


def test_plan_pending_state_named_in_reason():
    # A broken slot is replaced; a pending one is named by its plain string.
    (a,) = plan_service(1, [Slot(8000, S.UNHEALTHY, "u")], PORTS)
    assert a == ReplaceReplica("u", "replica is unhealthy")


# --- backoff ---------------------------------------------------------------------------------

def test_backoff_failure_forgets_the_healthy_time():
    # Healthy for 1 s only, then failed: not a crash loop, replaced at once; the next
    # replica on the slot has to become healthy again to be forgiven.
    st = BackoffState(failures=1, healthy_since=5.0)
    st2, delay = record_failure(st, now=6.0)
    assert st2 == BackoffState(failures=1, healthy_since=None) and delay == 0.0
    st3, delay = record_failure(st2, now=7.0)
    assert st3 == BackoffState(failures=2, healthy_since=None) and delay == 0.5


def test_crash_loop_starts_at_the_second_failure():
    assert not in_crash_loop(BackoffState(failures=1))
    assert in_crash_loop(BackoffState(failures=2))


# --- health verdicts -------------------------------------------------------------------------

def test_verdict_start_grace_boundary_and_counts():
    # Started at 100 s: grace measured from the start, not from zero.
    assert verdict(S.STARTING, False, 2, 1, 100.0, 129.9, 30.0) == (Verdict.STILL_STARTING, 3)
    assert verdict(S.STARTING, False, 2, 1, 100.0, 130.0, 30.0) == (Verdict.UNHEALTHY, 3)
    assert verdict(S.STARTING, False, 0, 1, 100.0, 131.0, 30.0) == (Verdict.UNHEALTHY, 1)


# --- replica ---------------------------------------------------------------------------------

def test_invalid_transition_says_what_and_why():
    r = Replica("acts-8000-1", "acts", 8000)
    with pytest.raises(InvalidTransition) as info:
        r.transition(S.STOPPED, "because")
    assert str(info.value) == "acts-8000-1: starting -> stopped is not allowed (because)"


# --- routing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("given,canonical", [
    ("api", "/api"), ("api/", "/api"), ("/api//", "/api"), ("/", "/"), ("//", "/"), ("", "/"),
    ("/a/b/", "/a/b"), ("a", "/a"),
])
def test_normalise_prefix(given, canonical):
    assert normalise_prefix(given) == canonical


def test_route_table_fields_cache_and_errors():
    t = RouteTable({"api/v1/": "acts", "/api/v1/users": "users"})
    assert t.routes == {"/api/v1": "acts", "/api/v1/users": "users"}
    assert t.services() == {"acts", "users"}
    assert repr(t) == "RouteTable({'/api/v1': 'acts', '/api/v1/users': 'users'})"
    assert t.match(b"/api/v1/users/x") == "users" and t.match(b"/api/v1/users/x") == "users"  # cached
    assert t.match(b"/nope") is None and t.match(b"/nope") is None
    with pytest.raises(ValueError) as info:
        RouteTable({"/x": ""})
    assert str(info.value) == "route '/x' has no service"
    # The memo is bounded at 4096 paths; answers stay right past it.
    for i in range(4100):
        assert t.match(b"/api/v1/p%d" % i) == "acts"
    assert len(t._cache) == 4096
    assert t.match(b"/api/v1/users") == "users"


# --- window policy ---------------------------------------------------------------------------

W = WindowPolicy(policy="window", window_seconds=120, requests_per_replica=20)


def test_window_count_and_deadline():
    assert window_count(WindowState(), Sample(7, None)) == 0
    assert window_count(WindowState(), Sample(7, 3.0)) == 7
    assert window_count(WindowState(window_start=10.0, base_count=5), Sample(12, 3.0)) == 7
    assert window_next_deadline(WindowState(), W) is None
    assert window_next_deadline(WindowState(window_start=10.0), W) == 130.0


def test_window_reason_exact():
    wall_now = time.mktime((2026, 1, 2, 10, 0, 0, 0, 0, -1))
    st, d = window_step(WindowState(), Sample(1, 100.0), 230.0, 1, W, 1, 10, wall_now=wall_now)
    # The window ended at 220 (monotonic), 10 s before "now": 09:59:50 local time.
    assert d == ScaleDecision(1, 1, "kept service at 1: 1 request in the window ending 09:59:50", 1, 220.0)
    assert st == WindowState(window_start=220.0, base_count=1)
    st, d = window_step(WindowState(), Sample(41, 100.0), 220.0, 1, W, 1, 10, "acts", wall_now=wall_now)
    assert d.reason == "scaled acts 1\u21923: 41 requests in the window ending 10:00:00"
    st, d = window_step(WindowState(), Sample(0, 100.0), 220.0, 1, W, 1, 10, "acts", wall_now=wall_now)
    assert d.reason == "kept acts at 1: 0 requests in the window ending 10:00:00"


def test_window_reason_uses_the_clock_when_not_given():
    before = time.strftime("%H:%M:%S")
    _, d = window_step(WindowState(), Sample(2, 0.0), 120.0, 1, W, 1, 10, "acts")
    assert d.reason.startswith("kept acts at 1: 2 requests in the window ending ")
    assert before <= d.reason.rsplit(" ", 1)[1] <= time.strftime("%H:%M:%S")


# --- rate policy -----------------------------------------------------------------------------

R = RatePolicy(policy="rate", target_rps_per_replica=10, window_seconds=4, scale_in_delay=10)


def test_rate_first_sample_reads_zero():
    st, d = rate_step(RateState(), Sample(500, 0.0), 100.0, 1, R, 1, 10, "acts")
    assert d == ScaleDecision(1, 1, "kept acts at 1: 0.0 req/s over the last 0.0 s, target 10 per replica", 0)
    assert st == RateState(samples=((100.0, 500),), recommendations=((100.0, 1),), since=100.0)


def test_rate_reason_and_count_exact():
    st, _ = rate_step(RateState(), Sample(0, 0.0), 100.0, 1, R, 1, 10, "acts")
    st, d = rate_step(st, Sample(30, 0.0), 101.0, 1, R, 1, 10, "acts")
    assert d == ScaleDecision(3, 1, "scaled acts 1\u21923: 30.0 req/s over the last 1.0 s, target 10 per replica", 30)


def test_rate_default_service_name():
    st, _ = rate_step(RateState(), Sample(0, 0.0), 100.0, 1, R, 1, 10)
    _, d = rate_step(st, Sample(30, 0.0), 101.0, 1, R, 1, 10)
    assert d.reason.startswith("scaled service 1\u21923: ")


def test_rate_window_edges_are_inclusive():
    # A sample exactly window_seconds old still counts (>=): 40 requests over 4 s = 10 req/s.
    st = RateState(samples=((96.0, 0),), since=96.0)
    st2, d = rate_step(st, Sample(40, 0.0), 100.0, 1, R, 1, 10, "acts")
    assert st2.samples == ((96.0, 0), (100.0, 40)) and d.count == 40
    assert d.desired == 1 and "10.0 req/s over the last 4.0 s" in d.reason


def test_rate_recent_half_window_catches_a_step():
    # Quiet for 3 s, then 20 requests in the last second: the half window (2 s) reads 10 req/s
    # over [98, 100], the whole window only 5.
    st = RateState(samples=((96.0, 0), (98.0, 0), (99.0, 0)), since=96.0)
    _, d = rate_step(st, Sample(20, 0.0), 100.0, 1, R, 1, 10, "acts")
    assert d.desired == 1 and d.reason.startswith("kept acts at 1: 10.0 req/s over the last 4.0 s")
    st = RateState(samples=((96.0, 0), (99.0, 0)), since=96.0)
    _, d = rate_step(st, Sample(40, 0.0), 100.0, 1, R, 1, 10, "acts")
    assert d.desired == 4  # 40 req/s over [99, 100]


def test_rate_scale_in_boundary_and_stabilisation():
    # Recommendations of the last 10 s: a 3 exactly 10 s ago still holds the count up (>=).
    st = RateState(samples=((99.0, 100),), recommendations=((90.0, 3),), since=80.0)
    _, d = rate_step(st, Sample(100, 0.0), 100.0, 4, R, 1, 10, "acts")
    assert d.desired == 3 and d.reason == ("scaled acts 4\u21923: 0.0 req/s over the last 1.0 s, target 10 per "
                                           "replica, stable for 10 s")
    # Not yet scale_in_delay since the history began: stays.
    st = RateState(samples=((99.0, 100),), recommendations=(), since=90.5)
    _, d = rate_step(st, Sample(100, 0.0), 100.0, 4, R, 1, 10, "acts")
    assert d.desired == 4 and d.reason.startswith("kept acts at 4: ")
    st = RateState(samples=((99.0, 100),), recommendations=(), since=90.0)
    _, d = rate_step(st, Sample(100, 0.0), 100.0, 4, R, 1, 10, "acts")
    assert d.desired == 1 and d.count == 0


def test_rate_equal_recommendation_keeps_current_as_scale_out_reason():
    st = RateState(samples=((99.0, 0),), since=99.0)
    _, d = rate_step(st, Sample(20, 0.0), 100.0, 2, R, 1, 10, "acts")
    assert d == ScaleDecision(2, 2, "kept acts at 2: 20.0 req/s over the last 1.0 s, target 10 per replica", 20)


def test_invalid_transition_without_a_reason():
    r = Replica("x", "acts", 8000)
    with pytest.raises(InvalidTransition) as info:
        r.transition(S.STOPPED)
    assert str(info.value) == "x: starting -> stopped is not allowed ()"


def test_rate_samples_at_the_same_instant_read_zero_not_a_division_by_zero():
    st = RateState(samples=((100.0, 0),), since=100.0)
    _, d = rate_step(st, Sample(10, 0.0), 100.0, 1, R, 1, 10, "acts")
    assert d.desired == 1 and d.reason == "kept acts at 1: 0.0 req/s over the last 0.0 s, target 10 per replica"


def test_rate_short_window_reads_spans_under_a_second():
    R1 = RatePolicy(policy="rate", target_rps_per_replica=10, window_seconds=1, scale_in_delay=10)
    st = RateState(samples=((99.2, 0),), since=99.2)
    _, d = rate_step(st, Sample(10, 0.0), 100.0, 1, R1, 1, 10, "acts")
    assert d.desired == 2 and d.reason.startswith("scaled acts 1\u21922: 12.5 req/s over the last 0.8 s")


@pytest.mark.parametrize("running, wanted, differs", [
    (None, None, False),
    (8443, None, True),       # the stack turned HTTPS off
    (None, 8443, True),       # ... or on
    (8443, 8443, False),
    (8443, 9443, True),       # another port
    (8443, 0, False),         # any port will do
])
def test_a_running_gateway_is_replaced_when_its_https_is_not_the_stacks(running, wanted, differs):
    from selfieless.gateway.tls import TlsSettings
    from selfieless.orchestrator.gateway_process import _tls_differs

    tls = None if wanted is None else TlsSettings(port=wanted)
    assert _tls_differs({"tls_port": running}, tls) is differs
