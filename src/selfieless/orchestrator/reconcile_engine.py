"""The engine-owned reconcile mode (an EngineDriver: swarm): the engine starts, places and replaces
the replicas; the control plane sets each service's count and keeps its records in step with what
the engine reports running. Decisions in driver_owned.py.

- at start, adoption: the services the engine already runs for this stack carry on with their
  counts (lifecycle.adopted_count);
- each pass: a broken record is forgotten (the engine replaces the replica), and the desired count
  is sent when it changed (driver_owned.count_to_set), not while a rollout holds the service;
- the driver's snapshots: new replicas are probed and join the pool after their first passing
  probe, vanished ones have exited, leaving ones (an update's old side) are drained, and a task
  forgotten as broken that stays silent is ended so the engine replaces it;
- rolling updates: the engine's own, followed by rollout_owned.py.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from . import driver_owned
from . import lifecycle
from . import rollout_owned
from .drivers.base import EngineDriver, ReplicaHandle
from .executor import Executor
from .reconciler import Core
from .replica import LIVE, Replica, ReplicaState as S
from .rollout_history import RolloutResult
from .service import ServiceRuntime
from .stack import ServiceSpec

log = logging.getLogger(__name__)


@dataclass
class EngineCount:
    """One service's count as the engine knows it."""

    applied: int | None = None   # the count the engine last accepted (None: not created yet)
    applying: bool = False       # a count is being sent


