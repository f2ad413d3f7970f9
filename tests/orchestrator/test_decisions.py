"""Pure decisions: convergence plans, autoscaling policies, backoff, the replica state machine."""

import pytest

from selfieless.orchestrator.autoscale import (
    RateState,
    Sample,
    WindowState,
    rate_step,
    window_count,
    window_step,
)
from selfieless.orchestrator.backoff import BackoffPolicy, BackoffState, in_crash_loop, record_failure, record_ready
from selfieless.orchestrator.commands import CancelStart, ReplaceReplica, StartReplica, StopReplica
from selfieless.orchestrator.plan import PENDING, Slot, plan_service
from selfieless.orchestrator.replica import InvalidTransition, Replica, ReplicaState as S
from selfieless.orchestrator.stack import RatePolicy, WindowPolicy

PORTS = range(8000, 8010)


# --- plans -----------------------------------------------------------------------------------

def test_plan_from_nothing_starts_on_lowest_ports():
    acts = plan_service(3, [], PORTS)
    assert [(type(a), a.port) for a in acts] == [(StartReplica, 8000), (StartReplica, 8001), (StartReplica, 8002)]


def test_plan_converged_is_empty():
    slots = [Slot(8000, S.READY, "a"), Slot(8001, S.STARTING, "b")]
    assert plan_service(2, slots, PORTS) == []


def test_scale_out_fills_gaps_lowest_first():
    slots = [Slot(8000, S.READY, "a"), Slot(8002, S.READY, "c")]
    assert [a.port for a in plan_service(4, slots, PORTS)] == [8001, 8003]


def test_scale_in_removes_highest_ports_first_with_drain():
    slots = [Slot(p, S.READY, f"r{p}") for p in (8000, 8001, 8002, 8003)]
    acts = plan_service(1, slots, PORTS)
    assert [(type(a), a.replica_id, a.drain) for a in acts] == [(StopReplica, "r8003", True), (StopReplica, "r8002", True),
                                                                 (StopReplica, "r8001", True)]


def test_broken_replicas_replaced_on_same_port():
    slots = [Slot(8000, S.EXITED, "a"), Slot(8001, S.UNHEALTHY, "b"), Slot(8002, S.READY, "c")]
    acts = plan_service(3, slots, PORTS)
    assert acts == [ReplaceReplica("a", "replica is exited"), ReplaceReplica("b", "replica is unhealthy")]


def test_broken_replica_beyond_desired_is_stopped_without_drain():
    slots = [Slot(8000, S.READY, "a"), Slot(8001, S.EXITED, "b")]
    (a,) = plan_service(1, slots, PORTS)
    assert isinstance(a, StopReplica) and a.replica_id == "b" and not a.drain


def test_stopping_and_pending_ports_are_not_free():
    slots = [Slot(8000, S.STOPPING, "old"), Slot(8001, PENDING), Slot(8002, S.READY, "c")]
    acts = plan_service(3, slots, PORTS)
    # 8001 (pending) and 8002 count; one more is needed and 8000 is still held by the stopping one.
    assert acts == [StartReplica("current", 8003, "scale-out to 3: lowest free port")]


def test_pending_beyond_desired_is_cancelled():
    slots = [Slot(8000, S.READY, "a"), Slot(8001, PENDING)]
    assert plan_service(1, slots, PORTS) == [CancelStart(8001, "scale-in to 1")]


def test_plan_runs_out_of_ports_quietly():
    slots = [Slot(8000, S.READY, "a")]
    assert [a.port for a in plan_service(5, slots, range(8000, 8002))] == [8001]


# --- window policy ---------------------------------------------------------------------------

W = WindowPolicy(window_seconds=120, requests_per_replica=20)


def close(count, current=1, first=100.0, now=220.0, state=None, lo=1, hi=10):
    state = state or WindowState()
    return window_step(state, Sample(count, first), now, current, W, lo, hi, "acts", wall_now=0.0)


@pytest.mark.parametrize("n,expected", [(0, 1), (19, 1), (20, 2), (39, 2), (40, 3), (199, 10), (200, 10), (5000, 10)])
def test_window_boundaries(n, expected):
    _, d = close(n)
    assert d.desired == expected and d.count == n


def test_window_caps_at_min():
    _, d = close(0, current=4, lo=2)
    assert d.desired == 2


def test_no_window_before_first_request():
    st, d = window_step(WindowState(), Sample(0, None), 1e6, 1, W, 1, 10)
    assert d is None and st.window_start is None


def test_window_starts_at_first_request_not_at_start():
    # First request at t=100: the window ends at 220, not 120.
    st, d = close(25, now=219.999)
    assert d is None and st.window_start == 100.0
    assert window_count(st, Sample(25, 100.0)) == 25
    st, d = close(25, now=220.0)
    assert d.desired == 2 and d.window_end == 220.0


