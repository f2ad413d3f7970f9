"""Convergence plans: what to do to bring one service from its actual replicas to the desired count.

A pure function of (desired, what exists, port range), answered in commands.py's vocabulary. The
executor (executor.py) carries the plan out; computing it
first (as docker compose does) keeps the decision testable and explainable.

Rules:
- the replicas kept are those on the lowest ports; scale-in stops the highest ports first, and a
  replica leaving on purpose is drained (out of rotation, in-flight requests finish) before it stops;
- a kept replica that is broken (unhealthy or exited) is replaced on the same host port;
- scale-out starts replicas on the lowest free ports of the range;
- replicas already on their way (stopping, or a restart waiting for its backoff) are left alone,
  and their ports are not free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .commands import CancelStart, Command, ReplaceReplica, StartReplica, StopReplica
from .replica import BROKEN, LIVE, ReplicaState

PENDING = "pending"  # a start is scheduled on this port (backoff, or start in progress)


@dataclass(frozen=True)
class Slot:
    """What occupies one host port of a service right now."""

    port: int
    state: ReplicaState | str     # a ReplicaState, or PENDING
    replica_id: str = ""          # none for a pending start


def plan_service(desired: int, slots: Iterable[Slot], ports: Iterable[int]) -> list[Command]:
    """Commands (commands.py) that move one service toward `desired` replicas. Empty when converged."""
    slots = sorted(slots, key=lambda s: s.port)
    ports = list(ports)
    # Slots that count: live replicas, broken ones (they will be replaced in place), and pending
    # starts. Stopping/stopped replicas are already leaving and do not count.
    counted = [s for s in slots if s.state in LIVE or s.state in BROKEN or s.state == PENDING]
    keep, extra = counted[:desired], counted[desired:]
    actions: list[Command] = []
    for s in reversed(extra):  # highest ports first
        if s.state == PENDING:
            actions.append(CancelStart(s.port, f"scale-in to {desired}"))
        else:
            # A broken replica has nothing worth draining.
            actions.append(StopReplica(s.replica_id, drain=s.state in LIVE,
                                       reason=f"scale-in to {desired}: highest port first"))
    for s in keep:
        if s.state in BROKEN:
            actions.append(ReplaceReplica(s.replica_id, reason=f"replica is {_name(s.state)}"))
    missing = desired - len(keep)
    if missing > 0:
        busy = {s.port for s in slots}  # stopping replicas still hold their port
        for port in [p for p in ports if p not in busy][:missing]:
            actions.append(StartReplica("current", port, reason=f"scale-out to {desired}: lowest free port"))
    return actions


def _name(state: ReplicaState | str) -> str:
    return state.value if isinstance(state, ReplicaState) else str(state)
