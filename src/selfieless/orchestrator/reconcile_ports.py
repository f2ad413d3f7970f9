"""The port-owned reconcile mode (a PortDriver: process, docker): the control plane starts every
replica itself, on a host port of the service's range, and replaces what breaks.

- at start, adoption: what the driver lists is triaged (lifecycle.triage: kept, or a stray or
  duplicate to stop), each kept replica probed once, and lifecycle.found decides its state;
- the driver's exit events: lifecycle.exited;
- each pass: desired vs actual -> a convergence plan (plan.py) over the ports no other program
  holds (taken_ports.py) -> the executor (executor.py);
- rolling updates: the per-port state machine (rollout.py), carried out by rollout_exec.py.
"""

from __future__ import annotations

import asyncio
import logging

from . import lifecycle
from . import rollout_exec
from . import taken_ports
from .drivers.base import PortDriver
from .executor import Executor, pid_text
from .reconciler import Core
from .replica import Replica, ReplicaState as S
from .rollout_history import RolloutResult
from .service import ServiceRuntime
from .stack import ServiceSpec

log = logging.getLogger(__name__)

# A replica found running but not wanted (adoption) only has to free its port quickly.
REPLACE_GRACE = 1.0


class PortReconciler:
    def __init__(self, orch: Core, driver: PortDriver, executor: Executor):
        self.orch = orch   # (a rollout is handed the orchestrator itself)
        self.driver = driver
        self.executor = executor

    async def begin(self, adopt: bool) -> None:
        # Exits are followed from the start: a replica found running may exit while it is probed.
        self.orch.run_loop(self._watch_exits(), "orchestrator-exits")
        if adopt:
            await self._adopt()

    def reconcile(self, svc: ServiceRuntime) -> None:
        if self.orch.blocked(svc):
            return
        commands, no_port = taken_ports.place(svc.name, svc.desired, svc.slots(), svc.spec.host_ports.ports,
                                              svc.taken, self.orch.mono())
        if no_port != svc.no_port:
            svc.no_port = no_port
            if no_port:
                self.orch.events.emit("port", svc.name, None, no_port)
        for cmd in commands:
            self.executor.execute(svc, cmd)

    # --- rolling updates: ours, port by port -----------------------------------------------------

    async def roll(self, service: str, new_spec: ServiceSpec, *, reason: str, timeout: float,
                   rollback_spec: ServiceSpec | None = None) -> RolloutResult:
        return await rollout_exec.roll_ports(self.orch, service, new_spec, reason=reason, timeout=timeout,
                                             rollback_spec=rollback_spec)

    async def undo(self, service: str, to_spec: ServiceSpec, timeout: float) -> RolloutResult:
        return await self.roll(service, to_spec, reason="rollout undo", timeout=timeout)

    async def restart(self, service: str, timeout: float) -> RolloutResult:
        return await self.roll(service, self.orch.services[service].spec, reason="rollout restart", timeout=timeout)

    # --- exits ------------------------------------------------------------------------------------

    async def _watch_exits(self) -> None:
        async for ev in self.driver.exits():
            try:
                self.orch.replica_exited(ev.service, ev.replica_id, ev.reason)
            except Exception:
                log.exception("handling exit of %s failed", ev.replica_id)

    # --- adoption ---------------------------------------------------------------------------------

    async def _adopt(self) -> None:
        """Carry on with the replicas an earlier orchestrator left running."""
        orch = self.orch
        adopted = await self._take_over()
        results = await asyncio.gather(*(orch.probing.once(svc, rep) for svc, rep in adopted))
        for (svc, rep), ok in zip(adopted, results):
            if rep.state != S.STARTING:
                continue  # exited while we were probing
            what = f"found running on port {rep.port}{pid_text(rep.handle)}"
            step = lifecycle.found(svc.facts(rep), ok, svc.rules(), orch.mono(), what)
            orch.carry_out(svc, rep, step)
            if step.probe_again:
                orch.probing.start(svc, rep)
        for svc in orch.services.values():
            if not svc.dependency:
                orch.pool.forget_others(svc.name, set(svc.replicas))
            n = lifecycle.adopted_count(sum(1 for r in svc.replicas.values() if r.adopted) or None,
                                        svc.spec.replicas.min, svc.spec.replicas.max, svc.dependency)
            if n is not None:
                svc.desired = n   # carry on with what was running rather than the initial count

    async def _take_over(self) -> list[tuple[ServiceRuntime, Replica]]:
        """Records for the replicas found running that the stack wants; the others are stopped."""
        orch = self.orch
        handles = sorted(await self.driver.list(), key=lambda h: h.started_at)
        unwanted = lifecycle.triage([(h.service, h.port) for h in handles],
                                    {name: svc.spec.host_ports.ports for name, svc in orch.services.items()})
        adopted: list[tuple[ServiceRuntime, Replica]] = []
        for h, why in zip(handles, unwanted):
            if why is not None:
                await self.driver.stop(h, grace=REPLACE_GRACE)
                orch.events.emit("stopped", h.service, h.id, why)
                continue
            svc = orch.services[h.service]
            await self.driver.adopt(h)
            # started_at is wall clock; translate to our monotonic clock for the start grace.
            age = max(0.0, orch.wall() - h.started_at)
            rep = Replica(id=h.id, service=svc.name, port=h.port, handle=h, adopted=True,
                          started_at=orch.mono() - age)
            svc.replicas[rep.id] = rep
            adopted.append((svc, rep))
        return adopted
