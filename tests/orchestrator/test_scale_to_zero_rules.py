"""Scale to zero's rules (pure): when the last replica may go, and when a held request wakes one."""

from __future__ import annotations

from selfieless.orchestrator.scale_to_zero import IdleState, floor, observe, wake
from selfieless.orchestrator.stack import RatePolicy


def rate(after=None) -> RatePolicy:
    return RatePolicy(policy="rate", target_rps_per_replica=10, scale_to_zero_after=after)


def test_observe_moves_only_when_the_count_moves_or_nothing_was_seen():
    s = observe(IdleState(), 0, 5.0)
    assert s == IdleState(0, 5.0)                   # first look: idle from now
    assert observe(s, 0, 9.0) is s                  # no new request: still idle since 5
    assert observe(s, 3, 9.0) == IdleState(3, 9.0)  # requests arrived: idle from 9
    assert observe(IdleState(3, 9.0), 3, 20.0) == IdleState(3, 9.0)


def test_floor_keeps_min_when_min_is_above_zero():
    assert floor(rate(30), 2, IdleState(0, 0.0), 1000.0) == 2
    assert floor(rate(None), 1, IdleState(), 0.0) == 1


def test_floor_reaches_zero_only_after_the_idle_period():
    p = rate(30)
    assert floor(p, 0, IdleState(), 100.0) == 1            # never seen a request: not idle yet
    assert floor(p, 0, IdleState(4, 100.0), 129.9) == 1    # 29.9 s idle
    assert floor(p, 0, IdleState(4, 100.0), 130.0) == 0    # exactly the period
    assert floor(p, 0, IdleState(4, 100.0), 500.0) == 0


def test_floor_without_scale_to_zero_after_is_zero_at_once():
    assert floor(rate(None), 0, IdleState(4, 100.0), 100.0) == 0


def test_wake_only_a_service_with_no_replica_and_a_held_request():
    assert wake(0, True) == 1
    assert wake(0, False) is None
    assert wake(1, True) is None
    assert wake(3, True) is None
