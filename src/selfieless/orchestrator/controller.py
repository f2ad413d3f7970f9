"""The runtime: the control plane that keeps a stack running.

`Orchestrator(stack, driver, gateway)` owns, per service, the desired replica count and the
records of its replicas, and runs on one asyncio loop:

- the reconciler: computes a convergence plan (plan.py) whenever something changed and executes
  it (start, drain-and-stop, replace on the same port after the crash-loop backoff);
- a health-probe task per replica (health.py): a replica joins the gateway pool after its first
  successful probe, and one that fails `failure_threshold` probes is taken out and replaced;
- the exit watcher: driver exit events mark a replica exited at once;
- passive ejections from the gateway (`on_eject`): confirmed by an immediate probe, then the
  replica is replaced or put back;
- an autoscaler task per service (autoscale.py), reading the gateway's request counters;
- adoption at start (driver.list()) and graceful shutdown;
- dependencies (the stack's `dependencies:`, e.g. the database) run as fixed one-replica services
  without a gateway pool, checked over TCP; a service that `depends_on` one starts its first
  replica only once the dependency is ready, and shutdown stops them last.

Decisions live in the pure modules; this module only gathers inputs, applies decisions and emits
events (events.py) that say why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import autoscale as auto
from . import disruption
from . import scale_to_zero as stz
from .backoff import BackoffPolicy, BackoffState, in_crash_loop, record_failure, record_ready
from .drivers.base import Driver, DriverError, ExitEvent, LaunchSpec, ReplicaHandle
from .events import EventLog
from .health import Probe, Verdict, tcp_probe, verdict
from .probe import HttpProber
from .plan import PENDING, CancelPending, Replace, Slot, Start, Stop, plan_service
from .replica import BROKEN, LIVE, Replica, ReplicaState as S
from .stack import NoPolicy, RatePolicy, ServiceSpec, Stack, WindowPolicy, render

log = logging.getLogger(__name__)

REPLICA_HOST = "127.0.0.1"
# A starting replica is probed this often (not every `interval`): readiness is what a replacement
# waits for, and a refused connection costs next to nothing.
STARTING_PROBE_INTERVAL = 0.05
# Earliest next probe after a gateway 5xx hint (see _probe_loop).
HINTED_PROBE_GAP = 0.05
# A replica found running but not wanted (adoption) only has to free its port quickly.
REPLACE_GRACE = 1.0
# Replacing a broken replica (unhealthy, or exited) kills it at once: it is out of rotation already,
# has nothing to finish, and its successor waits for the port.
BROKEN_REPLACE_GRACE = 0.0
# How often the rate policy samples the counters, and the window policy polls for a first request.
RATE_SAMPLE_INTERVAL = 0.25
FIRST_REQUEST_POLL = 0.1


@dataclass
class _Pending:
    """A start scheduled on a port: after a backoff delay, or in progress."""

    task: asyncio.Task
    due: float             # monotonic
    reason: str
    committed: bool = False  # past the delay: the start can no longer be cancelled


@dataclass
class ServiceRuntime:
    name: str
    spec: ServiceSpec
    desired: int
    replicas: dict[str, Replica] = field(default_factory=dict)
    pending: dict[int, _Pending] = field(default_factory=dict)
    backoff: dict[int, BackoffState] = field(default_factory=dict)
    restarts: dict[int, int] = field(default_factory=dict)
    window: auto.WindowState = field(default_factory=auto.WindowState)
    rate: auto.RateState = field(default_factory=auto.RateState)
    last_decision: str | None = None
    dependency: bool = False          # a backing service from `dependencies:` (no pool, TCP check)
    waiting_for: str | None = None    # the dependency a first start waits for (status, events)
    held: set[str] = field(default_factory=set)  # failing replicas kept by the disruption budget
    held_by: str | None = None        # a rollout owns this service's replicas: no reconciling
    idle: stz.IdleState = field(default_factory=stz.IdleState)  # scale to zero: last request seen

    def live(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.state in LIVE]

    def slots(self) -> list[Slot]:
        out = [Slot(r.port, r.state, r.id) for r in self.replicas.values() if r.state != S.STOPPED]
        out += [Slot(port, PENDING) for port in self.pending]
        return out


class Orchestrator:
    def __init__(
        self,
        stack: Stack,
        driver: Driver,
        gateway: Any,
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
        self._probe_fn = probe
        self._prober: HttpProber | None = None
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
        self._tasks: set[asyncio.Task] = set()        # one-off work: stops, probes after ejection
        self._loops: list[asyncio.Task] = []          # long-running loops
        self._probers: dict[str, asyncio.Task] = {}   # replica id -> probe loop
        self._probe_now: dict[str, asyncio.Event] = {}  # replica id -> set to cut its probe wait short
        self._running = False
        self._stopping = False

    # ------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what is already running, then start the loops. Returns without waiting for
        replicas to become ready (see wait_ready)."""
        if self._running:
            return
        self._running = True
        if self._probe_fn is None:
            self._prober = HttpProber()
            self._probe_fn = self._prober
        self._hook_gateway()
        self._loops.append(asyncio.create_task(self._watch_exits(), name="orchestrator-exits"))
        if self._adopt:
            await self._adopt_existing()
        for svc in self.services.values():
            if not isinstance(svc.spec.autoscale, NoPolicy):
                self._loops.append(asyncio.create_task(self._autoscale_loop(svc), name=f"autoscale-{svc.name}"))
        self._loops.append(asyncio.create_task(self._reconcile_loop(), name="orchestrator-reconcile"))
        self._wake.set()

    async def stop(self, stop_replicas: bool = True) -> None:
        """Graceful shutdown: drain and stop every replica. With stop_replicas=False the replicas
        keep running (detach), for a later orchestrator to adopt."""
        if not self._running or self._stopping:
            return
        self._stopping = True
        for t in self._loops + list(self._probers.values()):
            t.cancel()
        for svc in self.services.values():
            for p in svc.pending.values():
                if not p.committed:
                    p.task.cancel()
        await asyncio.gather(*self._loops, *self._probers.values(), return_exceptions=True)
        # Let in-progress starts and stops finish so nothing is left half-made.
        pending = [p.task for svc in self.services.values() for p in svc.pending.values()]
        await asyncio.gather(*pending, *list(self._tasks), return_exceptions=True)
        for t in list(self._probers.values()):
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
        await self.driver.close()
        if self._prober is not None:
            await self._prober.aclose()
        self._running = False

    async def scale(self, service: str, n: int, reason: str = "manual scale") -> None:
        """Set the desired count now; the autoscaler carries on from it at its next decision."""
        svc = self._service(service)
        if svc.dependency:
            raise ValueError(f"{service} is a dependency: it always runs exactly one replica")
        # The stack's bounds, which the autoscaler keeps to as well (max never exceeds the port range).
        low, high = svc.spec.replicas.min, svc.spec.replicas.max
        if not low <= n <= high:
            raise ValueError(f"{service}: replicas must be between {low} and {high} (replicas.min and "
                             f"replicas.max in the stack)")
        old = svc.desired
        svc.desired = n
        # The rate policy's stabilisation period restarts, so a manual count is not undone at once.
        svc.rate = auto.RateState(samples=svc.rate.samples, since=self._mono())
        svc.last_decision = f"scaled {service} {old}\u2192{n}: {reason}"
        self.events.emit("scaled", service, None, svc.last_decision)
        self._wake.set()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every service has exactly its desired count of ready replicas, and nothing else."""
        deadline = self._mono() + timeout
        while not self.converged():
            if self._mono() > deadline:
                raise TimeoutError(f"stack not ready after {timeout} s: {self._summary()}")
            await asyncio.sleep(0.02)

    def converged(self) -> bool:
        for svc in self.services.values():
            ready = [r for r in svc.replicas.values() if r.state == S.READY]
            others = [r for r in svc.replicas.values() if r.state != S.READY]
            if len(ready) != svc.desired or others or svc.pending:
                return False
        return True

    # --- used by a rollout (rollout_exec.py), which takes over one service's replicas ----------

    def hold(self, service: str, by: str) -> None:
        """Stop reconciling `service` until release(): its replicas are being replaced by `by`."""
        self._service(service).held_by = by

    def release(self, service: str, spec: ServiceSpec | None = None) -> None:
        """Reconcile `service` again, with `spec` from now on when given."""
        svc = self._service(service)
        if spec is not None:
            svc.spec = spec
        svc.held_by = None
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
        self._probers[rep.id] = asyncio.create_task(self._probe_loop(ServiceRuntime(svc.name, spec, svc.desired,
                                                                                    replicas=svc.replicas), rep),
                                                    name=f"probe-{rep.id}")
        return rep

    async def stop_replica(self, service: str, replica_id: str, drain: bool, reason: str) -> None:
        """Take one replica out (draining first when asked and it serves) and stop it."""
        svc = self._service(service)
        rep = svc.replicas.get(replica_id)
        if rep is None:
            return
        if rep.can(S.STOPPING):
            rep.transition(S.STOPPING, reason)
        self._stop_probe(rep)
        await self._stop_replica(svc, rep, drain=drain and rep.in_pool, reason=reason,
                                 grace=None if drain else BROKEN_REPLACE_GRACE)

    # --- used by apply (apply_exec.py) ---------------------------------------------------------

    def add_service(self, name: str, spec: ServiceSpec) -> None:
        """A service new in the stack file: started by the reconciler like any other."""
        svc = self.services[name] = ServiceRuntime(name, spec, spec.replicas.start_count)
        if not isinstance(spec.autoscale, NoPolicy):
            self._loops.append(asyncio.create_task(self._autoscale_loop(svc), name=f"autoscale-{name}"))
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
        """The autoscale loop reads its policy and bounds once: start it again after they changed."""
        svc = self._service(name)
        self._cancel_autoscaler(name)
        if not isinstance(svc.spec.autoscale, NoPolicy):
            svc.window, svc.rate = auto.WindowState(), auto.RateState()
            self._loops.append(asyncio.create_task(self._autoscale_loop(svc), name=f"autoscale-{name}"))

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
        if rep is None or rep.state != S.READY:
            return
        rep.in_pool = False
        self.events.emit("ejected", service, replica_id, f"gateway took it out of rotation: {reason}")
        self._spawn(self._confirm_ejection(svc, rep))

    def on_no_replica(self, service: str) -> None:
        """Gateway callback: a request is held because no replica of `service` is ready. A service
        scaled to zero gets one replica now (the held requests go out once it is ready)."""
        svc = self.services.get(service)
        if svc is None or svc.dependency or svc.held_by is not None:
            return
        policy = svc.spec.autoscale
        if stz.wake(svc.desired, held=True) is None or not (isinstance(policy, RatePolicy) and svc.spec.replicas.min == 0):
            return
        now = self._mono()
        svc.idle = stz.IdleState(self._stats(service).count, now)
        svc.rate = auto.RateState(samples=svc.rate.samples, since=now)
        svc.desired = 1
        svc.last_decision = f"scaled {service} 0\u21921: a request is waiting (scale from zero)"
        self.events.emit("scaled", service, None, svc.last_decision)
        self._wake.set()

    def on_replica_error(self, service: str, replica_id: str, status: int) -> None:
        """Gateway hint: a replica answered 5xx. Probe it now instead of at its next interval, so a
        replica that fails everything (e.g. after `_crash`) leaves the rotation within milliseconds."""
        wake = self._probe_now.get(replica_id)
        if wake is not None:
            wake.set()

    def status(self) -> dict:
        """A plain-dict (JSON-ready) snapshot for the admin API, the CLI and the gateway's `/`.

        {"stack", "driver", "converged", "last_event_id",
         "services": {name: {"desired", "actual", "ready", "min", "max", "host_ports", "routes",
                             "policy", "api_requests", "last_decision",
                             "window": None | {"seconds", "requests_per_replica", "count",
                                               "started", "ends_in"},
                             "pending": [{"port", "in", "reason"}],   # restarts waiting (backoff)
                             "crash_loops": {port: failures},
                             "replicas": [{"id", "port", "state", "health", "in_pool",
                                           "in_flight", "requests", "restarts", "adopted",
                                           "pid", "detail", "started_at", "uptime",
                                           "last_error"}]}}}
        """
        now = self._mono()
        out: dict[str, Any] = {
            "stack": self.stack.name,
            "driver": self.driver.name,
            "converged": self.converged(),
            "last_event_id": self.events.last_id,
            "services": {},
        }
        for svc in self.services.values():
            pool_views = {} if svc.dependency else {v.id: v for v in self._pool_views(svc.name)}
            stats = self._stats(svc.name)
            replicas = []
            for rep in sorted(svc.replicas.values(), key=lambda r: r.port):
                v = pool_views.get(rep.id)
                h = rep.handle
                replicas.append({
                    "id": rep.id, "port": rep.port, "state": rep.state.value, "health": rep.health,
                    "in_pool": rep.in_pool, "in_flight": v.in_flight if v else 0, "requests": v.served if v else 0,
                    "restarts": rep.restarts, "adopted": rep.adopted,
                    "pid": getattr(h, "pid", None), "detail": getattr(h, "detail", ""),
                    "started_at": getattr(h, "started_at", None),
                    "uptime": round(now - rep.started_at, 3),
                    "last_error": rep.last_error,
                })
            policy = svc.spec.autoscale
            info: dict[str, Any] = {
                "desired": svc.desired,
                "actual": len(svc.live()),
                "ready": sum(1 for r in svc.replicas.values() if r.state == S.READY),
                "min": svc.spec.replicas.min, "max": svc.spec.replicas.max,
                "host_ports": str(svc.spec.host_ports), "routes": list(svc.spec.routes),
                "policy": policy.policy,
                "api_requests": stats.count,
                "window": None,
                "last_decision": svc.last_decision,
                "replicas": replicas,
                "pending": [{"port": port, "in": round(max(0.0, p.due - now), 3), "reason": p.reason}
                            for port, p in sorted(svc.pending.items())],
                "crash_loops": {str(port): st.failures for port, st in svc.backoff.items() if in_crash_loop(st)},
            }
            if isinstance(policy, WindowPolicy):
                ws = svc.window
                if ws.window_start is None and stats.first_request_at is not None:
                    ws = auto.WindowState(window_start=stats.first_request_at)
                info["window"] = {
                    "seconds": policy.window_seconds,
                    "requests_per_replica": policy.requests_per_replica,
                    "count": auto.window_count(ws, stats),
                    "started": ws.window_start is not None,
                    "ends_in": None if ws.window_start is None
                    else round(max(0.0, ws.window_start + policy.window_seconds - now), 3),
                }
            info["kind"] = "dependency" if svc.dependency else "service"
            info["waiting_for"] = svc.waiting_for
            out["services"][svc.name] = info
        return out

    # ------------------------------------------------------------------------------------------
    # Gateway plumbing
    # ------------------------------------------------------------------------------------------

    def _hook_gateway(self) -> None:
        gw = self.gateway
        if hasattr(gw, "set_routes"):
            gw.set_routes(self.stack.routes())
        # The gateway may have been built before the orchestrator existed; wire the callback now.
        if getattr(gw, "on_eject", "missing") is None:
            gw.on_eject = self.on_eject
        if getattr(gw, "on_replica_error", "missing") is None:
            gw.on_replica_error = self.on_replica_error
        if getattr(gw, "on_no_replica", "missing") is None:
            gw.on_no_replica = self.on_no_replica

    def _pool(self, service: str):
        return self.gateway.pool(service)

    def _pool_views(self, service: str) -> list:
        try:
            return list(self._pool(service).replicas)
        except Exception:
            return []

    def _stats(self, service: str) -> auto.Sample:
        try:
            st = self.gateway.stats(service)
        except KeyError:
            return auto.Sample(0, None)  # no request routed to it yet
        if isinstance(st, dict):
            return auto.Sample(st.get("api_requests", 0), st.get("first_request_at"))
        return auto.Sample(st.api_requests, st.first_request_at)

    def _join_pool(self, rep: Replica) -> None:
        if self.services[rep.service].dependency:
            return  # no routes, no pool: other replicas reach it directly
        self._pool(rep.service).add(rep.id, REPLICA_HOST, rep.port)
        rep.in_pool = True

    def _leave_pool(self, rep: Replica) -> None:
        # Always tell the pool, even when we think it is out: it also forgets an entry the
        # gateway ejected by itself and still lists.
        if not self.services[rep.service].dependency:
            self._pool(rep.service).remove(rep.id)
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
                    if not self._blocked(svc):
                        self._reconcile(svc)
                except Exception:
                    log.exception("reconcile of %s failed", svc.name)

    def _blocked(self, svc: ServiceRuntime) -> bool:
        """A service with no replica yet waits until each of its dependencies has a ready one."""
        if svc.held_by is not None:
            return True
        if svc.replicas or svc.pending:
            return False
        for name in svc.spec.depends_on:
            dep = self.services.get(name)
            if dep is not None and not any(r.state == S.READY for r in dep.replicas.values()):
                if svc.waiting_for != name:
                    svc.waiting_for = name
                    self.events.emit("waiting", svc.name, None, f"waiting for dependency {name} to be ready")
                return True
        svc.waiting_for = None
        return False

    def _reconcile(self, svc: ServiceRuntime) -> None:
        actions = plan_service(svc.name, svc.desired, svc.slots(), svc.spec.host_ports.ports)
        for a in actions:
            if isinstance(a, Start):
                self._schedule_start(svc, a.port, delay=0.0, reason=a.reason)
            elif isinstance(a, Stop):
                rep = svc.replicas[a.replica_id]
                rep.transition(S.STOPPING, a.reason)
                self._stop_probe(rep)
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
        now = self._mono()
        cause = old.last_error or why
        # A broken replica is out of rotation and has nothing to finish: kill it, so the port is free
        # for the new one at once (a dependency, e.g. a database, gets its normal stop timeout).
        grace = svc.spec.drain_timeout if svc.dependency else BROKEN_REPLACE_GRACE
        old.transition(S.STOPPING, f"replacing: {cause}")
        self._stop_probe(old)
        state, delay = record_failure(svc.backoff.get(old.port, BackoffState()), now, self.backoff_policy)
        svc.backoff[old.port] = state
        svc.restarts[old.port] = svc.restarts.get(old.port, 0) + 1
        # The old one must be gone before the new one can bind the same port; shielded, so
        # cancelling the pending start (scale-in meanwhile) never leaves the old one half-stopped.
        stopping = self._spawn(self._stop_replica(svc, old, drain=False, reason=f"replaced: {cause}",
                                                  grace=grace, quiet=True))
        if delay > 0:
            self.events.emit("backoff", svc.name, old.id,
                             f"crash loop on port {old.port} ({state.failures} failures in a row): "
                             f"next start in {delay:g} s")
        self._schedule_start(svc, old.port, delay=delay, reason=f"replacing {old.id} ({cause})",
                             after=stopping, replaces=old.id)

    def _schedule_start(self, svc: ServiceRuntime, port: int, delay: float, reason: str,
                        after: asyncio.Task | None = None, replaces: str | None = None) -> None:
        due = self._mono() + delay
        task = asyncio.create_task(self._start_when_due(svc, port, delay, reason, after, replaces),
                                   name=f"start-{svc.name}-{port}")
        svc.pending[port] = _Pending(task, due, reason)

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
                except DriverError as e:
                    # Could not even launch it (bad image, port taken...): same backoff as a crash.
                    st, delay = record_failure(svc.backoff.get(port, BackoffState()), self._mono(), self.backoff_policy)
                    svc.backoff[port] = st
                    delay = max(delay, self.backoff_policy.initial)
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
        self._start_probe(svc, rep)
        self._wake.set()

    async def _stop_replica(self, svc: ServiceRuntime, rep: Replica, drain: bool, reason: str,
                            grace: float | None = None, quiet: bool = False) -> None:
        try:
            if drain and rep.in_pool:
                t0 = self._mono()
                ok = await self._pool(svc.name).drain(rep.id, timeout=svc.spec.drain_timeout)
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
        gw_port = getattr(self.gateway, "port", None) or self.stack.gateway.port
        values = {
            **self.stack.variables, **svc.spec.variables,
            "port": port, "service": svc.name, "stack": self.stack.name, "host": REPLICA_HOST,
            "gateway_url": f"http://127.0.0.1:{gw_port}", "gateway_port": gw_port, "state_dir": self.state_dir,
        }
        docker: dict[str, Any] = {"network": self.stack.network, "extra_hosts": dict(svc.spec.extra_hosts)}
        if svc.dependency:
            dep = self.stack.dependencies[svc.name]
            docker.update(name=f"{self.stack.name}-{svc.name}", host_ip=REPLICA_HOST, volumes=dict(dep.volumes))
        return LaunchSpec(**docker,
            stack=self.stack.name, service=svc.name, host_port=port,
            command=[render(a, values) for a in svc.spec.command] if svc.spec.command else None,
            image=svc.spec.image, container_port=svc.spec.container_port,
            environment={k: render(v, values) for k, v in svc.spec.environment.items()},
            preload=getattr(svc.spec, "preload", False),
        )

    # ------------------------------------------------------------------------------------------
    # Health
    # ------------------------------------------------------------------------------------------

    def _start_probe(self, svc: ServiceRuntime, rep: Replica) -> None:
        self._probers[rep.id] = asyncio.create_task(self._probe_loop(svc, rep), name=f"probe-{rep.id}")

    def _stop_probe(self, rep: Replica) -> None:
        t = self._probers.pop(rep.id, None)
        if t is not None and t is not asyncio.current_task():
            t.cancel()

    async def _probe_once(self, svc: ServiceRuntime, rep: Replica) -> bool:
        hs = svc.spec.health
        assert self._probe_fn is not None
        if svc.dependency:
            ok, detail = await tcp_probe(REPLICA_HOST, rep.port, hs.timeout)
        else:
            ok, detail = await self._probe_fn(REPLICA_HOST, rep.port, hs.path, hs.timeout)
        rep.last_probe_ok, rep.last_probe_at = ok, self._mono()
        if not ok:
            rep.last_error = f"health probe {'tcp' if svc.dependency else hs.path}: {detail}"
        return ok

    async def _probe_loop(self, svc: ServiceRuntime, rep: Replica) -> None:
        wake = self._probe_now[rep.id] = asyncio.Event()
        try:
            while rep.state in LIVE:
                hs = svc.spec.health  # read each time: `apply` may change it live
                t0 = self._mono()
                wake.clear()
                ok = await self._probe_once(svc, rep)
                if rep.state not in LIVE:
                    return
                self._apply_probe(svc, rep, ok)
                if rep.state not in LIVE:
                    return
                interval = hs.interval if rep.state == S.READY else min(hs.interval, STARTING_PROBE_INTERVAL)
                try:
                    # A 5xx hint from the gateway ends the wait early, but never within
                    # HINTED_PROBE_GAP of the last probe: a replica whose app fails some requests
                    # while its health check passes must not be probed per failed request.
                    async with asyncio.timeout(max(0.0, interval - (self._mono() - t0))):  # no task per wait
                        await wake.wait()
                    await asyncio.sleep(max(0.0, HINTED_PROBE_GAP - (self._mono() - t0)))
                except asyncio.TimeoutError:
                    pass
        finally:
            if self._probers.get(rep.id) is asyncio.current_task():
                del self._probers[rep.id]
            if self._probe_now.get(rep.id) is wake:
                del self._probe_now[rep.id]

    def _apply_probe(self, svc: ServiceRuntime, rep: Replica, ok: bool) -> None:
        hs = svc.spec.health
        now = self._mono()
        v, rep.consecutive_failures = verdict(rep.state, ok, rep.consecutive_failures, hs.failure_threshold,
                                              rep.started_at, now, hs.start_grace)
        if v == Verdict.BECAME_READY:
            rep.transition(S.READY, "first probe passed")
            rep.ready_at = now
            rep.last_error = None
            self._join_pool(rep)
            if rep.handle is not None:
                self._spawn(self._driver_ready(rep))
            svc.backoff[rep.port] = record_ready(svc.backoff.get(rep.port, BackoffState()), now)
            self.events.emit("ready", svc.name, rep.id,
                             f"passed its first health probe {now - rep.started_at:.2f} s after start; "
                             f"{'ready' if svc.dependency else 'in rotation'}")
            self._wake.set()
        elif v in (Verdict.HEALTHY, Verdict.RECOVERED):
            if not rep.in_pool and not svc.dependency:
                self._join_pool(rep)
                self.events.emit("ready", svc.name, rep.id, "health probe passed again; back in rotation")
            if rep.id in svc.held:
                svc.held.discard(rep.id)
                self.events.emit("recovered", svc.name, rep.id, "health probe passed again; no longer held")
        elif v == Verdict.UNHEALTHY:
            if rep.state == S.READY and not svc.dependency and self._hold_failed(svc, rep):
                return
            svc.held.discard(rep.id)
            self._mark_unhealthy(svc, rep, rep.last_error or "health probe failed")

    def _hold_failed(self, svc: ServiceRuntime, rep: Replica) -> bool:
        """The disruption budget (disruption.py): keep a failing ready replica for now?"""
        ready = [r for r in svc.replicas.values() if r.state == S.READY]
        unavailable = len(svc.pending) + sum(1 for r in svc.replicas.values()
                                             if r.state in (S.STARTING, S.UNHEALTHY, S.EXITED))
        d = disruption.on_failure(len(ready), sum(1 for r in ready if r.consecutive_failures), unavailable)
        if d.replace:
            return False
        if rep.id not in svc.held:
            svc.held.add(rep.id)
            self.events.emit("held", svc.name, rep.id,
                             f"{rep.last_error or 'health probe failed'}; "
                             + disruption.describe_hold(svc.name, len(ready) + unavailable, d.all_failing, unavailable))
        return True

    async def _driver_ready(self, rep: Replica) -> None:
        try:
            await self.driver.ready(rep.handle)
        except Exception:
            log.exception("driver: marking %s ready failed", rep.id)

    def _mark_unhealthy(self, svc: ServiceRuntime, rep: Replica, why: str) -> None:
        if rep.in_pool or rep.state == S.READY:
            self._leave_pool(rep)
        if rep.state == S.STARTING and not rep.adopted:
            why = f"not ready {svc.spec.health.start_grace:g} s after start ({why})"
        else:
            n = rep.consecutive_failures
            why = f"{n} consecutive failed probe{'s' if n != 1 else ''}: {why}"
        rep.transition(S.UNHEALTHY, why)
        rep.last_error = why
        self.events.emit("unhealthy", svc.name, rep.id, f"{why}; out of rotation, will be replaced")
        self._wake.set()

    async def _confirm_ejection(self, svc: ServiceRuntime, rep: Replica) -> None:
        ok = await self._probe_once(svc, rep)
        if rep.state != S.READY:
            return  # an exit event or the probe loop got there first
        if ok:
            self._join_pool(rep)
            self.events.emit("ready", svc.name, rep.id, "probe passed after ejection; back in rotation")
        else:
            # The gateway saw it refuse or reset; a failed probe confirms it: replace now rather
            # than wait for `failure_threshold` more probes.
            rep.consecutive_failures = max(rep.consecutive_failures + 1, svc.spec.health.failure_threshold)
            self._stop_probe(rep)
            self._mark_unhealthy(svc, rep, rep.last_error or "ejected by the gateway")

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
        if rep is None or rep.state in (S.STOPPING, S.STOPPED, S.EXITED):
            return  # expected (we stopped it) or already handled
        self._stop_probe(rep)
        self._leave_pool(rep)
        rep.transition(S.EXITED, ev.reason)
        rep.last_error = ev.reason
        self.events.emit("exited", svc.name, rep.id, f"{ev.reason}; will be replaced")
        self._wake.set()

    # ------------------------------------------------------------------------------------------
    # Autoscaling
    # ------------------------------------------------------------------------------------------

    async def _autoscale_loop(self, svc: ServiceRuntime) -> None:
        policy = svc.spec.autoscale
        lo, hi = svc.spec.replicas.min, svc.spec.replicas.max
        while True:
            try:
                sample = self._stats(svc.name)
            except Exception:
                log.exception("reading stats of %s failed", svc.name)
                await asyncio.sleep(1.0)
                continue
            now = self._mono()
            if isinstance(policy, WindowPolicy):
                while True:
                    svc.window, d = auto.window_step(svc.window, sample, now, svc.desired, policy, lo, hi,
                                                     svc.name, self._wall())
                    if d is None:
                        break
                    self._apply_decision(svc, d)
                deadline = auto.window_next_deadline(svc.window, policy)
                # Sleep exactly to the end of the window so its count is read right at the boundary.
                pause = FIRST_REQUEST_POLL if deadline is None else max(0.0, deadline - self._mono())
            elif isinstance(policy, RatePolicy):
                svc.idle = stz.observe(svc.idle, sample.count, now)
                floor = stz.floor(policy, lo, svc.idle, now)
                svc.rate, d = auto.rate_step(svc.rate, sample, now, svc.desired, policy, floor, hi, svc.name)
                self._apply_decision(svc, d)
                pause = RATE_SAMPLE_INTERVAL
            else:
                return
            await asyncio.sleep(pause)

    def _apply_decision(self, svc: ServiceRuntime, d: auto.Decision) -> None:
        if d.desired == svc.desired:
            if isinstance(svc.spec.autoscale, WindowPolicy):
                svc.last_decision = d.reason
            return
        svc.last_decision = d.reason
        svc.desired = d.desired
        self.events.emit("scaled", svc.name, None, d.reason)
        self._wake.set()

    # ------------------------------------------------------------------------------------------
    # Adoption
    # ------------------------------------------------------------------------------------------

    async def _adopt_existing(self) -> None:
        handles = sorted(await self.driver.list(), key=lambda h: h.started_at)
        seen: set[tuple[str, int]] = set()
        adopted: list[tuple[ServiceRuntime, Replica]] = []
        for h in handles:
            svc = self.services.get(h.service)
            if svc is None or h.port not in svc.spec.host_ports.ports:
                await self.driver.stop(h, grace=REPLACE_GRACE)
                self.events.emit("stopped", h.service, h.id, "found running but not part of this stack (any more)")
                continue
            if (h.service, h.port) in seen:
                await self.driver.stop(h, grace=REPLACE_GRACE)
                self.events.emit("stopped", h.service, h.id, f"duplicate replica on port {h.port}; kept the older one")
                continue
            seen.add((h.service, h.port))
            await self.driver.adopt(h)
            # started_at is wall clock; translate to our monotonic clock for the start grace.
            age = max(0.0, self._wall() - h.started_at)
            rep = Replica(id=h.id, service=svc.name, port=h.port, handle=h, adopted=True,
                          started_at=self._mono() - age)
            svc.replicas[rep.id] = rep
            adopted.append((svc, rep))
        results = await asyncio.gather(*(self._probe_once(svc, rep) for svc, rep in adopted))
        for (svc, rep), ok in zip(adopted, results):
            if rep.state != S.STARTING:
                continue  # exited while we were probing
            what = f"found running on port {rep.port}{self._pid_text(rep.handle)}"
            if ok:
                self._apply_probe(svc, rep, True)
                self.events.emit("adopted", svc.name, rep.id, f"{what}; healthy, in rotation")
                self._start_probe(svc, rep)
            elif rep.last_error and "connection failed" in rep.last_error and \
                    self._mono() - rep.started_at < svc.spec.health.start_grace:
                # Probably still booting (the previous orchestrator had just started it).
                self.events.emit("adopted", svc.name, rep.id, f"{what}; still starting")
                self._start_probe(svc, rep)
            else:
                self.events.emit("adopted", svc.name, rep.id, f"{what}; failing its health probe, replacing")
                self._mark_unhealthy(svc, rep, rep.last_error or "health probe failed")
        for svc in self.services.values():
            n = sum(1 for r in svc.replicas.values() if r.adopted)
            if n:
                # Carry on with what was running (within bounds) rather than the initial count.
                svc.desired = max(svc.spec.replicas.min, min(svc.spec.replicas.max, n))

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