def test_windows_are_back_to_back_and_idle_goes_to_min():
    st, d = close(23, now=220.0)
    assert (d.desired, d.changes) == (2, True)
    assert "scaled acts 1\u21922: 23 requests in the window ending" in d.reason
    # Second window [220, 340): 45 more requests -> 3 replicas.
    st2, d = window_step(st, Sample(68, 100.0), 339.0, 2, W, 1, 10)
    assert d is None
    st2, d = window_step(st, Sample(68, 100.0), 340.0, 2, W, 1, 10, "acts")
    assert (d.count, d.desired, st2.window_start) == (45, 3, 340.0)
    # Third window idle -> back to min.
    st3, d = window_step(st2, Sample(68, 100.0), 460.0, 3, W, 1, 10, "acts")
    assert (d.count, d.desired) == (0, 1)
    assert "scaled acts 3\u21921: 0 requests" in d.reason


def test_late_sample_catches_up_window_by_window():
    st, d = close(30, now=470.0)  # three windows ended (220, 340, 460) before we looked
    assert d.desired == 2 and st.window_start == 220.0
    st, d = window_step(st, Sample(30, 100.0), 470.0, 2, W, 1, 10)
    assert d.desired == 1 and st.window_start == 340.0
    st, d = window_step(st, Sample(30, 100.0), 470.0, 1, W, 1, 10)
    assert d.desired == 1 and not d.changes and st.window_start == 460.0
    st, d = window_step(st, Sample(30, 100.0), 470.0, 1, W, 1, 10)
    assert d is None


# --- rate policy -----------------------------------------------------------------------------

R = RatePolicy(policy="rate", target_rps_per_replica=10, window_seconds=2, scale_in_delay=30)


def run_rate(points, current=1, state=None, lo=1, hi=10):
    """points: (time, count) samples; returns (state, decisions)."""
    state, out = state or RateState(), []
    for t, c in points:
        state, d = rate_step(state, Sample(c, 0.0), t, current, R, lo, hi, "acts")
        out.append(d)
        current = d.desired
    return state, out


def test_rate_scales_up_within_a_second_of_a_step():
    # Idle for 10 s, then 40 req/s from t=10.
    idle = [(t / 4, 0) for t in range(0, 41)]
    load = [(10 + t / 4, 10 * t) for t in range(1, 5)]
    _, ds = run_rate(idle + load)
    first_up = next(i for i, d in enumerate(ds) if d.desired > 1)
    assert (idle + load)[first_up][0] <= 10.5
    assert ds[-1].desired == 4


def test_rate_scale_in_waits_for_stabilisation():
    # 40 req/s for 10 s -> 4 replicas, then silence.
    busy = [(t / 4, 10 * t) for t in range(0, 41)]
    st, ds = run_rate(busy)
    assert ds[-1].desired == 4
    quiet = [(10 + t / 4, 400) for t in range(1, 200)]  # 50 s of silence
    _, ds2 = run_rate(quiet, current=4, state=st)
    first_down = next(i for i, d in enumerate(ds2) if d.desired < 4)
    t_down = quiet[first_down][0]
    assert 10 + 30 <= t_down <= 10 + 33, t_down
    assert ds2[-1].desired == 1 and "stable for 30 s" in ds2[first_down].reason


def test_rate_short_lull_does_not_scale_in():
    busy = [(t / 4, 10 * t) for t in range(0, 161)]           # 40 s at 40 req/s
    st, _ = run_rate(busy)
    lull = [(40 + t / 4, 1600) for t in range(1, 21)]          # 5 s of silence
    back = [(45 + t / 4, 1600 + 10 * t) for t in range(1, 21)]
    _, ds = run_rate(lull + back, current=4, state=st)
    assert all(d.desired == 4 for d in ds)


# --- backoff ---------------------------------------------------------------------------------

