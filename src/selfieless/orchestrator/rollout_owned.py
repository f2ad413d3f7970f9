"""A rolling update with an engine driver (swarm): the engine rolls, we follow.

The engine replaces the tasks itself, with the service's `update:` block as its update config
(order, parallelism, monitor, failure action; see drivers/swarm_spec.py), and rolls back on its
own when a new task fails. The control plane's part:
- new tasks join the gateway pool only after our first passing probe (as any new task does);
- a task the engine is shutting down is drained out of the pool (reconcile_engine.py: `leaving`
  handles);
- no count is sent while the update runs (the service is handed to the rollout);
- the call waits for the engine's verdict (UpdateStatus), then for our own records to settle
  (every replica ready, as many as desired), and says why in the events and the result;
- the rollout is recorded in the same history as the per-port rollouts (rollout_history.py), so
  `rollout history|status|undo|restart` work alike. `undo` is the engine's rollback to its
  previous spec when that spec is the last update's, else an update to the history's old spec.
"""

from __future__ import annotations

import asyncio
import time

from .drivers.base import DriverError
from .drivers.swarm_spec import undo_by_rollback, update_outcome
from .replica import LIVE, ReplicaState as S
from .rollout_history import RolloutResult, record
from .stack import ServiceSpec

POLL = 0.25


async def roll(orch, service: str, new_spec: ServiceSpec, *, reason: str = "apply", timeout: float = 600.0,
               how: str = "update") -> RolloutResult:
    """Have the engine roll `service` to `new_spec` (how: update | restart, which replaces every
    task even with an unchanged spec | rollback, the engine's return to its previous spec) and
    follow it. Returns once the service has converged on one version, or paused, or timed out."""
    svc = orch.services[service]
    old_spec = svc.spec
    update = new_spec.update
    t0 = time.monotonic()
    orch.hand_to_rollout(service, f"rollout ({reason})")
    orch.events.emit("rollout", service, None,
                     f"rolling update started: {reason}; the {orch.driver.name} engine replaces the tasks "
                     f"({update.order}, {update.parallelism} at a time, monitor {update.monitor:g} s, "
                     f"on failure {update.failure_action})")
    outcome, detail = "timeout", f"not converged after {timeout:g} s"
    try:
        try:
            before = (await orch.driver.update_status(service)).get("UpdateStatus")
            if how == "rollback":
                await orch.driver.rollback_service(service)
            else:
                launch = orch.launch_spec(svc.with_spec(new_spec), 0)
                await orch.driver.update_service(launch, force=how == "restart")
        except DriverError as e:
            outcome, detail = "refused", str(e)
            return _finish(orch, service, reason, old_spec, new_spec, outcome, detail, t0)
        said, why = None, None
        while time.monotonic() - t0 < timeout:
            status = (await orch.driver.update_status(service)).get("UpdateStatus") or {}
            done = update_outcome(before, status, undo=how == "rollback")
            if status and status != before and status.get("State") != said:
                said = status.get("State")
                orch.events.emit("rollout", service, None, f"the {orch.driver.name} engine: "
                                 f"{said.replace('_', ' ')}: {status.get('Message') or '-'}")
                if said in ("rollback_started", "paused") and status.get("Message"):
                    why = status["Message"]   # the engine says why here (which task failed)
            if done is not None:
                outcome, detail = done
                if why and outcome != "complete" and why != detail:
                    detail = f"{why}; {detail}"
                break
            await asyncio.sleep(POLL)
        if outcome != "timeout":
            left = max(1.0, timeout - (time.monotonic() - t0))
            if not await _settled(orch, service, left):
                outcome, detail = "timeout", f"{detail}; the replicas did not settle within {left:.0f} s"
    finally:
        orch.take_back(service, new_spec if outcome in ("complete", "paused") else old_spec)
    return _finish(orch, service, reason, old_spec, new_spec, outcome, detail, t0)


async def undo(orch, service: str, to_spec: ServiceSpec, timeout: float = 600.0) -> RolloutResult:
    """Back to the spec before the last completed rollout: the engine's own rollback when its
    previous spec is that rollout's (undo_by_rollback), else an update to `to_spec`."""
    state = await orch.driver.update_status(service)
    if undo_by_rollback(state.get("Spec"), state.get("PreviousSpec")):
        return await roll(orch, service, to_spec, reason="rollout undo", timeout=timeout, how="rollback")
    return await roll(orch, service, to_spec, reason="rollout undo", timeout=timeout)


async def _settled(orch, service: str, timeout: float) -> bool:
    """Our side has caught up: every live record of the service ready, as many as desired."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        svc = orch.services[service]
        live = [r for r in svc.replicas.values() if r.state in LIVE]
        stopping = [r for r in svc.replicas.values() if r.state == S.STOPPING]
        if len(live) == svc.desired and all(r.state == S.READY for r in live) and not stopping:
            return True
        await asyncio.sleep(POLL)
    return False


def _finish(orch, service: str, reason: str, old_spec: ServiceSpec, new_spec: ServiceSpec, outcome: str,
            detail: str, t0: float) -> RolloutResult:
    seconds = time.monotonic() - t0
    record(orch, service, outcome, reason, detail, old_spec, new_spec, seconds)
    kind = "rollback" if outcome == "rolled_back" else "rollout"
    orch.events.emit(kind, service, None, f"rolling update {outcome.replace('_', ' ')}: {detail}")
    return RolloutResult(service, outcome, detail, seconds)
