"""The life of one replica as an explicit state machine.

    starting -> ready -> unhealthy | exited -> stopping -> stopped

Every allowed transition is listed in ALLOWED; anything else raises, so a bug in the runtime shows
up as an error instead of a replica silently stuck in an impossible state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class ReplicaState(str, enum.Enum):
    STARTING = "starting"    # process/container created, not yet answered a probe
    READY = "ready"          # passed a probe; in the gateway pool
    UNHEALTHY = "unhealthy"  # failed probes (or never became ready in time); to be replaced
    EXITED = "exited"        # the process/container is gone; to be replaced
    STOPPING = "stopping"    # leaving on purpose: draining, then being stopped
    STOPPED = "stopped"      # gone; the record is about to be forgotten


S = ReplicaState

ALLOWED: dict[ReplicaState, frozenset[ReplicaState]] = {
    # A starting replica may fail its start grace (unhealthy) or die before its first probe.
    S.STARTING: frozenset({S.READY, S.UNHEALTHY, S.EXITED, S.STOPPING}),
    S.READY: frozenset({S.UNHEALTHY, S.EXITED, S.STOPPING}),
    S.UNHEALTHY: frozenset({S.EXITED, S.STOPPING}),
    S.EXITED: frozenset({S.STOPPING, S.STOPPED}),
    # The exit that a stop provokes is expected and not a separate state.
    S.STOPPING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}

# States in which a replica holds its host port and counts toward the service's actual replicas.
LIVE = frozenset({S.STARTING, S.READY})
# States in which the runtime must replace it (if the service still wants a replica on that port).
BROKEN = frozenset({S.UNHEALTHY, S.EXITED})


class InvalidTransition(RuntimeError):
    pass


@dataclass
class Replica:
    """The control plane's record of one replica (mutable; owned by the runtime)."""

    id: str
    service: str
    port: int
    handle: Any = None
    state: ReplicaState = S.STARTING
    started_at: float = 0.0          # monotonic
    ready_at: float | None = None    # monotonic, first successful probe
    adopted: bool = False
    joined: bool = False             # added to the gateway pool, not removed (only pool.py sets it)
    consecutive_failures: int = 0
    last_probe_ok: bool | None = None
    last_probe_at: float | None = None
    last_error: str | None = None
    db_connections: int | None = None  # held to its server database, as it last reported
    restarts: int = 0                # how many replicas came before this one on the same port
    history: list[tuple[ReplicaState, str]] = field(default_factory=list)

    def transition(self, new: ReplicaState, reason: str = "") -> None:
        if new not in ALLOWED[self.state]:
            raise InvalidTransition(f"{self.id}: {self.state.value} -> {new.value} is not allowed ({reason})")
        self.state = new
        self.history.append((new, reason))

    def can(self, new: ReplicaState) -> bool:
        return new in ALLOWED[self.state]

    @property
    def health(self) -> str:
        if self.last_probe_ok is None:
            return "unknown"
        return "passing" if self.last_probe_ok else "failing"
