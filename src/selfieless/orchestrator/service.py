"""What the orchestrator keeps per service: its spec, desired count, replicas, scheduled starts and
the state of its autoscaling, crash-loop backoff, disruption budget and rollout ownership. (What the
engine-owned mode keeps besides, the count the engine accepted, is reconcile_engine.py's.)"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Container, Mapping

from . import autoscale as auto
from . import lifecycle
from . import scale_to_zero as stz
from .backoff import BackoffState, in_crash_loop
from .plan import PENDING, Slot
from .replica import LIVE, Replica, ReplicaState as S
from .drivers.base import LaunchSpec
from .stack import ServiceSpec, Stack, WindowPolicy, render
from .taken_ports import TakenPort
from .status import PendingStart, ReplicaStatus, ServiceStatus, WindowStatus


@dataclass
class ScheduledStart:
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
    # Port-owned mode only (reconcile_ports.py; an engine starts and restarts its own replicas),
    # by host port: starts scheduled or in progress, crash-loop backoff, replicas replaced so far,
    # ports found held by another program.
    pending: dict[int, ScheduledStart] = field(default_factory=dict)
    backoff: dict[int, BackoffState] = field(default_factory=dict)
    restarts: dict[int, int] = field(default_factory=dict)
    taken: dict[int, TakenPort] = field(default_factory=dict)  # ports another program held (taken_ports.py)
    no_port: str | None = None        # why replicas it wants have no port (status, events)
    window: auto.WindowState = field(default_factory=auto.WindowState)
    rate: auto.RateState = field(default_factory=auto.RateState)
    last_decision: str | None = None
    dependency: bool = False          # a backing service from `dependencies:` (no pool, TCP check)
    waiting_for: str | None = None    # the dependency a first start waits for (status, events)
    # Failing ready replicas the disruption budget keeps in rotation instead of replacing them.
    spared: set[str] = field(default_factory=set)
    rollout_owner: str | None = None  # the rollout that owns this service's replicas: no reconciling
    idle: stz.IdleState = field(default_factory=stz.IdleState)  # scale to zero: last request seen

    def with_spec(self, spec: ServiceSpec) -> ServiceRuntime:
        """This service as it would be with `spec` (a rollout's other side), sharing its replicas."""
        return ServiceRuntime(self.name, spec, self.desired, replicas=self.replicas, dependency=self.dependency)

    def converged(self) -> bool:
        """Exactly `desired` replicas, all ready, and no start pending."""
        return (all(r.state == S.READY for r in self.replicas.values()) and len(self.replicas) == self.desired
                and not self.pending)

    def live(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.state in LIVE]

    def slots(self) -> list[Slot]:
        out = [Slot(r.port, r.state, r.id) for r in self.replicas.values() if r.state != S.STOPPED]
        out += [Slot(port, PENDING) for port in self.pending]
        return out

    def launch_spec(self, stack: Stack, port: int, gateway_port: int, state_dir: str, host: str) -> LaunchSpec:
        """What the driver needs to start one replica on `port`: the stack's placeholders filled in."""
        values = {
            **stack.variables, **self.spec.variables,
            "port": port, "service": self.name, "stack": stack.name, "host": host,
            "gateway_url": f"http://127.0.0.1:{gateway_port}", "gateway_port": gateway_port, "state_dir": state_dir,
        }
        docker: dict[str, Any] = {"network": stack.network, "extra_hosts": dict(self.spec.extra_hosts)}
        if self.dependency:
            dep = stack.dependencies[self.name]
            docker.update(name=f"{stack.name}-{self.name}", host_ip=host, volumes=dict(dep.volumes))
        return LaunchSpec(**docker,
            stack=stack.name, service=self.name, host_port=port,
            command=[render(a, values) for a in self.spec.command] if self.spec.command else None,
            image=self.spec.image, container_port=self.spec.container_port,
            environment={k: render(v, values) for k, v in self.spec.environment.items()},
            preload=getattr(self.spec, "preload", False),
            constraints=tuple(self.spec.placement.constraints), preferences=tuple(self.spec.placement.preferences),
            health_path=None if self.dependency else self.spec.health.path, stop_grace=self.spec.drain_timeout,
            **_update_fields(getattr(self.spec, "update", None)),
        )

    # --- what lifecycle.py's decisions are told about one replica ----------------------------

    def facts(self, rep: Replica, in_rotation: bool | None = None) -> lifecycle.Facts:
        """`in_rotation`: what the gateway's view says (pool.py); only a probe's decision reads
        it, the others take the control plane's will (`joined`) for it."""
        return lifecycle.Facts(state=rep.state, started_at=rep.started_at,
                               consecutive_failures=rep.consecutive_failures, joined=rep.joined,
                               in_rotation=rep.joined if in_rotation is None else in_rotation,
                               adopted=rep.adopted, spared=rep.id in self.spared, dependency=self.dependency,
                               last_error=rep.last_error)

    def rules(self) -> lifecycle.Rules:
        hs = self.spec.health
        return lifecycle.Rules(failure_threshold=hs.failure_threshold, start_grace=hs.start_grace)

    def siblings(self, rep: Replica) -> lifecycle.Siblings:
        """The disruption budget's counts of the other replicas (disruption.py)."""
        others = [r for r in self.replicas.values() if r.id != rep.id]
        ready = [r for r in others if r.state == S.READY]
        unavailable = len(self.pending) + sum(1 for r in others if r.state in (S.STARTING, S.UNHEALTHY, S.EXITED))
        return lifecycle.Siblings(ready=len(ready), failing_ready=sum(1 for r in ready if r.consecutive_failures),
                                  unavailable=unavailable)

    # --- the typed status (status.py) ------------------------------------------------------

    def status(self, views: Mapping[str, Any], rotation: Container[str], stats: auto.Sample,
               now: float) -> ServiceStatus:
        """One service's status from the controller's records, the gateway pool's views of its
        replicas (by id: in flight, served), the ids in rotation (pool.py) and its request
        counters; `now` is monotonic."""
        replicas = []
        for rep in sorted(self.replicas.values(), key=lambda r: r.port):
            v = views.get(rep.id)
            h = rep.handle
            replicas.append(ReplicaStatus(
                id=rep.id, port=rep.port, state=rep.state.value, health=rep.health, in_pool=rep.id in rotation,
                in_flight=v.in_flight if v else 0, requests=v.served if v else 0, restarts=rep.restarts,
                adopted=rep.adopted, pid=getattr(h, "pid", None), detail=getattr(h, "detail", ""),
                started_at=getattr(h, "started_at", None), uptime=round(now - rep.started_at, 3),
                last_error=rep.last_error, host=getattr(h, "host", None) or "127.0.0.1",
                db_connections=rep.db_connections))
        policy = self.spec.autoscale
        window = None
        if isinstance(policy, WindowPolicy):
            ws = self.window
            if ws.window_start is None and stats.first_request_at is not None:
                ws = auto.WindowState(window_start=stats.first_request_at)
            window = WindowStatus(
                seconds=policy.window_seconds, requests_per_replica=policy.requests_per_replica,
                count=auto.window_count(ws, stats), started=ws.window_start is not None,
                ends_in=None if ws.window_start is None
                else round(max(0.0, ws.window_start + policy.window_seconds - now), 3))
        return ServiceStatus(
            name=self.name, kind="dependency" if self.dependency else "service",
            desired=self.desired, actual=len(self.live()),
            ready=sum(1 for r in self.replicas.values() if r.state == S.READY),
            min=self.spec.replicas.min, max=self.spec.replicas.max,
            host_ports=str(self.spec.host_ports) if self.spec.host_ports is not None else "-", routes=tuple(self.spec.routes), policy=policy.policy,
            api_requests=stats.count, window=window, last_decision=self.last_decision, replicas=tuple(replicas),
            pending=tuple(PendingStart(port, round(max(0.0, p.due - now), 3), p.reason)
                          for port, p in sorted(self.pending.items())),
            crash_loops={port: st.failures for port, st in self.backoff.items() if in_crash_loop(st)},
            waiting_for=self.waiting_for, no_port=self.no_port,
        )


def _update_fields(update) -> dict[str, Any]:
    """The `update:` block as LaunchSpec fields (the swarm driver hands them to Swarm)."""
    if update is None:
        return {}
    return {"update_parallelism": update.parallelism, "update_order": update.order,
            "update_monitor": update.monitor, "update_failure_action": update.failure_action}