class EngineReconciler:
    def __init__(self, orch: Core, driver: EngineDriver, executor: Executor):
        self.orch = orch   # (a rollout is handed the orchestrator itself)
        self.driver = driver
        self.executor = executor
        self.counts: dict[str, EngineCount] = {}
        # Tasks silent since (driver_owned.silent_tasks).
        self._silence = driver_owned.Silence({}, {}, [])
        self._forgotten: list[str] = []

    async def begin(self, adopt: bool) -> None:
        if adopt:
            await self._adopt()
        self.orch.run_loop(self._watch_snapshots(), "orchestrator-snapshots")

    def _count(self, svc: ServiceRuntime) -> EngineCount:
        return self.counts.setdefault(svc.name, EngineCount())

    async def _adopt(self) -> None:
        """Services the engine already runs for this stack: carry on with their counts."""
        counts = await self.driver.replica_counts()
        for svc in self.orch.services.values():
            n = lifecycle.adopted_count(counts.get(svc.name), svc.spec.replicas.min, svc.spec.replicas.max,
                                        svc.dependency)
            if n is None:
                continue
            svc.desired = n
            self._count(svc).applied = counts[svc.name]
            self.orch.events.emit("adopted", svc.name, None, f"found running with {counts[svc.name]} replica(s); "
                                                             f"carrying on with {svc.desired}")

    def reconcile(self, svc: ServiceRuntime) -> None:
        orch = self.orch
        for rid in driver_owned.to_forget({r.id: r.state for r in svc.replicas.values()}):
            rep = svc.replicas[rid]
            if rep.state != S.EXITED:
                self._forgotten.append(rid)   # still running, maybe: watched for silence
            self.executor.retire(svc, rep, f"forgotten: {rep.last_error or 'broken'}; the {self.driver.name} "
                                           f"engine replaces it", drain=False, quiet=True,
                                 why="left to the driver to replace")
        count = self._count(svc)
        if count.applied is None and orch.blocked(svc):
            return  # first creation waits for the dependencies, as a first start does
        if svc.rollout_owner is not None:
            return  # the engine is rolling the service (rollout_owned.py); a count change waits
        n = driver_owned.count_to_set(svc.desired, count.applied, count.applying)
        if n is not None:
            count.applying = True
            orch.spawn(self._send_count(svc, count, n))

    async def _send_count(self, svc: ServiceRuntime, count: EngineCount, n: int) -> None:
        try:
            await self.driver.set_replicas(self.orch.launch_spec(svc, 0), n)
            count.applied = n
            self.orch.events.emit("start" if n else "stopped", svc.name, None,
                                  f"the {self.driver.name} engine runs {n} replica(s) of it now")
        except Exception as e:
            self.orch.events.emit("backoff", svc.name, None, f"cannot set {n} replica(s): {e}; retry in 1 s")
            await asyncio.sleep(1.0)
        finally:
            count.applying = False
            self.orch.wake()

    # --- rolling updates: the engine's own --------------------------------------------------------

    async def roll(self, service: str, new_spec: ServiceSpec, *, reason: str, timeout: float,
                   rollback_spec: ServiceSpec | None = None) -> RolloutResult:
        # (rollback_spec: the engine keeps the previous spec itself.)
        return await rollout_owned.roll(self.orch, service, new_spec, reason=reason, timeout=timeout)

    async def undo(self, service: str, to_spec: ServiceSpec, timeout: float) -> RolloutResult:
        return await rollout_owned.undo(self.orch, service, to_spec, timeout=timeout)

    async def restart(self, service: str, timeout: float) -> RolloutResult:
        return await rollout_owned.roll(self.orch, service, self.orch.services[service].spec,
                                        reason="rollout restart", timeout=timeout, how="restart")

    # --- what the engine reports ------------------------------------------------------------------

    async def _watch_snapshots(self) -> None:
        async for handles in self.driver.snapshots():
            try:
                self._apply_snapshot(handles)
            except Exception:
                log.exception("applying the driver's snapshot failed")

    def _apply_snapshot(self, handles: list[ReplicaHandle]) -> None:
        orch = self.orch
        by_service: dict[str, list[ReplicaHandle]] = {name: [] for name in orch.services}
        for h in handles:
            if h.service in by_service:
                by_service[h.service].append(h)
        self._end_silent({h.id: h for h in handles})
        for name, found in by_service.items():
            svc = orch.services[name]
            for h in found:
                rep = svc.replicas.get(h.id)
                if h.leaving and rep is not None and rep.state in LIVE and rep.can(S.STOPPING):
                    # The engine is shutting it down (the old side of an update, a scale-in):
                    # out of the pool now, in-flight requests finish.
                    self.executor.retire(svc, rep, f"the {self.driver.name} engine is shutting its task down",
                                         drain=True, why="the engine is shutting its task down")
            ids = {h.id: h for h in found if not h.leaving}
            ch = driver_owned.snapshot_changes({r.id: r.state for r in svc.replicas.values()}, list(ids))
            for rid in ch.gone:
                orch.replica_exited(name, rid, "no longer running (its task ended or its node is down)")
            for rid in ch.new:
                h = ids[rid]
                rep = Replica(id=rid, service=name, port=h.port, handle=h, started_at=orch.mono())
                svc.replicas[rid] = rep
                orch.events.emit("start", name, rid, f"running: {h.detail}")
                orch.probing.start(svc, rep)

    def _end_silent(self, reported: dict[str, ReplicaHandle]) -> None:
        """Tasks forgotten as broken that the driver still lists, silent for too long: end them
        (a paused task, which Swarm never replaces by itself)."""
        orch = self.orch
        ready = {r.id for svc in orch.services.values() for r in svc.replicas.values() if r.state == S.READY}
        s = driver_owned.silent_tasks(self._silence.since, self._silence.ending, self._forgotten, set(reported),
                                      ready, orch.mono())
        self._forgotten = []
        self._silence = s
        for rid in s.end:
            h = reported[rid]
            orch.events.emit("replaced", h.service, rid, f"silent for {orch.mono() - s.since[rid]:.0f} s and "
                                                         f"still running: ending it so the {self.driver.name} "
                                                         f"engine replaces it")
            orch.spawn(self._end_replica(h))

    async def _end_replica(self, h: ReplicaHandle) -> None:
        try:
            what = await self.driver.end(h)
            log.info("ended %s: %s", h.id, what)
        except Exception as e:
            self.orch.events.emit("backoff", h.service, h.id, f"cannot end it: {e}; retry in "
                                                              f"{driver_owned.END_RETRY:g} s")
