"""Decisions for a driver that owns the replica count (swarm): pure, tested without sockets.

Such a driver's engine starts, places and replaces the replicas; the control plane only sets the
count and keeps its records in step with what the driver reports running (a snapshot):
- a reported replica it has no record of is new: probe it, pool it after its first passing probe;
- a record the snapshot no longer lists has exited (its task ended, or its node went down);
- a record that is broken (exited, or failed its probes) is forgotten: the engine replaces it,
  and if it is in fact still running, the next snapshot brings it back as new, and it must pass a
  probe again before it serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from .replica import BROKEN, LIVE, ReplicaState


@dataclass(frozen=True)
class SnapshotChanges:
    new: list[str]    # replica ids reported that have no record
    gone: list[str]   # live records the snapshot no longer lists


def snapshot_changes(records: dict[str, ReplicaState], reported: list[str]) -> SnapshotChanges:
    """Compare the records of one service (id -> state) with the ids reported running."""
    seen = set(reported)
    new = [rid for rid in reported if rid not in records]
    gone = [rid for rid, state in records.items() if state in LIVE and rid not in seen]
    return SnapshotChanges(new=new, gone=gone)


def to_forget(records: dict[str, ReplicaState]) -> list[str]:
    """Broken records to drop (the engine replaces the replica; nothing for us to start)."""
    return [rid for rid, state in records.items() if state in BROKEN]


def count_to_set(desired: int, applied: int | None, applying: bool) -> int | None:
    """The count to send the driver now, or None: nothing changed, or a change is in flight."""
    if applying or applied == desired:
        return None
    return desired


def adopted_count(found: int | None, low: int, high: int) -> int | None:
    """An engine service found running at start: carry on with its count, within the stack's bounds."""
    if found is None:
        return None
    return max(low, min(high, found))
