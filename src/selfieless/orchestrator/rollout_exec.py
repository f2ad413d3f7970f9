"""Carries out a rolling replacement (rollout.py) on a running orchestrator.

The thin I/O half: it holds the service (the reconciler leaves it alone meanwhile), turns the state
machine's commands into controller calls, and turns what the replicas do (first passing probe,
exit, failed probes) into the machine's events. The decisions are all in rollout.py.

The rollout history (what `rollout history` shows and `rollout undo` goes back to) is kept in
`<stack state dir>/rollouts.json`, beside the stack's other state, so it survives a restart of `up`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import rollout as ro
from .commands import StartReplica, StopReplica
from .drivers.base import DriverError, EngineDriver
from .replica import ReplicaState as S
from .stack import ServiceSpec

POLL = 0.02
HISTORY_FILE = "rollouts.json"
HISTORY_KEEP = 50          # rollouts kept per service (the oldest go first)

log = logging.getLogger(__name__)


@dataclass
class RolloutResult:
    service: str
    outcome: str          # complete | rolled_back | paused | timeout
    reason: str
    seconds: float


async def roll(orch, service: str, new_spec: ServiceSpec, *, reason: str = "apply",
               timeout: float = 600.0, rollback_spec: ServiceSpec | None = None) -> RolloutResult:
    """Replace every replica of `service` with one of `new_spec`; on failure go back to the old spec
    (`rollback_spec` when given: the running spec pinned to the image id its replicas run, when the
    image name now resolves to new content).

    Returns once the service has converged on one version (or the rollout paused or timed out).
    With a driver that owns the replica count, the engine rolls and this follows (rollout_owned.py)."""
    if isinstance(orch.driver, EngineDriver):
        from . import rollout_owned

        return await rollout_owned.roll(orch, service, new_spec, reason=reason, timeout=timeout)
    svc = orch.services[service]
    old_spec = rollback_spec or svc.spec
    update = new_spec.update
    ready_old = [(r.id, r.port) for r in orch.replicas_of(service) if r.state == S.READY]
    state = ro.begin(service, ready_old, list(new_spec.host_ports.ports), desired=svc.desired,
                     parallelism=update.parallelism, order=update.order, monitor=update.monitor,
                     failure_action=update.failure_action)
    orch.hold(service, f"rollout ({reason})")
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
            state, cmds = ro.decide(state, now)
            for c in cmds:
                if isinstance(c, ro.Finish):
                    finish = c
                elif isinstance(c, StartReplica):
                    spec = new_spec if c.version == "new" else old_spec
                    jobs.add(asyncio.create_task(_start(orch, service, spec, c)))
                elif isinstance(c, StopReplica):
                    jobs.add(asyncio.create_task(orch.stop_replica(service, c.replica_id, c.drain,
                                                                   f"rollout: {c.reason}")))
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
            await asyncio.sleep(POLL)
        await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        spec = new_spec if finish is not None and finish.outcome in ("complete", "paused") else old_spec
        orch.release(service, spec)
    record(orch, service, finish.outcome, reason, finish.reason, old_spec, new_spec, time.monotonic() - t0)
    kind = {"complete": "rollout", "rolled_back": "rollback", "paused": "rollout"}[finish.outcome]
    orch.events.emit(kind, service, None, f"rolling update {finish.outcome.replace('_', ' ')}: {finish.reason}")
    return RolloutResult(service, finish.outcome, finish.reason, time.monotonic() - t0)


def record(orch, service: str, outcome: str, reason: str, detail: str, old_spec: ServiceSpec,
           new_spec: ServiceSpec, seconds: float) -> None:
    """Add one rollout to the service's history and save it."""
    entries = history(orch, service)
    entries.append({"at": time.time(), "outcome": outcome, "reason": reason, "detail": detail,
                    "from": old_spec, "to": new_spec, "seconds": round(seconds, 3)})
    del entries[:-HISTORY_KEEP]
    _save_history(orch)


def history(orch, service: str) -> list[dict]:
    """The last HISTORY_KEEP rollouts of `service`, oldest first (specs included, for undo), by this
    orchestrator and the earlier ones of the same stack and state dir."""
    store = orch.__dict__.get("rollout_history")
    if store is None:
        store = orch.__dict__["rollout_history"] = _load_history(orch)
    return store.setdefault(service, [])


def _history_path(orch) -> Path | None:
    return Path(orch.state_dir) / HISTORY_FILE if getattr(orch, "state_dir", "") else None


def _load_history(orch) -> dict[str, list[dict]]:
    path = _history_path(orch)
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {service: [{**h, "from": ServiceSpec.model_validate(h["from"]),
                           "to": ServiceSpec.model_validate(h["to"])} for h in entries]
                for service, entries in data.items()}
    except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError covers pydantic's errors
        # A damaged file must not stop the stack; the history starts again (and says so).
        log.warning("ignoring the rollout history in %s: %s", path, e)
        orch.events.emit("rollout", None, None, f"rollout history in {path.name} unreadable, starting a new one: {e}")
        return {}


def _save_history(orch) -> None:
    path = _history_path(orch)
    if path is None:
        return
    data = {service: [{**h, "from": h["from"].model_dump(mode="json"), "to": h["to"].model_dump(mode="json")}
                      for h in entries]
            for service, entries in orch.__dict__.get("rollout_history", {}).items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)  # a crash mid-write leaves the previous file whole
    except OSError as e:
        log.warning("cannot save the rollout history to %s: %s", path, e)


def history_json(orch, service: str) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("from", "to")} for h in history(orch, service)]


async def undo(orch, service: str, timeout: float = 600.0) -> RolloutResult:
    """Roll back to the spec before the last completed rollout."""
    done = [h for h in history(orch, service) if h["outcome"] == "complete"]
    if not done:
        raise ValueError(f"{service}: no completed rollout to undo")
    if isinstance(orch.driver, EngineDriver):
        from . import rollout_owned

        return await rollout_owned.undo(orch, service, done[-1]["from"], timeout=timeout)
    return await roll(orch, service, done[-1]["from"], reason="rollout undo", timeout=timeout)


async def restart(orch, service: str, timeout: float = 600.0) -> RolloutResult:
    """Replace every replica with a fresh one of the same spec, the rolling way (with a driver
    that owns the replica count: the engine's forced update)."""
    if isinstance(orch.driver, EngineDriver):
        from . import rollout_owned

        return await rollout_owned.roll(orch, service, orch.services[service].spec, reason="rollout restart",
                                        timeout=timeout, how="restart")
    return await roll(orch, service, orch.services[service].spec, reason="rollout restart", timeout=timeout)


async def _start(orch, service: str, spec: ServiceSpec, c: StartReplica):
    try:
        rep = await orch.start_replica(service, c.port, spec, f"rollout: {c.reason}", boost=not c.spare)
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
