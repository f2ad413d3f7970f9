"""The interface of a reconcile mode, and the choice of one by the kind of driver.

The orchestrator (controller.py) keeps what both modes share: probing, the pool, scaling, the
gateway's callbacks, status. What differs is behind `Reconciler`:
- `PortReconciler` (reconcile_ports.py) for a PortDriver: the control plane starts every replica
  on a host port and replaces what breaks; rollouts port by port (rollout.py);
- `EngineReconciler` (reconcile_engine.py) for an EngineDriver: the engine runs the replicas, the
  control plane sets the count and follows; rollouts are the engine's (rollout_owned.py).
Another engine (Kubernetes) needs another EngineDriver only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Coroutine, Protocol

from .drivers.base import Driver, EngineDriver, PortDriver
from .reconcile_engine import EngineReconciler
from .reconcile_ports import PortReconciler
from .rollout_history import RolloutResult
from .service import ServiceRuntime
from .stack import ServiceSpec

if TYPE_CHECKING:
    from .controller import Orchestrator


class Reconciler(Protocol):
    async def adopt(self) -> None:
        """At start: take over what an earlier orchestrator left running."""

    def watchers(self) -> list[Coroutine]:
        """The loops that follow the driver's reports (exits, snapshots), run until shutdown."""

    def reconcile(self, svc: ServiceRuntime) -> None:
        """One pass for one service: move it toward its desired count (never blocks)."""

    async def roll(self, service: str, new_spec: ServiceSpec, *, reason: str, timeout: float,
                   rollback_spec: ServiceSpec | None = None) -> RolloutResult:
        """A rolling update of `service` to `new_spec`, this mode's way."""

    async def undo(self, service: str, to_spec: ServiceSpec, timeout: float) -> RolloutResult:
        """Back to `to_spec`, the spec before the last completed rollout."""

    async def restart(self, service: str, timeout: float) -> RolloutResult:
        """Every replica replaced by a fresh one of the same spec."""


def reconciler_for(orch: Orchestrator, driver: Driver) -> Reconciler:
    if isinstance(driver, PortDriver):
        return PortReconciler(orch, driver)
    if isinstance(driver, EngineDriver):
        return EngineReconciler(orch, driver)
    raise TypeError(f"{type(driver).__name__} is neither a PortDriver nor an EngineDriver")
