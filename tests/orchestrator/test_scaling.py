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
    sc.wake_from_zero(svc)
    assert (svc.desired == 1 and changed.is_set()) == wakes
    if wakes:
        assert svc.idle.last_count == 7 and svc.idle.last_request_at == 100.0
        assert [e.reason for e in events.since(0)] == ["scaled echo 0\u21921: a request is waiting (scale from zero)"]
    else:
        assert svc.desired == desired and len(events) == 0
