"""The history of a stack's rollouts: what `rollout history` shows and `rollout undo` goes back to.

Kept in `<stack state dir>/rollouts.json`, beside the stack's other state, so it survives a restart
of `up`; both kinds of rollout (rollout_exec.py per port, rollout_owned.py by the engine) record here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .stack import ServiceSpec

HISTORY_FILE = "rollouts.json"
HISTORY_KEEP = 50          # rollouts kept per service (the oldest go first)

log = logging.getLogger(__name__)


@dataclass
class RolloutResult:
    service: str
    outcome: str          # complete | rolled_back | paused | timeout | refused
    reason: str
    seconds: float


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
