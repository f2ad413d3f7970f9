"""The desired counts (scaling.py): a manual scale and scale from zero, with a fixed clock and
counters; no gateway, no driver."""

import asyncio

import pytest

from selfieless.orchestrator import autoscale as auto
from selfieless.orchestrator.events import EventLog
from selfieless.orchestrator.scaling import Scaling
from selfieless.orchestrator.service import ServiceRuntime
from selfieless.orchestrator.stack import parse_stack


def service(replicas, autoscale, dependency=False):
    stack = parse_stack({"name": "s", "driver": "process", "services": {"echo": {
        "command": ["echo", "{port}"], "host_ports": "9000-9003", "routes": ["/"],
        "replicas": replicas, "autoscale": autoscale}}})
    spec = stack.services["echo"]
    return ServiceRuntime("echo", spec, spec.replicas.start_count, dependency=dependency)


def scaling():
    events, changed = EventLog(), asyncio.Event()
    return Scaling(events, changed, lambda name: auto.Sample(7, None), lambda: 100.0, lambda: 0.0), events, changed


RATE = {"policy": "rate", "target_rps_per_replica": 5}


def test_a_manual_scale_sets_the_count_restarts_stabilisation_and_says_so():
    sc, events, changed = scaling()
    svc = service({"initial": 1, "min": 1, "max": 4}, RATE)
    sc.scale(svc, 3, "manual scale (admin API)")
    assert svc.desired == 3 and changed.is_set()
    assert svc.rate.since == 100.0
    assert svc.last_decision == "scaled echo 1\u21923: manual scale (admin API)"
    assert [(e.kind, e.reason) for e in events.since(0)] == [("scaled", svc.last_decision)]


@pytest.mark.parametrize("n, dependency, error", [
    (0, False, "echo: replicas must be between 1 and 4 (replicas.min and replicas.max in the stack)"),
    (5, False, "echo: replicas must be between 1 and 4 (replicas.min and replicas.max in the stack)"),
    (2, True, "echo is a dependency: it always runs exactly one replica"),
])
def test_a_manual_scale_out_of_bounds_changes_nothing(n, dependency, error):
    sc, events, changed = scaling()
    svc = service({"initial": 1, "min": 1, "max": 4}, RATE, dependency=dependency)
    with pytest.raises(ValueError) as e:
        sc.scale(svc, n, "manual")
    assert str(e.value) == error
    assert svc.desired == 1 and not changed.is_set() and len(events) == 0


@pytest.mark.parametrize("replicas, autoscale, desired, rollout, wakes", [
    ({"initial": 0, "min": 0, "max": 3}, RATE, 0, None, True),
    ({"initial": 1, "min": 0, "max": 3}, RATE, 1, None, False),          # a replica is already wanted
    ({"initial": 1, "min": 1, "max": 3}, RATE, 0, None, False),          # min 1: never scaled to zero
    ({"initial": 0, "min": 0, "max": 3}, RATE, 0, "rollout 2", False),   # a rollout owns the replicas
])
def test_scale_from_zero(replicas, autoscale, desired, rollout, wakes):
    sc, events, changed = scaling()
    svc = service(replicas, autoscale)
    svc.desired, svc.rollout_owner = desired, rollout
    sc.wake_from_zero(svc, hold_for=10.0)
    assert (svc.desired == 1 and changed.is_set()) == wakes
    if wakes:
        assert svc.idle.last_count == 7 and svc.idle.last_request_at == 110.0  # counted as active until the hold ends
        assert [e.reason for e in events.since(0)] == ["scaled echo 0\u21921: a request is waiting (scale from zero)"]
    else:
        assert svc.desired == desired and len(events) == 0


# --- apply: the autoscaler's state carries over (autoscale.carry_over) ---------------------------

WINDOW = {"policy": "window", "window_seconds": 10, "requests_per_replica": 20}


def policy(autoscale):
    return service({"initial": 1, "min": 1, "max": 4}, autoscale).spec.autoscale