def test_backoff_first_failure_immediate_then_doubling_to_cap():
    st, delays = BackoffState(), []
    for i in range(10):
        st, d = record_failure(st, now=float(i))
        delays.append(d)
    assert delays == [0, 0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert in_crash_loop(st)


def test_backoff_starts_over_once_a_replica_became_healthy():
    st = BackoffState()
    for i in range(4):
        st, _ = record_failure(st, now=float(i))
    st = record_ready(st, now=10.0)
    st2, d = record_failure(st, now=10.1)  # crashed on request right after it became ready
    assert d == 0.0 and st2.failures == 1 and not in_crash_loop(st2)
    st3, d = record_failure(st2, now=11.0)  # its replacement died before becoming healthy
    assert d == 0.5


def test_replicas_crashed_after_serving_are_never_delayed():
    st, delays = BackoffState(), []
    for i in range(20):
        st = record_ready(st, now=float(i))
        st, d = record_failure(st, now=i + 0.5)
        delays.append(d)
    assert delays == [0.0] * 20 and not in_crash_loop(st)


def test_backoff_ready_keeps_first_healthy_time():
    st = record_ready(record_ready(BackoffState(), 5.0), 50.0)
    assert st.healthy_since == 5.0


def test_backoff_custom_policy():
    p = BackoffPolicy(initial=1, factor=3, maximum=5)
    st, out = BackoffState(), []
    for i in range(5):
        st, d = record_failure(st, float(i), p)
        out.append(d)
    assert out == [0, 1, 3, 5, 5]


# --- replica state machine -------------------------------------------------------------------

def test_replica_happy_path():
    r = Replica("acts-8000-1", "acts", 8000)
    for s in (S.READY, S.STOPPING, S.STOPPED):
        r.transition(s, "test")
    assert r.state == S.STOPPED and [h[0] for h in r.history] == [S.READY, S.STOPPING, S.STOPPED]


@pytest.mark.parametrize("path", [
    (S.READY, S.UNHEALTHY, S.STOPPING, S.STOPPED),
    (S.EXITED, S.STOPPED),
    (S.READY, S.EXITED, S.STOPPING, S.STOPPED),
    (S.UNHEALTHY, S.EXITED, S.STOPPING, S.STOPPED),
])
def test_replica_allowed_paths(path):
    r = Replica("x", "acts", 8000)
    for s in path:
        r.transition(s)


@pytest.mark.parametrize("path", [
    (S.STOPPED,),
    (S.READY, S.STARTING),
    (S.UNHEALTHY, S.READY),
    (S.STOPPING, S.READY),
    (S.STOPPING, S.STOPPED, S.STARTING),
])
def test_replica_forbidden_transitions(path):
    """Every step but the last is allowed; only the last one raises, and it changes nothing."""
    r = Replica("x", "acts", 8000)
    *allowed, forbidden = path
    for s in allowed:
        r.transition(s)
    before = (r.state, list(r.history))
    assert not r.can(forbidden)
    with pytest.raises(InvalidTransition):
        r.transition(forbidden)
    assert (r.state, r.history) == before


# The life cycle as the module docstring draws it: every pair of states, allowed or not.
LIFE = {
    S.STARTING: {S.READY, S.UNHEALTHY, S.EXITED, S.STOPPING},
    S.READY: {S.UNHEALTHY, S.EXITED, S.STOPPING},
    S.UNHEALTHY: {S.EXITED, S.STOPPING},
    S.EXITED: {S.STOPPING, S.STOPPED},
    S.STOPPING: {S.STOPPED},
    S.STOPPED: set(),
}


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
def test_replica_every_transition(old, new):
    r = Replica("x", "acts", 8000, state=old)
    assert r.can(new) == (new in LIFE[old])
    if new in LIFE[old]:
        r.transition(new, "why")
        assert r.state == new and r.history == [(new, "why")]
    else:
        with pytest.raises(InvalidTransition):
            r.transition(new)
        assert r.state == old and r.history == []


# --- health verdicts -------------------------------------------------------------------------

from selfieless.orchestrator.health import Verdict, verdict  # noqa: E402


def test_verdict_starting_replica_waits_for_grace():
    assert verdict(S.STARTING, True, 3, 1, 0.0, 1.0, 30.0) == (Verdict.BECAME_READY, 0)
    assert verdict(S.STARTING, False, 0, 1, 0.0, 29.9, 30.0) == (Verdict.STILL_STARTING, 1)
    assert verdict(S.STARTING, False, 5, 1, 0.0, 30.0, 30.0)[0] == Verdict.UNHEALTHY


def test_verdict_ready_replica_threshold():
    assert verdict(S.READY, False, 0, 1, 0, 100, 30) == (Verdict.UNHEALTHY, 1)
    assert verdict(S.READY, False, 0, 3, 0, 100, 30) == (Verdict.FAILING, 1)
    assert verdict(S.READY, False, 1, 3, 0, 100, 30) == (Verdict.FAILING, 2)
    assert verdict(S.READY, False, 2, 3, 0, 100, 30) == (Verdict.UNHEALTHY, 3)
    assert verdict(S.READY, True, 2, 3, 0, 100, 30) == (Verdict.RECOVERED, 0)
    assert verdict(S.READY, True, 0, 3, 0, 100, 30) == (Verdict.HEALTHY, 0)
