"""The runtime: the control plane that keeps a stack running, carrying out what the pure modules decide.

`Orchestrator(stack, driver, gateway)` keeps, per service, a `ServiceRuntime` (service.py) and runs
on one asyncio loop. Each loop observes, asks a pure decision, and acts on the answer:

- the reconciler: desired vs actual -> a convergence plan (plan.py) -> start, drain-and-stop, or
  replace on the same port after the crash-loop backoff (lifecycle.replacement);
- a health-probe task per replica: probe result -> lifecycle.probed (health.py's verdict and the
  disruption budget) -> a `Step` (transition, pool, event) that `_carry_out` applies;
- the exit watcher: driver exit event -> lifecycle.exited;
- passive ejections from the gateway (`on_eject`): lifecycle.ejected, then an immediate probe ->
  lifecycle.confirmed (back in rotation, or replaced);
- adoption at start (driver.list()): one probe each -> lifecycle.found;
- an autoscaler task per service and scale from zero (scaling.py), reading the gateway's counters;
- graceful shutdown;
- with a driver that owns the replica count (swarm: `driver.owns_replica_count`), no starts or
  replacements of its own: the desired count goes to the driver, the driver's snapshots of what
  runs become the records (driver_owned.py decides), and probing and the pool work as above.

Dependencies (the stack's `dependencies:`, e.g. the database) run as fixed one-replica services
without a gateway pool, checked over TCP; a service that `depends_on` one starts its first replica
only once the dependency is ready (lifecycle.waits_for), and shutdown stops them last.
`snapshot()` is the typed status (status.py); events (events.py) say why everything happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Callable

from . import autoscale as auto
from . import driver_owned
from . import lifecycle
from . import taken_ports
from .lifecycle import BROKEN_REPLACE_GRACE
from .backoff import BackoffPolicy, BackoffState, record_ready
from .drivers.base import Driver, DriverError, ExitEvent, LaunchSpec, ReplicaHandle
from .drivers.port_holder import PortTaken
from .events import EventLog
from .health import Probe
from .probe import HttpProber
from .probing import REPLICA_HOST, Probing, replica_host
from .plan import CancelPending, Replace, Start, Stop
from .replica import BROKEN, LIVE, Replica, ReplicaState as S
from .scaling import Scaling
from .service import ScheduledStart, ServiceRuntime
from .status import StackStatus, to_json
from .stack import NoPolicy, ServiceSpec, Stack

if TYPE_CHECKING:
    from selfieless.gateway.control import GatewayControl

log = logging.getLogger(__name__)

# A replica found running but not wanted (adoption) only has to free its port quickly.
REPLACE_GRACE = 1.0


class Orchestrator:
    def __init__(
        self,
        stack: Stack,
        driver: Driver,
        gateway: GatewayControl,
        *,
        state_dir: str | None = None,
        events: EventLog | None = None,
        backoff: BackoffPolicy = BackoffPolicy(),
        probe: Probe | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        adopt: bool = True,
    ):
        self.stack = stack
        self.driver = driver
        self.gateway = gateway
        self.state_dir = state_dir or ""
        self.events = events or EventLog()
        self.backoff_policy = backoff
        self._prober: HttpProber | None = None   # the default probe, ours to close
        self._mono = monotonic
        self._wall = wall
        self._adopt = adopt
        # Dependencies first: reconciled (started) before the services, stopped after them.
        self.services: dict[str, ServiceRuntime] = {
            name: ServiceRuntime(name, dep.as_service(), 1, dependency=True) for name, dep in stack.dependencies.items()
        }
        self.services.update(
            (name, ServiceRuntime(name, spec, spec.replicas.start_count)) for name, spec in stack.services.items()
        )
        self._wake = asyncio.Event()
        self.scaling = Scaling(self.events, self._wake, self._stats, monotonic, wall)
        self._tasks: set[asyncio.Task] = set()        # one-off work: stops, probes after ejection
        self._loops: list[asyncio.Task] = []          # long-running loops
        self.probing = Probing(self._apply_probe, monotonic, probe)
        self._running = False
        self._stopping = False
        # Drivers that own the replica count: tasks silent since (driver_owned.silent_tasks).
        self._silence = driver_owned.Silence({}, {}, [])
        self._forgotten: list[str] = []
        self.remove_volumes_at_stop = False   # `down --volumes` (a driver that removes them itself)

    # ------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what is already running, then start the loops. Returns without waiting for
        replicas to become ready (see wait_ready)."""
        if self._running:
            return
        self._running = True
        if self.probing.probe is None:
            self._prober = self.probing.probe = HttpProber()
        self._hook_gateway()
        self._loops.append(asyncio.create_task(self._watch_exits(), name="orchestrator-exits"))
        if self.driver.owns_replica_count:
            if self._adopt:
                await self._adopt_counts()
            self._loops.append(asyncio.create_task(self._watch_snapshots(), name="orchestrator-snapshots"))
        elif self._adopt:
            await self._adopt_existing()
        for svc in self.services.values():
            if not isinstance(svc.spec.autoscale, NoPolicy):
                self._loops.append(asyncio.create_task(self.scaling.run(svc), name=f"autoscale-{svc.name}"))
        self._loops.append(asyncio.create_task(self._reconcile_loop(), name="orchestrator-reconcile"))
        self._wake.set()

    async def stop(self, stop_replicas: bool = True) -> None:
        """Graceful shutdown: drain and stop every replica. With stop_replicas=False the replicas
        keep running (detach), for a later orchestrator to adopt."""
        if not self._running or self._stopping:
            return
        self._stopping = True
        for t in self._loops + list(self.probing.tasks.values()):
            t.cancel()
        for svc in self.services.values():
            for p in svc.pending.values():
                if not p.committed:
                    p.task.cancel()
        await asyncio.gather(*self._loops, *self.probing.tasks.values(), return_exceptions=True)
        # Let in-progress starts and stops finish so nothing is left half-made.
        pending = [p.task for svc in self.services.values() for p in svc.pending.values()]
        await asyncio.gather(*pending, *list(self._tasks), return_exceptions=True)
        for t in list(self.probing.tasks.values()):
            t.cancel()
        if stop_replicas:
            # Services first (they may still be using a dependency while they drain), then dependencies.
            for deps in (False, True):
                jobs = []
                for svc in self.services.values():
                    if svc.dependency != deps:
                        continue
                    for rep in list(svc.replicas.values()):
                        if rep.state in LIVE or rep.state in BROKEN:
                            rep.transition(S.STOPPING, "orchestrator shutting down")
                            jobs.append(self._stop_replica(svc, rep, drain=rep.in_pool,
                                                           reason="orchestrator shutting down"))
                await asyncio.gather(*jobs, return_exceptions=True)
            try:
                await self.driver.cleanup()
            except Exception:
                log.exception("driver cleanup failed")
            if self.remove_volumes_at_stop:
                try:
                    removed = await self.driver.remove_volumes()
                    if removed is not None:
                        log.warning("removed volumes: %s", ", ".join(removed) or "none")
                except Exception:
                    log.exception("removing the volumes failed")
        await self.driver.close()
        if self._prober is not None:
            await self._prober.aclose()
        self._running = False

    async def scale(self, service: str, n: int, reason: str = "manual scale") -> None:
        """Set the desired count now; the autoscaler carries on from it at its next decision."""
        self.scaling.scale(self._service(service), n, reason)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every service has exactly its desired count of ready replicas, and nothing else."""
        deadline = self._mono() + timeout
        while not self.converged():
            if self._mono() > deadline:
                raise TimeoutError(f"stack not ready after {timeout} s: {self._summary()}")
            await asyncio.sleep(0.02)

    def converged(self) -> bool:
        return all(svc.converged() for svc in self.services.values())

    # --- used by a rollout (rollout_exec.py), which takes over one service's replicas ----------

    def hold(self, service: str, by: str) -> None:
        """Stop reconciling `service` until release(): its replicas are being replaced by `by`."""
        self._service(service).rollout_owner = by

    def release(self, service: str, spec: ServiceSpec | None = None) -> None:
        """Reconcile `service` again, with `spec` from now on when given."""
        svc = self._service(service)
        if spec is not None:
            svc.spec = spec
        svc.rollout_owner = None
        self._wake.set()

    async def start_replica(self, service: str, port: int, spec: ServiceSpec, reason: str,
                            boost: bool = True) -> Replica:
        """Start one replica of `spec` on `port` and probe it; it joins the pool after its first
        passing probe (boost=False: the others serve meanwhile, see LaunchSpec.start_boost).
        Raises DriverError when the driver cannot start it."""
        svc = self._service(service)
        launch = self._launch_spec(ServiceRuntime(svc.name, spec, svc.desired), port)
        launch = dataclasses.replace(launch, start_boost=boost)
        handle = await self.driver.start(launch)
        rep = Replica(id=handle.id, service=svc.name, port=port, handle=handle, started_at=self._mono())
        svc.replicas[rep.id] = rep
        self.events.emit("start", svc.name, rep.id, f"started on port {port}{self._pid_text(handle)}: {reason}")
        self.probing.start(ServiceRuntime(svc.name, spec, svc.desired, replicas=svc.replicas), rep)
        return rep

    def launch_spec(self, service: str, spec: ServiceSpec) -> LaunchSpec:
        """What the driver gets for a replica of `spec` (a driver owning the count: for the service)."""
        svc = self._service(service)
        return self._launch_spec(ServiceRuntime(svc.name, spec, svc.desired), 0)

    async def stop_replica(self, service: str, replica_id: str, drain: bool, reason: str) -> None:
        """Take one replica out (draining first when asked and it serves) and stop it."""
        svc = self._service(service)
        rep = svc.replicas.get(replica_id)
        if rep is None:
            return
        if rep.can(S.STOPPING):
            rep.transition(S.STOPPING, reason)
        self.probing.stop(rep)
        await self._stop_replica(svc, rep, drain=drain and rep.in_pool, reason=reason,
                                 grace=None if drain else BROKEN_REPLACE_GRACE)

    # --- used by apply (apply_exec.py) ---------------------------------------------------------

    def add_service(self, name: str, spec: ServiceSpec) -> None:
        """A service new in the stack file: started by the reconciler like any other."""
        svc = self.services[name] = ServiceRuntime(name, spec, spec.replicas.start_count)
        if not isinstance(spec.autoscale, NoPolicy):
            self._loops.append(asyncio.create_task(self.scaling.run(svc), name=f"autoscale-{name}"))
        self._wake.set()

    async def remove_service(self, name: str) -> None:
        """A service gone from the stack file: every replica drained and stopped, then forgotten."""
        svc = self._service(name)
        self._cancel_autoscaler(name)
        svc.desired = 0
        self._wake.set()
        while svc.replicas or svc.pending:
            await asyncio.sleep(0.02)
        del self.services[name]

    def restart_autoscaler(self, name: str) -> None:
        """The autoscale loop reads its policy and bounds once: start it again after they changed.
        It goes on from the service's autoscaler state as it is (see Scaling.carry_over)."""
        svc = self._service(name)
        self._cancel_autoscaler(name)
        if not isinstance(svc.spec.autoscale, NoPolicy):
            self._loops.append(asyncio.create_task(self.scaling.run(svc), name=f"autoscale-{name}"))

    def _cancel_autoscaler(self, name: str) -> None:
        for t in [t for t in self._loops if t.get_name() == f"autoscale-{name}"]:
            t.cancel()
            self._loops.remove(t)

    def replicas_of(self, service: str) -> list[Replica]:
        return list(self._service(service).replicas.values())

    def on_eject(self, service: str, replica_id: str, reason: str) -> None:
        """Gateway callback: it took a replica out of rotation by itself (refused/reset)."""
        svc = self.services.get(service)
        rep = svc.replicas.get(replica_id) if svc else None
        if rep is None:
            return
        step = lifecycle.ejected(svc.facts(rep), reason)
        self._carry_out(svc, rep, step)
        if step.ejected:
            self._spawn(self._confirm_ejection(svc, rep))

    def on_withdraw(self, service: str, replica_id: str, reason: str) -> None:
        """Gateway callback: a replica stalled while its siblings answered, and the gateway took it
        out of rotation. Not a verdict: its health probes decide (now rather than at the next
        interval). A pass puts it back in the pool; failures make it unhealthy as usual (under the
        disruption budget), and then what it still holds is given up."""
        svc = self.services.get(service)
        rep = svc.replicas.get(replica_id) if svc else None
        if rep is None or rep.state != S.READY or not rep.in_pool:
            return
        rep.in_pool = False
        self.events.emit("withdrawn", service, replica_id,
                         f"gateway took it out of rotation: {reason}; its health probes decide")
        self.probing.hint(replica_id)

    def on_stalled_together(self, service: str, reason: str) -> None:
        """Gateway callback: every replica of `service` holds reads with no answer from any. The
        probes may still pass (a lock held in the database stalls requests, not `_health`), so
        without this event nothing would say why the service stopped answering."""
        if service in self.services:
            self.events.emit("stalled", service, None, reason)

    def on_no_replica(self, service: str) -> None:
        """Gateway callback: a request is held because no replica of `service` is ready. A service
        scaled to zero gets one replica now (the held requests go out once it is ready)."""
        svc = self.services.get(service)
        if svc is not None:
            self.scaling.wake_from_zero(svc)

    def on_replica_error(self, service: str, replica_id: str, status: int) -> None:
        """Gateway hint: a replica answered 5xx. Probe it now instead of at its next interval, so a
        replica that fails everything (e.g. after `_crash`) leaves the rotation within milliseconds."""
        self.probing.hint(replica_id)

    def snapshot(self) -> StackStatus:
        """The typed status (status.py) that the admin API, the CLI, the metrics and `up` render."""
        now = self._mono()
        return StackStatus(
            stack=self.stack.name, driver=self.driver.name, converged=self.converged(),
            last_event_id=self.events.last_id,
            services={svc.name: svc.status({} if svc.dependency else {v.id: v for v in self._pool_views(svc.name)},
                                           self._stats(svc.name), now)
                      for svc in self.services.values()})

    def status(self) -> dict:
        """The snapshot's JSON form (GET /api/status; see status.to_json for its keys)."""
        return to_json(self.snapshot())

    # ------------------------------------------------------------------------------------------
    # Gateway plumbing
    # ------------------------------------------------------------------------------------------

    def _hook_gateway(self) -> None:
        gw = self.gateway
        gw.set_routes(self.stack.routes())
        # The gateway may have been built before the orchestrator existed; wire the callback now.
        if gw.on_eject is None:
            gw.on_eject = self.on_eject
        if gw.on_withdraw is None:
            gw.on_withdraw = self.on_withdraw
        if gw.on_stalled_together is None:
            gw.on_stalled_together = self.on_stalled_together
        if gw.on_replica_error is None:
            gw.on_replica_error = self.on_replica_error
        if gw.on_no_replica is None:
            gw.on_no_replica = self.on_no_replica

    def _pool_views(self, service: str) -> list:
        try:
            return list(self.gateway.backends(service))
        except Exception:
            return []

    def _stats(self, service: str) -> auto.Sample:
        st = self.gateway.counters(service)
        if st is None:
            return auto.Sample(0, None)  # no request routed to it yet
        return auto.Sample(st.api_requests, st.first_request_at)

    def _join_pool(self, rep: Replica) -> None:
        if self.services[rep.service].dependency:
            return  # no routes, no pool: other replicas reach it directly
        self.gateway.add_backend(rep.service, rep.id, replica_host(rep), rep.port)
        rep.in_pool = True

    def _leave_pool(self, rep: Replica, failed: bool = False) -> None:
        # Always tell the pool, even when we think it is out: it also forgets an entry the
        # gateway ejected by itself and still lists. A replica that `failed` its probes will not
        # answer what it holds: the gateway moves or answers those requests now. Any other
        # leave (drained, stopped, exited: perhaps finishing gracefully) lets them finish.
        if not self.services[rep.service].dependency:
            self.gateway.remove_backend(rep.service, rep.id, failed=failed)
        rep.in_pool = False

    # ------------------------------------------------------------------------------------------
    # Reconciler
    # ------------------------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for svc in self.services.values():
                try:
                    if self.driver.owns_replica_count:
                        self._reconcile_owned(svc)
                    elif not self._blocked(svc):
                        self._reconcile(svc)
                except Exception:
                    log.exception("reconcile of %s failed", svc.name)

    def _blocked(self, svc: ServiceRuntime) -> bool:
        """A service with no replica yet waits until each of its dependencies has a ready one."""
        if svc.rollout_owner is not None:
            return True
        if svc.replicas or svc.pending:
            return False
        ready = {name: any(r.state == S.READY for r in self.services[name].replicas.values())
                 for name in svc.spec.depends_on if name in self.services}
        name = lifecycle.waits_for(svc.spec.depends_on, ready)
        if name is not None and svc.waiting_for != name:
            self.events.emit("waiting", svc.name, None, f"waiting for dependency {name} to be ready")
        svc.waiting_for = name
        return name is not None

    def _reconcile(self, svc: ServiceRuntime) -> None:
        actions, no_port = taken_ports.place(svc.name, svc.desired, svc.slots(), svc.spec.host_ports.ports,
                                             svc.taken, self._mono())
        if no_port != svc.no_port:
            svc.no_port = no_port
            if no_port:
                self.events.emit("port", svc.name, None, no_port)
        for a in actions:
            if isinstance(a, Start):
                self._schedule_start(svc, a.port, delay=0.0, reason=a.reason)
            elif isinstance(a, Stop):
                rep = svc.replicas[a.replica_id]
                rep.transition(S.STOPPING, a.reason)
                self.probing.stop(rep)
                self._spawn(self._stop_replica(svc, rep, drain=a.drain, reason=a.reason))
            elif isinstance(a, Replace):
                self._replace(svc, svc.replicas[a.replica_id], a.reason)
            elif isinstance(a, CancelPending):
                p = svc.pending.get(a.port)
                if p is not None and not p.committed:
                    p.task.cancel()
                    del svc.pending[a.port]

    def _replace(self, svc: ServiceRuntime, old: Replica, why: str) -> None:
        """Take a broken replica away and start a new one on the same port, after any backoff."""
        r = lifecycle.replacement(old.id, old.port, old.last_error or why, svc.backoff.get(old.port, BackoffState()),
                                  self._mono(), self.backoff_policy, svc.dependency, svc.spec.drain_timeout)
        old.transition(S.STOPPING, r.why)
        self.probing.stop(old)
        svc.backoff[old.port] = r.backoff
        svc.restarts[old.port] = svc.restarts.get(old.port, 0) + 1
        # The old one must be gone before the new one can bind the same port; shielded, so
        # cancelling the pending start (scale-in meanwhile) never leaves the old one half-stopped.
        stopping = self._spawn(self._stop_replica(svc, old, drain=False, reason=r.stop_reason,
                                                  grace=r.grace, quiet=True))
        for kind, text in r.events:
            self.events.emit(kind, svc.name, old.id, text)
        self._schedule_start(svc, old.port, delay=r.delay, reason=r.start_reason, after=stopping, replaces=old.id)

    def _schedule_start(self, svc: ServiceRuntime, port: int, delay: float, reason: str,
                        after: asyncio.Task | None = None, replaces: str | None = None) -> None:
        due = self._mono() + delay
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
            while True:
                p = svc.pending.get(port)
                if p is not None:
                    p.committed = True
                try:
                    handle = await self.driver.start(self._launch_spec(svc, port))
                    break
                except PortTaken as e:
                    # Another program holds it: the reconciler places the replica on the next free
                    # port now, and tries this one again once TAKEN_RECHECK has passed.
                    svc.taken = taken_ports.record(svc.taken, port, e.holder, self._mono())
                    self.events.emit("port", svc.name, None,
                                     taken_ports.taken_text(svc.name, svc.taken[port], str(svc.spec.host_ports)))
                    asyncio.get_running_loop().call_later(taken_ports.TAKEN_RECHECK, self._wake.set)
                    self._wake.set()
                    return
                except DriverError as e:
                    # Could not even launch it (bad image, port taken...): same backoff as a crash.
                    svc.backoff[port], delay = lifecycle.launch_failed(svc.backoff.get(port, BackoffState()),
                                                                       self._mono(), self.backoff_policy)
                    self.events.emit("backoff", svc.name, None, f"cannot start on port {port}: {e}; retry in {delay:g} s")
                    if p is not None:
                        p.committed = False
                        p.due = self._mono() + delay
                    await asyncio.sleep(delay)
        finally:
            # Only our own entry: a cancelled start may already have been superseded by a new one.
            p = svc.pending.get(port)
            if p is not None and p.task is asyncio.current_task():
                del svc.pending[port]
        # No await between dropping the pending entry and recording the replica: the reconciler
        # never sees the port as free in between.
        rep = Replica(id=handle.id, service=svc.name, port=port, handle=handle, started_at=self._mono(),
                      restarts=svc.restarts.get(port, 0))
        svc.replicas[rep.id] = rep
        kind = "replaced" if replaces else "start"
        self.events.emit(kind, svc.name, rep.id, f"started on port {port}{self._pid_text(handle)}: {reason}")
        self.probing.start(svc, rep)
        self._wake.set()

    async def _stop_replica(self, svc: ServiceRuntime, rep: Replica, drain: bool, reason: str,
                            grace: float | None = None, quiet: bool = False) -> None:
        try:
            if drain and rep.in_pool:
                t0 = self._mono()
                ok = await self.gateway.drain_backend(svc.name, rep.id, timeout=svc.spec.drain_timeout)
                self.events.emit("drained", svc.name, rep.id,
                                 f"{'drained' if ok else 'drain timed out'} after {self._mono() - t0:.2f} s ({reason})")
            self._leave_pool(rep)
            if rep.handle is not None:
                await self.driver.stop(rep.handle, grace=svc.spec.drain_timeout if grace is None else grace)
        except Exception as e:
            log.exception("stopping %s failed", rep.id)
            rep.last_error = f"stop failed: {e}"
        finally:
            if rep.state == S.STOPPING:
                rep.transition(S.STOPPED, reason)
            svc.replicas.pop(rep.id, None)
            if not quiet:
                self.events.emit("stopped", svc.name, rep.id, reason)
            self._wake.set()

    def _launch_spec(self, svc: ServiceRuntime, port: int) -> LaunchSpec:
        gw_port = self.gateway.port or self.stack.gateway.port
        return svc.launch_spec(self.stack, port, gw_port, self.state_dir, REPLICA_HOST)

    # ------------------------------------------------------------------------------------------
    # Health
    # ------------------------------------------------------------------------------------------

    def _apply_probe(self, svc: ServiceRuntime, rep: Replica, ok: bool) -> None:
        self._carry_out(svc, rep, lifecycle.probed(svc.facts(rep), ok, svc.rules(),
                                                    svc.siblings(rep), self._mono(), svc.name))

    async def _driver_ready(self, rep: Replica) -> None:
        try:
            await self.driver.ready(rep.handle)
        except Exception:
            log.exception("driver: marking %s ready failed", rep.id)

    async def _confirm_ejection(self, svc: ServiceRuntime, rep: Replica) -> None:
        ok = await self.probing.once(svc, rep)
        self._carry_out(svc, rep, lifecycle.confirmed(svc.facts(rep), ok, svc.rules()))

    # ------------------------------------------------------------------------------------------
    # Carrying out lifecycle steps (lifecycle.py decides)
    # ------------------------------------------------------------------------------------------

    def _carry_out(self, svc: ServiceRuntime, rep: Replica, step: lifecycle.Step) -> None:
        now = self._mono()
        if step.failures is not None:
            rep.consecutive_failures = step.failures
        if step.stop_probe:
            self.probing.stop(rep)
        if step.leave_pool:
            self._leave_pool(rep, failed=step.to is S.UNHEALTHY)
        if step.ejected:
            rep.in_pool = False  # the gateway already took it out
        if step.to is not None:
            rep.transition(step.to, step.why)
        if step.became_ready:
            rep.ready_at = now
            rep.last_error = None
        if step.last_error is not None:
            rep.last_error = step.last_error
        if step.join_pool:
            self._join_pool(rep)
        if step.became_ready:
            if rep.handle is not None:
                self._spawn(self._driver_ready(rep))
            svc.backoff[rep.port] = record_ready(svc.backoff.get(rep.port, BackoffState()), now)
        if step.spare is True:
            svc.spared.add(rep.id)
        elif step.spare is False:
            svc.spared.discard(rep.id)
        for kind, why in step.events:
            self.events.emit(kind, svc.name, rep.id, why)
        if step.wake:
            self._wake.set()

    # ------------------------------------------------------------------------------------------
    # Exits
    # ------------------------------------------------------------------------------------------

    async def _watch_exits(self) -> None:
        async for ev in self.driver.exits():
            try:
                self._on_exit(ev)
            except Exception:
                log.exception("handling exit of %s failed", ev.replica_id)

    def _on_exit(self, ev: ExitEvent) -> None:
        svc = self.services.get(ev.service)
        rep = svc.replicas.get(ev.replica_id) if svc else None
        if rep is not None:
            self._carry_out(svc, rep, lifecycle.exited(svc.facts(rep), ev.reason))

    # ------------------------------------------------------------------------------------------
    # Adoption
    # ------------------------------------------------------------------------------------------

    async def _adopt_existing(self) -> None:
        handles = sorted(await self.driver.list(), key=lambda h: h.started_at)
        unwanted = lifecycle.triage([(h.service, h.port) for h in handles],
                                    {name: svc.spec.host_ports.ports for name, svc in self.services.items()})
        adopted: list[tuple[ServiceRuntime, Replica]] = []
        for h, why in zip(handles, unwanted):
            if why is not None:
                await self.driver.stop(h, grace=REPLACE_GRACE)
                self.events.emit("stopped", h.service, h.id, why)
                continue
            svc = self.services[h.service]
            await self.driver.adopt(h)
            # started_at is wall clock; translate to our monotonic clock for the start grace.
            age = max(0.0, self._wall() - h.started_at)
            rep = Replica(id=h.id, service=svc.name, port=h.port, handle=h, adopted=True,
                          started_at=self._mono() - age)
            svc.replicas[rep.id] = rep
            adopted.append((svc, rep))
        results = await asyncio.gather(*(self.probing.once(svc, rep) for svc, rep in adopted))
        for (svc, rep), ok in zip(adopted, results):
            if rep.state != S.STARTING:
                continue  # exited while we were probing
            what = f"found running on port {rep.port}{self._pid_text(rep.handle)}"
            step = lifecycle.found(svc.facts(rep), ok, svc.rules(), self._mono(), what)
            self._carry_out(svc, rep, step)
            if step.probe_again:
                self.probing.start(svc, rep)
        for svc in self.services.values():
            if not svc.dependency:
                # A gateway that outlived the previous control plane may still list replicas that
                # are gone (or were just stopped above): forget them.
                for v in self._pool_views(svc.name):
                    if v.id not in svc.replicas:
                        self.gateway.remove_backend(svc.name, v.id)
            n = sum(1 for r in svc.replicas.values() if r.adopted)
            if n:
                # Carry on with what was running (within bounds) rather than the initial count.
                svc.desired = max(svc.spec.replicas.min, min(svc.spec.replicas.max, n))

    # ------------------------------------------------------------------------------------------
    # Drivers that own the replica count (swarm): decisions in driver_owned.py
    # ------------------------------------------------------------------------------------------

    async def _adopt_counts(self) -> None:
        """Services the engine already runs for this stack: carry on with their counts."""
        counts = await self.driver.replica_counts()
        for svc in self.services.values():
            n = driver_owned.adopted_count(counts.get(svc.name), svc.spec.replicas.min, svc.spec.replicas.max)
            if n is None:
                continue
            svc.desired = 1 if svc.dependency else n
            svc.driver_count = counts[svc.name]
            self.events.emit("adopted", svc.name, None, f"found running with {counts[svc.name]} replica(s); "
                                                        f"carrying on with {svc.desired}")

    def _reconcile_owned(self, svc: ServiceRuntime) -> None:
        for rid in driver_owned.to_forget({r.id: r.state for r in svc.replicas.values()}):
            rep = svc.replicas[rid]
            if rep.state != S.EXITED:
                self._forgotten.append(rid)   # still running, maybe: watched for silence
            rep.transition(S.STOPPING, "left to the driver to replace")
            self.probing.stop(rep)
            self._spawn(self._stop_replica(svc, rep, drain=False, reason=f"forgotten: {rep.last_error or 'broken'}; "
                                           f"the {self.driver.name} engine replaces it", grace=0.0, quiet=True))
        if svc.driver_count is None and self._blocked(svc):
            return  # first creation waits for the dependencies, as a first start does
        if svc.rollout_owner is not None:
            return  # the engine is rolling the service (rollout_owned.py); a count change waits
        n = driver_owned.count_to_set(svc.desired, svc.driver_count, svc.applying)
        if n is not None:
            svc.applying = True
            self._spawn(self._send_count(svc, n))

    async def _send_count(self, svc: ServiceRuntime, n: int) -> None:
        try:
            await self.driver.set_replicas(self._launch_spec(svc, 0), n)
            svc.driver_count = n
            self.events.emit("start" if n else "stopped", svc.name, None,
                             f"the {self.driver.name} engine runs {n} replica(s) of it now")
        except Exception as e:
            self.events.emit("backoff", svc.name, None, f"cannot set {n} replica(s): {e}; retry in 1 s")
            await asyncio.sleep(1.0)
        finally:
            svc.applying = False
            self._wake.set()

    async def _watch_snapshots(self) -> None:
        async for handles in self.driver.snapshots():
            try:
                self._apply_snapshot(handles)
            except Exception:
                log.exception("applying the driver's snapshot failed")

    def _apply_snapshot(self, handles: list[ReplicaHandle]) -> None:
        by_service: dict[str, list[ReplicaHandle]] = {name: [] for name in self.services}
        for h in handles:
            if h.service in by_service:
                by_service[h.service].append(h)
        self._end_silent({h.id: h for h in handles})
        for name, found in by_service.items():
            svc = self.services[name]
            for h in found:
                rep = svc.replicas.get(h.id)
                if h.leaving and rep is not None and rep.state in LIVE and rep.can(S.STOPPING):
                    # The engine is shutting it down (the old side of an update, a scale-in):
                    # out of the pool now, in-flight requests finish.
                    rep.transition(S.STOPPING, "the engine is shutting its task down")
                    self.probing.stop(rep)
                    self._spawn(self._stop_replica(svc, rep, drain=True,
                                                   reason=f"the {self.driver.name} engine is shutting its task down"))
            ids = {h.id: h for h in found if not h.leaving}
            ch = driver_owned.snapshot_changes({r.id: r.state for r in svc.replicas.values()}, list(ids))
            for rid in ch.gone:
                self._on_exit(ExitEvent(rid, name, svc.replicas[rid].port, None,
                                        "no longer running (its task ended or its node is down)"))
            for rid in ch.new:
                h = ids[rid]
                rep = Replica(id=rid, service=name, port=h.port, handle=h, started_at=self._mono())
                svc.replicas[rid] = rep
                self.events.emit("start", name, rid, f"running: {h.detail}")
                self.probing.start(svc, rep)

    def _end_silent(self, reported: dict[str, ReplicaHandle]) -> None:
        """Tasks forgotten as broken that the driver still lists, silent for too long: end them
        (a paused task, which Swarm never replaces by itself)."""
        ready = {r.id for svc in self.services.values() for r in svc.replicas.values() if r.state == S.READY}
        s = driver_owned.silent_tasks(self._silence.since, self._silence.ending, self._forgotten, set(reported),
                                      ready, self._mono())
        self._forgotten = []
        self._silence = s
        for rid in s.end:
            h = reported[rid]
            self.events.emit("replaced", h.service, rid, f"silent for {self._mono() - s.since[rid]:.0f} s and "
                                                          f"still running: ending it so the {self.driver.name} "
                                                          f"engine replaces it")
            self._spawn(self._end_replica(h))

    async def _end_replica(self, h: ReplicaHandle) -> None:
        try:
            what = await self.driver.end(h)
            log.info("ended %s: %s", h.id, what)
        except Exception as e:
            self.events.emit("backoff", h.service, h.id, f"cannot end it: {e}; retry in "
                                                         f"{driver_owned.END_RETRY:g} s")

    # ------------------------------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------------------------------

    def _service(self, name: str) -> ServiceRuntime:
        try:
            return self.services[name]
        except KeyError:
            raise KeyError(f"no service {name!r} in stack {self.stack.name!r}") from None

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    @staticmethod
    def _pid_text(handle: ReplicaHandle | None) -> str:
        pid = getattr(handle, "pid", None)
        return f" (pid {pid})" if pid else ""

    def _summary(self) -> str:
        parts = []
        for svc in self.services.values():
            states = ", ".join(f"{r.port}:{r.state.value}" for r in sorted(svc.replicas.values(), key=lambda r: r.port))
            parts.append(f"{svc.name} desired {svc.desired} [{states}] pending {sorted(svc.pending)}")
        return "; ".join(parts)
