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


# A task that stays silent (fails our probes) this long after we forgot it as broken is ended on
# its node, and again every END_RETRY while it is still listed. The bound leaves a task that was
# only slow for a moment time to answer again (a forgotten task that still runs is probed again
# every 50 ms, as a new one); a hung or paused task is replaced within this bound, the node job
# (a few seconds) and Swarm's restart delay.
END_SILENT_AFTER = 5.0
END_RETRY = 30.0


@dataclass(frozen=True)
class Silence:
    since: dict[str, float]    # replica id -> when it was first forgotten as broken (kept)
    ending: dict[str, float]   # replica id -> when it was last asked to end (kept)
    end: list[str]             # replica ids to end now


def silent_tasks(since: dict[str, float], ending: dict[str, float], forgotten: list[str], reported: set[str],
                 ready: set[str], now: float, after: float = END_SILENT_AFTER, retry: float = END_RETRY) -> Silence:
    """Which silent replicas to end now. `forgotten`: records just dropped as broken; `reported`:
    the ids the driver lists running; `ready`: ids whose record passed a probe since (not silent).
    A replica no longer reported is gone: nothing to remember."""
    keep = {rid: t for rid, t in since.items() if rid in reported and rid not in ready}
    for rid in forgotten:
        if rid in reported:
            keep.setdefault(rid, now)
    still_ending = {rid: t for rid, t in ending.items() if rid in keep}
    end = [rid for rid, t in keep.items()
           if now - t >= after and (rid not in still_ending or now - still_ending[rid] >= retry)]
    for rid in end:
        still_ending[rid] = now
    return Silence(since=keep, ending=still_ending, end=end)
