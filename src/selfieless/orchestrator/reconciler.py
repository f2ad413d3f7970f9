"""The interface of a reconcile mode, and what a mode uses of the orchestrator.

The orchestrator (controller.py) keeps what both modes share: probing, the pool, scaling, the
gateway's callbacks, status; `Core` is what of it the modes use. What differs is behind
`Reconciler`, and the orchestrator picks one by the kind of driver it is given:
- `PortReconciler` (reconcile_ports.py) for a PortDriver: the control plane starts every replica
  on a host port and replaces what breaks; rollouts port by port (rollout.py);
- `EngineReconciler` (reconcile_engine.py) for an EngineDriver: the engine runs the replicas, the
  control plane sets the count and follows; rollouts are the engine's (rollout_owned.py).
Another engine (Kubernetes) needs another EngineDriver only.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Coroutine, Protocol

from . import lifecycle
from .backoff import BackoffPolicy
from .drivers.base import LaunchSpec
from .events import EventLog
from .pool import Pool
from .probing import Probing
from .rollout_history import RolloutResult
from .service import ServiceRuntime
from .stack import ServiceSpec


class Core(Protocol):
    """What a reconciler and the executor use of the orchestrator (controller.Orchestrator)."""

    services: dict[str, ServiceRuntime]
    events: EventLog
    probing: Probing
    pool: Pool
    backoff_policy: BackoffPolicy
    mono: Callable[[], float]
    wall: Callable[[], float]

    def wake(self) -> None: ...

    def run_loop(self, coro: Coroutine[Any, Any, Any], name: str) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> Awaitable: ...

    def blocked(self, svc: ServiceRuntime) -> bool: ...

    def launch_spec(self, svc: ServiceRuntime, port: int) -> LaunchSpec: ...

    def carry_out(self, svc: ServiceRuntime, rep: Any, step: lifecycle.Step) -> None: ...

    def replica_exited(self, service: str, replica_id: str, reason: str) -> None: ...


class Reconciler(Protocol):
    async def begin(self, adopt: bool) -> None:
        """At start: follow the driver's reports (exits, snapshots) until shutdown (Core.run_loop),
        and with `adopt`, take over what an earlier orchestrator left running."""

    def reconcile(self, svc: ServiceRuntime) -> None:
        """One pass for one service: move it toward its desired count (never blocks)."""

    async def roll(self, service: str, new_spec: ServiceSpec, *, reason: str, timeout: float,
                   rollback_spec: ServiceSpec | None = None) -> RolloutResult:
        """A rolling update of `service` to `new_spec`, this mode's way."""

    async def undo(self, service: str, to_spec: ServiceSpec, timeout: float) -> RolloutResult:
        """Back to `to_spec`, the spec before the last completed rollout."""

    async def restart(self, service: str, timeout: float) -> RolloutResult:
        """Every replica replaced by a fresh one of the same spec."""