def test_an_unchanged_window_policy_keeps_the_current_window_and_replays_nothing():
    # First request at 0; the window 0-10 closed (1 request); 10-20 runs with 15 requests so far.
    pol = policy(WINDOW)
    ws, d = auto.window_step(auto.WindowState(), auto.Sample(1, 0.0), 10.0, 1, pol, 1, 4)
    assert d is not None and ws == auto.WindowState(10.0, 1)
    # `scale echo 4`, then an apply changes only replicas.max: the state goes on as it was.
    window, rate = auto.carry_over(pol, pol, ws, auto.RateState(), auto.Sample(16, 0.0), 12.0)
    assert window == ws
    assert auto.window_step(window, auto.Sample(16, 0.0), 12.0, 4, pol, 1, 4)[1] is None
    # ...and the window ends when it would have, counting what it counted before the apply.
    d = auto.window_step(window, auto.Sample(31, 0.0), 20.0, 4, pol, 1, 4)[1]
    assert (d.count, d.desired, d.window_end) == (30, 2, 20.0)


@pytest.mark.parametrize("seconds, now, start, closes_at", [
    (30, 12.0, 10.0, 40.0),   # longer: the current window goes on to its new end
    (5, 12.0, 10.0, 15.0),    # shorter, not yet over: ends at start + 5
    (1, 12.0, 11.0, 12.0),    # shorter and already over: ends now, one decision, not two
])
def test_a_new_window_length_applies_to_the_current_window(seconds, now, start, closes_at):
    old, new = policy(WINDOW), policy({**WINDOW, "window_seconds": seconds})
    window, _ = auto.carry_over(old, new, auto.WindowState(10.0, 1), auto.RateState(), auto.Sample(16, 0.0), now)
    assert window == auto.WindowState(start, 1)
    window, d = auto.window_step(window, auto.Sample(16, 0.0), closes_at, 4, new, 1, 4)
    assert d is not None and d.count == 15 and d.window_end == closes_at
    assert auto.window_step(window, auto.Sample(16, 0.0), closes_at, d.desired, new, 1, 4)[1] is None


@pytest.mark.parametrize("first_request_at, expected", [
    (None, auto.WindowState()),               # nothing counted yet: the first request starts it
    (3.0, auto.WindowState(50.0, 40)),        # traffic before: the first window starts now
])
def test_a_service_new_to_the_window_policy_starts_its_first_window_now(first_request_at, expected):
    window, _ = auto.carry_over(policy(RATE), policy(WINDOW), auto.WindowState(), auto.RateState(),
                                auto.Sample(40, first_request_at), 50.0)
    assert window == expected
    assert auto.window_step(window, auto.Sample(40, first_request_at), 59.0, 3, policy(WINDOW), 1, 4)[1] is None


def test_rate_state_carries_over_and_a_new_target_restarts_stabilisation():
    pol = policy({**RATE, "scale_in_delay": 30})
    held = auto.RateState(samples=((1.0, 5), (2.0, 9)), recommendations=((2.0, 3),), since=1.5)
    # Only the bounds changed: the samples, the recommendations and a manual count's hold stay.
    assert auto.carry_over(pol, pol, auto.WindowState(), held, auto.Sample(9, 0.0), 2.5)[1] == held
    # Another target: the old recommendations mean nothing now; scale-in waits a full delay again.
    other = policy({**RATE, "scale_in_delay": 30, "target_rps_per_replica": 50})
    assert auto.carry_over(pol, other, auto.WindowState(), held, auto.Sample(9, 0.0), 2.5)[1] == \
        auto.RateState(samples=held.samples, since=2.5)
    # New to the rate policy: no scale-in before scale_in_delay.
    assert auto.carry_over(policy(WINDOW), pol, auto.WindowState(1.0, 0), auto.RateState(),
                           auto.Sample(9, 0.0), 2.5)[1] == auto.RateState(since=2.5)


def test_a_manual_count_holds_through_an_apply_under_the_rate_policy():
    # `scale echo 3`, then an apply of a new max: the count is not taken back at the next sample.
    pol = policy({**RATE, "scale_in_delay": 30})
    sc, _, _ = scaling()  # its clock reads 100
    svc = service({"initial": 1, "min": 1, "max": 4}, {**RATE, "scale_in_delay": 30})
    sc.scale(svc, 3, "manual")
    sc.carry_over(svc, pol)
    svc.rate, d = auto.rate_step(svc.rate, auto.Sample(7, None), 110.0, svc.desired, pol, 1, 4, "echo")
    assert d.desired == 3
