"""Scale to zero for the `rate` policy (replicas.min 0 with `scale_to_zero_after`), pure.

The rate policy alone would drop to zero replicas after `scale_in_delay` of no traffic; with
scale to zero the last replica goes only after `scale_to_zero_after` seconds without a single
request, and a request that finds no ready replica (the gateway holds it and calls back) brings
one back at once. The course `window` policy never goes below one (stack.py refuses min 0 there).
"""

from __future__ import annotations

from dataclasses import dataclass

from .stack import RatePolicy


@dataclass(frozen=True)
class IdleState:
    last_count: int = 0
    last_request_at: float | None = None   # monotonic; None: no request seen since start


def observe(state: IdleState, count: int, now: float) -> IdleState:
    """Track when the service last received a request (its counter moved)."""
    if count != state.last_count or state.last_request_at is None:
        return IdleState(count, now)
    return state


def floor(policy: RatePolicy, min_replicas: int, state: IdleState, now: float) -> int:
    """The lowest count the autoscaler may choose now: 0 only after the idle period."""
    if min_replicas > 0:
        return min_replicas
    after = policy.scale_to_zero_after
    if after is None:
        return 0
    idle_since = state.last_request_at
    return 0 if idle_since is not None and now - idle_since >= after else 1


def wake(current: int, held: bool) -> int | None:
    """A held request for a service with no replica: the count to scale to (None: nothing to do)."""
    return 1 if held and current == 0 else None


def woken(count: int, now: float, hold_for: float) -> IdleState:
    """The idle state right after a held request woke the service.

    A held request is not counted until a replica answers it, so it counts as a request that lasts
    as long as the gateway may hold it (`hold_for`, its `no_replica_wait`): the idle period, and
    with it the way back to zero, starts only after that. Otherwise a replica slower to become
    ready than `scale_to_zero_after` would be stopped again while the requests that woke it wait.
    Once a replica answers them, the counter moves and `observe` starts the period from then.
    """
    return IdleState(count, now + hold_for)
