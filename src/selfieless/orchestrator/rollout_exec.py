"""Rolling updates: the entry points, and the per-port rollout (rollout.py) carried out.

`roll`, `undo` and `restart` hand the rollout to the strategy of the orchestrator's reconcile mode,
chosen once with the mode: per port here for a PortDriver (reconcile_ports.py), the engine's own
for an EngineDriver (rollout_owned.py, through reconcile_engine.py). Both record in the same history
(rollout_history.py).

The per-port half is thin I/O: it takes the service over (the reconciler leaves it alone meanwhile),
hands the state machine's commands to the executor (executor.py), and turns what the replicas do
(first passing probe, exit, failed probes) into the machine's events. The decisions are all in
rollout.py.
"""

from __future__ import annotations

import asyncio
import time

from . import rollout as ro
from .commands import StartReplica, StopReplica
from .drivers.base import DriverError
from .lifecycle import BROKEN_REPLACE_GRACE
from .replica import ReplicaState as S
from .rollout_history import HISTORY_FILE, RolloutResult, history, history_json, record
from .stack import ServiceSpec

__all__ = ["HISTORY_FILE", "RolloutResult", "history_json", "restart", "roll", "roll_ports", "undo"]

POLL = 0.02


async def roll(orch, service: str, new_spec: ServiceSpec, *, reason: str = "apply",
               timeout: float = 600.0, rollback_spec: ServiceSpec | None = None) -> RolloutResult:
    """Replace every replica of `service` with one of `new_spec`; on failure go back to the old spec
    (`rollback_spec` when given: the running spec pinned to the image id its replicas run, when the
    image name now resolves to new content). Returns once the service has converged on one
    version (or the rollout paused or timed out)."""
    return await orch.reconciler.roll(service, new_spec, reason=reason, timeout=timeout, rollback_spec=rollback_spec)


async def undo(orch, service: str, timeout: float = 600.0) -> RolloutResult:
    """Roll back to the spec before the last completed rollout."""
    done = [h for h in history(orch, service) if h["outcome"] == "complete"]
    if not done:
        raise ValueError(f"{service}: no completed rollout to undo")
    return await orch.reconciler.undo(service, done[-1]["from"], timeout)


async def restart(orch, service: str, timeout: float = 600.0) -> RolloutResult:
    """Replace every replica with a fresh one of the same spec, the rolling way (with an engine
    driver: the engine's forced update)."""
    return await orch.reconciler.restart(service, timeout)


async def roll_ports(orch, service: str, new_spec: ServiceSpec, *, reason: str, timeout: float,
                     rollback_spec: ServiceSpec | None = None) -> RolloutResult:
    """The per-port rollout: rollout.py's machine, carried out replica by replica."""
    svc = orch.services[service]
    old_spec = rollback_spec or svc.spec
    update = new_spec.update
    ready_old = [(r.id, r.port) for r in orch.replicas_of(service) if r.state == S.READY]
    state = ro.begin(service, ready_old, list(new_spec.host_ports.ports), desired=svc.desired,
                     parallelism=update.parallelism, order=update.order, monitor=update.monitor,
                     failure_action=update.failure_action)
    orch.hand_to_rollout(service, f"rollout ({reason})")
    orch.events.emit("rollout", service, None,
                     f"rolling update started: {reason}; {update.order}, {update.parallelism} at a time, "
                     f"monitor {update.monitor:g} s")
    t0 = time.monotonic()
    jobs: set[asyncio.Task] = set()
    seen: dict[str, str] = {}                 # replica id -> last status reported to the machine
    finish: ro.Finish | None = None
    try:
        while finish is None:
            now = time.monotonic()
            if now - t0 > timeout:
                return RolloutResult(service, "timeout", f"not converged after {timeout:g} s", now - t0)
            state = _observe(orch, service, state, seen, now)
            state, orders = ro.decide(state, now)
            finish = _carry_out(orch, service, orders, jobs, {"new": new_spec, "old": old_spec})
            state = _collect(state, jobs, seen)
            await asyncio.sleep(POLL)
        await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        spec = new_spec if finish is not None and finish.outcome in ("complete", "paused") else old_spec
        orch.take_back(service, spec)
    record(orch, service, finish.outcome, reason, finish.reason, old_spec, new_spec, time.monotonic() - t0)
    kind = {"complete": "rollout", "rolled_back": "rollback", "paused": "rollout"}[finish.outcome]
    orch.events.emit(kind, service, None, f"rolling update {finish.outcome.replace('_', ' ')}: {finish.reason}")
    return RolloutResult(service, finish.outcome, finish.reason, time.monotonic() - t0)


def _carry_out(orch, service: str, orders: list[ro.Order], jobs: set[asyncio.Task],
               specs: dict[str, ServiceSpec]) -> ro.Finish | None:
    """Hand the machine's commands to the executor; the Finish among them, if any."""
    svc = orch.services[service]
    finish = None
    for c in orders:
        if isinstance(c, ro.Finish):
            finish = c
        elif isinstance(c, StartReplica):
            jobs.add(asyncio.create_task(_start(orch, svc, specs[c.version], c)))
        elif isinstance(c, StopReplica):
            rep = svc.replicas.get(c.replica_id)
            if rep is not None:
                # A replica not drained is one that failed: it need not be given long to stop.
                jobs.add(orch.executor.retire(svc, rep, f"rollout: {c.reason}", drain=c.drain,
                                              grace=None if c.drain else BROKEN_REPLACE_GRACE))
    return finish


def _collect(state: ro.Rollout, jobs: set[asyncio.Task], seen: dict[str, str]) -> ro.Rollout:
    """Report the starts that finished to the machine."""
    for t in [t for t in jobs if t.done()]:
        jobs.discard(t)
        result = t.result()
        if isinstance(result, tuple):        # a start: (version, port, replica id or error)
            version, port, rid, err = result
            if rid is None:
                state = ro.start_failed(state, version, port, err)
            else:
                state = ro.started(state, rid, version, port)
                seen[rid] = "starting"
    return state


async def _start(orch, svc, spec: ServiceSpec, c: StartReplica):
    try:
        rep = await orch.executor.start_now(svc, c.port, spec, f"rollout: {c.reason}", boost=not c.spare)
        return (c.version, c.port, rep.id, None)
    except DriverError as e:
        return (c.version, c.port, None, str(e))


def _observe(orch, service: str, state: ro.Rollout, seen: dict[str, str], now: float) -> ro.Rollout:
    """Turn replica state changes since the last look into state-machine events."""
    reps = {r.id: r for r in orch.replicas_of(service)}
    for m in state.members:
        if m.status in ("stopped", "stopping") and m.id not in reps:
            if m.status == "stopping":
                state = ro.stopped(state, m.id)
            continue
        rep = reps.get(m.id)
        if rep is None:
            if m.status != "stopped" and not m.id.startswith("failed-start:"):
                state = ro.failed(state, m.id, "gone", now)
            continue
        if m.status == "starting" and rep.state == S.READY:
            state = ro.ready(state, m.id, now)
        elif m.status in ("starting", "ready") and rep.state in (S.UNHEALTHY, S.EXITED):
            state = ro.failed(state, m.id, rep.last_error or rep.state.value, now)
    return state
