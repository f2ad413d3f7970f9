"""Carries out the commands about replicas (commands.py), whoever decided them.

The one place that starts a replica and records it, takes one out of rotation and stops it,
replaces a broken one on its port after the crash-loop backoff, and cancels a scheduled start. The
reconcilers (reconcile_ports.py, reconcile_engine.py), the rollouts and the shutdown all go through
it, so a replica always leaves the same way: out of the pool (drained when asked), its probes
stopped, the driver's stop, and the record forgotten.

With an engine that runs the replicas itself (an EngineDriver) there is no driver to start or stop
one: only `retire` is used, and it ends at the pool and the record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from . import lifecycle
from . import taken_ports
from .backoff import BackoffState
from .commands import CancelStart, Command, ReplaceReplica, StartReplica, StopReplica
from .drivers.base import DriverError, PortDriver, ReplicaHandle
from .drivers.port_holder import PortTaken
from .reconciler import Core
from .replica import Replica, ReplicaState as S
from .service import ScheduledStart, ServiceRuntime
from .stack import ServiceSpec

log = logging.getLogger(__name__)


class Executor:
    def __init__(self, orch: Core, driver: PortDriver | None):
        self.orch = orch
        self.driver = driver   # None: the engine starts and stops replicas itself

    def execute(self, svc: ServiceRuntime, cmd: Command) -> None:
        """Carry out one command of the reconciler's plan (plan.py)."""
        if isinstance(cmd, StartReplica):
            self._schedule_start(svc, cmd.port, delay=0.0, reason=cmd.reason)
        elif isinstance(cmd, StopReplica):
            self.retire(svc, svc.replicas[cmd.replica_id], cmd.reason, drain=cmd.drain)
        elif isinstance(cmd, ReplaceReplica):
            self._replace(svc, svc.replicas[cmd.replica_id], cmd.reason)
        elif isinstance(cmd, CancelStart):
            p = svc.pending.get(cmd.port)
            if p is not None and not p.committed:
                p.task.cancel()
                del svc.pending[cmd.port]

    # --- taking a replica out -------------------------------------------------------------------

    def retire(self, svc: ServiceRuntime, rep: Replica, reason: str, *, drain: bool, grace: float | None = None,
               quiet: bool = False, why: str | None = None) -> asyncio.Task:
        """Take `rep` out of rotation (draining it first when `drain` and it serves) and stop it
        (`grace`: how long the driver waits before killing it; default the service's drain
        timeout). `why`: the reason recorded for its state change when it differs from `reason`;
        `quiet`: no "stopped" event (the caller says what happened)."""
        if rep.can(S.STOPPING):
            rep.transition(S.STOPPING, why or reason)
        self.orch.probing.stop(rep)
        return self.orch.spawn(self._stop(svc, rep, drain and self.orch.pool.in_rotation(rep), reason, grace, quiet))

    async def _stop(self, svc: ServiceRuntime, rep: Replica, drain: bool, reason: str, grace: float | None,
                    quiet: bool) -> None:
        orch = self.orch
        try:
            if drain:
                t0 = orch.mono()
                ok = await orch.pool.drain(rep, timeout=svc.spec.drain_timeout)
                orch.events.emit("drained", svc.name, rep.id,
                                 f"{'drained' if ok else 'drain timed out'} after {orch.mono() - t0:.2f} s ({reason})")
            orch.pool.leave(rep)
            if self.driver is not None and rep.handle is not None:
                await self.driver.stop(rep.handle, grace=svc.spec.drain_timeout if grace is None else grace)
        except Exception as e:
            log.exception("stopping %s failed", rep.id)
            rep.last_error = f"stop failed: {e}"
        finally:
            if rep.state == S.STOPPING:
                rep.transition(S.STOPPED, reason)
            svc.replicas.pop(rep.id, None)
            if not quiet:
                orch.events.emit("stopped", svc.name, rep.id, reason)
            orch.wake()

    # --- starting one ---------------------------------------------------------------------------

    async def start_now(self, svc: ServiceRuntime, port: int, spec: ServiceSpec, reason: str, *,
                        boost: bool = True) -> Replica:
        """Start one replica of `spec` on `port` and probe it (with `spec`'s health settings); it
        joins the pool after its first passing probe (boost=False: the others serve meanwhile, see
        LaunchSpec.start_boost). Raises DriverError when the driver cannot start it."""
        view = ServiceRuntime(svc.name, spec, svc.desired, replicas=svc.replicas)
        launch = dataclasses.replace(self.orch.launch_spec(view, port), start_boost=boost)
        handle = await self._driver().start(launch)
        return self._record(view, port, handle, "start", reason, restarts=0)

    def _record(self, svc: ServiceRuntime, port: int, handle: ReplicaHandle, kind: str, reason: str,
                restarts: int) -> Replica:
        orch = self.orch
        rep = Replica(id=handle.id, service=svc.name, port=port, handle=handle, started_at=orch.mono(),
                      restarts=restarts)
        svc.replicas[rep.id] = rep
        orch.events.emit(kind, svc.name, rep.id, f"started on port {port}{pid_text(handle)}: {reason}")
        orch.probing.start(svc, rep)
        return rep

    def _driver(self) -> PortDriver:
        if self.driver is None:
            raise DriverError("the engine starts this service's replicas itself")
        return self.driver

    # --- scheduled starts and replacements (the reconciler's plan) ------------------------------

    def _replace(self, svc: ServiceRuntime, old: Replica, why: str) -> None:
        """Take a broken replica away and start a new one on the same port, after any backoff."""
        orch = self.orch
        r = lifecycle.replacement(old.id, old.port, old.last_error or why, svc.backoff.get(old.port, BackoffState()),
                                  orch.mono(), orch.backoff_policy, svc.dependency, svc.spec.drain_timeout)
        svc.backoff[old.port] = r.backoff
        svc.restarts[old.port] = svc.restarts.get(old.port, 0) + 1
        # The old one must be gone before the new one can bind the same port; shielded, so
        # cancelling the pending start (scale-in meanwhile) never leaves the old one half-stopped.
        stopping = self.retire(svc, old, r.stop_reason, drain=False, grace=r.grace, quiet=True, why=r.why)
        for kind, text in r.events:
            orch.events.emit(kind, svc.name, old.id, text)
        self._schedule_start(svc, old.port, delay=r.delay, reason=r.start_reason, after=stopping, replaces=old.id)

    def _schedule_start(self, svc: ServiceRuntime, port: int, delay: float, reason: str,
                        after: asyncio.Task | None = None, replaces: str | None = None) -> None:
        due = self.orch.mono() + delay
        task = asyncio.create_task(self._start_when_due(svc, port, delay, reason, after, replaces),
                                   name=f"start-{svc.name}-{port}")
        svc.pending[port] = ScheduledStart(task, due, reason)

    async def _start_when_due(self, svc: ServiceRuntime, port: int, delay: float, reason: str,
                              after: asyncio.Task | None, replaces: str | None) -> None:
        try:
            if after is not None:
                await asyncio.shield(after)
            if delay > 0:
                await asyncio.sleep(delay)
            handle = await self._launch_until_it_runs(svc, port)
            if handle is None:
                return   # the port is taken: the reconciler places the replica elsewhere
        finally:
            # Only our own entry: a cancelled start may already have been superseded by a new one.
            p = svc.pending.get(port)
            if p is not None and p.task is asyncio.current_task():
                del svc.pending[port]
        # No await between dropping the pending entry and recording the replica: the reconciler
        # never sees the port as free in between.
        self._record(svc, port, handle, "replaced" if replaces else "start", reason,
                     restarts=svc.restarts.get(port, 0))
        self.orch.wake()

    async def _launch_until_it_runs(self, svc: ServiceRuntime, port: int) -> ReplicaHandle | None:
        """The replica started on `port`, retried after the backoff while the driver cannot launch
        it; None when another program holds the port."""
        orch = self.orch
        while True:
            p = svc.pending.get(port)
            if p is not None:
                p.committed = True
            try:
                return await self._driver().start(orch.launch_spec(svc, port))
            except PortTaken as e:
                # Another program holds it: the reconciler places the replica on the next free
                # port now, and tries this one again once TAKEN_RECHECK has passed.
                svc.taken = taken_ports.record(svc.taken, port, e.holder, orch.mono())
                orch.events.emit("port", svc.name, None,
                                 taken_ports.taken_text(svc.name, svc.taken[port], str(svc.spec.host_ports)))
                asyncio.get_running_loop().call_later(taken_ports.TAKEN_RECHECK, orch.wake)
                orch.wake()
                return None
            except DriverError as e:
                # Could not even launch it (bad image, port taken...): same backoff as a crash.
                svc.backoff[port], delay = lifecycle.launch_failed(svc.backoff.get(port, BackoffState()),
                                                                   orch.mono(), orch.backoff_policy)
                orch.events.emit("backoff", svc.name, None, f"cannot start on port {port}: {e}; retry in {delay:g} s")
                if p is not None:
                    p.committed = False
                    p.due = orch.mono() + delay
                await asyncio.sleep(delay)


def pid_text(handle: ReplicaHandle | None) -> str:
    pid = getattr(handle, "pid", None)
    return f" (pid {pid})" if pid else ""
