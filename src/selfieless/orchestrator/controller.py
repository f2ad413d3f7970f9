"""The orchestrator: the control plane that keeps a stack running, carrying out what the pure
modules decide.

`Orchestrator(stack, driver, gateway)` keeps, per service, a `ServiceRuntime` (service.py) and runs
on one asyncio loop. It holds what every reconcile mode shares, and leaves the rest to the
reconciler chosen once by the kind of driver (reconciler.py: per port, or an engine's):

- the reconcile loop: on every wake-up, one pass of the reconciler per service (a service held by a
  rollout, or waiting for its dependencies, is left alone);
- a health-probe task per replica (probing.py): probe result -> lifecycle.probed (health.py's
  verdict and the disruption budget) -> a `Step` (transition, pool, event) that `carry_out` applies;
- passive ejections and withdrawals from the gateway (`on_eject`, `on_withdraw`): lifecycle.ejected,
  then an immediate probe -> lifecycle.confirmed (back in rotation, or replaced);
- the pool (pool.py), the executor of every command about replicas (executor.py), the autoscaler
  and scale from zero (scaling.py, reading the gateway's counters), status and events;
- graceful shutdown: every replica drained and stopped, services before dependencies.

Dependencies (the stack's `dependencies:`, e.g. the database) run as fixed one-replica services
without a gateway pool, checked over TCP; a service that `depends_on` one starts its first replica
only once the dependency is ready (lifecycle.waits_for), and shutdown stops them last.
`snapshot()` is the typed status (status.py); events (events.py) say why everything happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Callable

from . import autoscale as auto
from . import lifecycle
from .backoff import BackoffPolicy, BackoffState, record_ready
from .drivers.base import Driver, EngineDriver, LaunchSpec, PortDriver
from .events import EventLog
from .executor import Executor
from .health import Probe
from .pool import Pool
from .probe import HttpProber
from .probing import REPLICA_HOST, Probing
from .reconcile_engine import EngineReconciler
from .reconcile_ports import PortReconciler
from .reconciler import Reconciler
from .replica import BROKEN, LIVE, Replica, ReplicaState as S
from .scaling import Scaling
from .service import ServiceRuntime
from .status import GatewayStatus, ServiceStatus, StackStatus, certs_status, to_json
from .stack import NoPolicy, ServiceSpec, Stack

if TYPE_CHECKING:
    from selfieless.gateway.control import GatewayControl

log = logging.getLogger(__name__)


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
        self.mono = monotonic
        self.wall = wall
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
        self.pool = Pool(gateway, lambda name: self.services[name].dependency)
        self.executor, self.reconciler = self._mode(driver)
        self._running = False
        self._stopping = False
        self.remove_volumes_at_stop = False   # `down --volumes` (a driver that removes them itself)

    def _mode(self, driver: Driver) -> tuple[Executor, Reconciler]:
        """The reconcile mode, chosen once by the kind of driver (reconciler.py), and the executor
        it uses (with the driver's start and stop of one replica, when it has them)."""
        if isinstance(driver, PortDriver):
            executor = Executor(self, driver)
            return executor, PortReconciler(self, driver, executor)
        if isinstance(driver, EngineDriver):
            executor = Executor(self, None)
            return executor, EngineReconciler(self, driver, executor)
        raise TypeError(f"{type(driver).__name__} is neither a PortDriver nor an EngineDriver")

    # ------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what is already running, then start the loops. Returns without waiting for
        replicas to become ready (see wait_converged)."""
        if self._running:
            return
        self._running = True
        if self.probing.probe is None:
            self._prober = self.probing.probe = HttpProber()
        self._hook_gateway()
        await self.reconciler.begin(self._adopt)
        for svc in self.services.values():
            if not isinstance(svc.spec.autoscale, NoPolicy):
                self.run_loop(self.scaling.run(svc), f"autoscale-{svc.name}")
        self.run_loop(self._reconcile_loop(), "orchestrator-reconcile")
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
            await self._stop_everything()
        await self.driver.close()
        if self._prober is not None:
            await self._prober.aclose()
        self._running = False

    async def _stop_everything(self) -> None:
        # Services first (they may still be using a dependency while they drain), then dependencies.
        why = "orchestrator shutting down"
        for deps in (False, True):
            await asyncio.gather(*(self.executor.retire(svc, rep, why, drain=True)
                                   for svc in self.services.values() if svc.dependency == deps
                                   for rep in list(svc.replicas.values())
                                   if rep.state in LIVE or rep.state in BROKEN), return_exceptions=True)
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

    async def scale(self, service: str, n: int, reason: str = "manual scale") -> None:
        """Set the desired count now; the autoscaler carries on from it at its next decision."""
        self.scaling.scale(self._service(service), n, reason)

    async def wait_converged(self, timeout: float = 30.0) -> None:
        """Until every service has exactly its desired count of ready replicas, and nothing else."""
        deadline = self.mono() + timeout
        while not self.converged():
            if self.mono() > deadline:
                raise TimeoutError(f"stack not ready after {timeout} s: {self._summary()}")
            await asyncio.sleep(0.02)

    def converged(self) -> bool:
        return all(svc.converged() for svc in self.services.values())

    def replicas_of(self, service: str) -> list[Replica]:
        return list(self._service(service).replicas.values())

    # --- used by a rollout, which takes over one service's replicas meanwhile -------------------

    def hand_to_rollout(self, service: str, by: str) -> None:
        """Stop reconciling `service` until take_back(): its replicas are being replaced by `by`."""
        self._service(service).rollout_owner = by

    def take_back(self, service: str, spec: ServiceSpec | None = None) -> None:
        """Reconcile `service` again, with `spec` from now on when given."""
        svc = self._service(service)
        if spec is not None:
            svc.spec = spec
        svc.rollout_owner = None
        self._wake.set()

    # --- used by apply (apply_exec.py) ---------------------------------------------------------

    def add_service(self, name: str, spec: ServiceSpec) -> None:
        """A service new in the stack file: started by the reconciler like any other."""
        svc = self.services[name] = ServiceRuntime(name, spec, spec.replicas.start_count)
        if not isinstance(spec.autoscale, NoPolicy):
            self.run_loop(self.scaling.run(svc), f"autoscale-{name}")
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
            self.run_loop(self.scaling.run(svc), f"autoscale-{name}")

    def _cancel_autoscaler(self, name: str) -> None:
        for t in [t for t in self._loops if t.get_name() == f"autoscale-{name}"]:
            t.cancel()
            self._loops.remove(t)

    # --- the gateway's callbacks --------------------------------------------------------------

    def on_eject(self, service: str, replica_id: str, reason: str) -> None:
        """Gateway callback: it took a replica out of rotation by itself (refused/reset)."""
        svc = self.services.get(service)
        rep = svc.replicas.get(replica_id) if svc else None
        if rep is None:
            return
        self.pool.changed(service)
        step = lifecycle.ejected(svc.facts(rep), reason)
        self.carry_out(svc, rep, step)
        if step.ejected:
            self.spawn(self._confirm_ejection(svc, rep))

    def on_withdraw(self, service: str, replica_id: str, reason: str) -> None:
        """Gateway callback: a replica stalled while its siblings answered, and the gateway took it
        out of rotation. Not a verdict: its health probes decide (now rather than at the next
        interval). A pass puts it back in the pool; failures make it unhealthy as usual (under the
        disruption budget), and then what it still holds is given up."""
        svc = self.services.get(service)
        rep = svc.replicas.get(replica_id) if svc else None
        if rep is None or rep.state != S.READY or not rep.joined:
            return
        self.pool.changed(service)
        self.events.emit("withdrawn", service, replica_id,
                         f"gateway took it out of rotation: {reason}; its health probes decide")
        self.probing.hint(replica_id)

    def on_stalled_together(self, service: str, reason: str) -> None:
        """Gateway callback: every replica of `service` holds reads with no answer from any. The
        probes may still pass (a lock held in the database stalls requests, not `_health`), so
        without this event nothing would say why the service stopped answering."""
        if service in self.services:
            self.events.emit("stalled", service, None, reason)

    def on_tls_event(self, kind: str, host: str, detail: str) -> None:
        """Gateway report: a certificate issued or renewed by an ACME CA, or a certificate that
        could not be had or reloaded (the previous one, if any, is still served)."""
        self.events.emit("tls", None, host or None, detail if kind == "tls_cert" else f"problem: {detail}")

    def on_no_replica(self, service: str) -> None:
        """Gateway callback: a request is held because no replica of `service` is ready. A service
        scaled to zero gets one replica now (the held requests go out once it is ready)."""
        svc = self.services.get(service)
        if svc is not None:
            self.scaling.wake_from_zero(svc, self.stack.gateway.limits.no_replica_wait)

    def on_replica_error(self, service: str, replica_id: str, status: int) -> None:
        """Gateway hint: a replica answered 5xx. Probe it now instead of at its next interval, so a
        replica that fails everything (e.g. after `_crash`) leaves the rotation within milliseconds."""
        self.probing.hint(replica_id)

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
        if gw.on_backend_error is None:
            gw.on_backend_error = self.on_replica_error
        if gw.on_no_backend is None:
            gw.on_no_backend = self.on_no_replica
        if getattr(gw, "on_tls_event", False) is None:  # a gateway without TLS support has none
            gw.on_tls_event = self.on_tls_event

    def _stats(self, service: str) -> auto.Sample:
        st = self.gateway.counters(service)
        if st is None:
            return auto.Sample(0, None)  # no request routed to it yet
        return auto.Sample(st.api_requests, st.first_request_at)

    # --- status ---------------------------------------------------------------------------------

    def snapshot(self) -> StackStatus:
        """The typed status (status.py) that the admin API, the CLI, the metrics and `up` render."""
        now = self.mono()
        return StackStatus(
            stack=self.stack.name, driver=self.driver.name, converged=self.converged(),
            last_event_id=self.events.last_id,
            services={svc.name: self._service_status(svc, now) for svc in self.services.values()},
            certs=certs_status(getattr(self.gateway, "tls_certs", ()), time.time()),
            gateways=tuple(GatewayStatus(g.address, g.node, g.attached, g.answering, g.requests)
                           for g in (self.gateway.lines() if hasattr(self.gateway, "lines") else ())))

    def _service_status(self, svc: ServiceRuntime, now: float) -> ServiceStatus:
        views = [] if svc.dependency else self.pool.views(svc.name)
        rotation = self.pool.rotation(svc.name, svc.replicas.values(), views)
        return svc.status({v.id: v for v in views}, rotation, self._stats(svc.name), now)

    def status(self) -> dict:
        """The snapshot's JSON form (GET /api/status; see status.to_json for its keys)."""
        return to_json(self.snapshot())

    # ------------------------------------------------------------------------------------------
    # The reconcile loop (the mode's reconciler does one pass per service)
    # ------------------------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for svc in self.services.values():
                try:
                    self.reconciler.reconcile(svc)
                except Exception:
                    log.exception("reconcile of %s failed", svc.name)

    def blocked(self, svc: ServiceRuntime) -> bool:
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

    def launch_spec(self, svc: ServiceRuntime, port: int) -> LaunchSpec:
        """What the driver gets for a replica of `svc` on `port` (an engine driver: for the service)."""
        gw_port = self.gateway.port or self.stack.gateway.port
        return svc.launch_spec(self.stack, port, gw_port, self.state_dir, REPLICA_HOST)

    # ------------------------------------------------------------------------------------------
    # Carrying out lifecycle steps (lifecycle.py decides)
    # ------------------------------------------------------------------------------------------

    def _apply_probe(self, svc: ServiceRuntime, rep: Replica, ok: bool) -> None:
        self.carry_out(svc, rep, lifecycle.probed(svc.facts(rep, self.pool.in_rotation(rep)), ok, svc.rules(),
                                                   lambda: svc.siblings(rep), self.mono(), svc.name))

    async def _confirm_ejection(self, svc: ServiceRuntime, rep: Replica) -> None:
        ok = await self.probing.once(svc, rep)
        self.carry_out(svc, rep, lifecycle.confirmed(svc.facts(rep), ok, svc.rules()))

    def replica_exited(self, service: str, replica_id: str, reason: str) -> None:
        """The driver says a replica is gone (an exit event, or absent from a snapshot)."""
        svc = self.services.get(service)
        rep = svc.replicas.get(replica_id) if svc else None
        if rep is not None:
            self.carry_out(svc, rep, lifecycle.exited(svc.facts(rep), reason))

    def carry_out(self, svc: ServiceRuntime, rep: Replica, step: lifecycle.Step) -> None:
        now = self.mono()
        if step.failures is not None:
            rep.consecutive_failures = step.failures
        if step.stop_probe:
            self.probing.stop(rep)
        if step.leave_pool:
            self.pool.leave(rep, failed=step.to is S.UNHEALTHY)
        if step.to is not None:
            rep.transition(step.to, step.why)
        if step.became_ready:
            rep.ready_at = now
            rep.last_error = None
        if step.last_error is not None:
            rep.last_error = step.last_error
        if step.join_pool:
            self.pool.join(rep)
        if step.became_ready:
            if rep.handle is not None:
                self.spawn(self._driver_ready(rep))
            svc.backoff[rep.port] = record_ready(svc.backoff.get(rep.port, BackoffState()), now)
        if step.spare is True:
            svc.spared.add(rep.id)
        elif step.spare is False:
            svc.spared.discard(rep.id)
        for kind, why in step.events:
            self.events.emit(kind, svc.name, rep.id, why)
        if step.wake:
            self._wake.set()

    async def _driver_ready(self, rep: Replica) -> None:
        try:
            await self.driver.ready(rep.handle)
        except Exception:
            log.exception("driver: marking %s ready failed", rep.id)

    # ------------------------------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------------------------------

    def wake(self) -> None:
        """Something changed: run a reconcile pass soon."""
        self._wake.set()

    def run_loop(self, coro, name: str) -> None:
        """A long-running loop, cancelled at shutdown."""
        self._loops.append(asyncio.create_task(coro, name=name))

    def spawn(self, coro) -> asyncio.Task:
        """One-off work (a stop, a probe after an ejection) that shutdown waits for."""
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _service(self, name: str) -> ServiceRuntime:
        try:
            return self.services[name]
        except KeyError:
            raise KeyError(f"no service {name!r} in stack {self.stack.name!r}") from None

    def _summary(self) -> str:
        parts = []
        for svc in self.services.values():
            states = ", ".join(f"{r.port}:{r.state.value}" for r in sorted(svc.replicas.values(), key=lambda r: r.port))
            parts.append(f"{svc.name} desired {svc.desired} [{states}] pending {sorted(svc.pending)}")
        return "; ".join(parts)
