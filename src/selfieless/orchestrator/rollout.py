"""Rolling replacement of one service as a pure state machine.

The executor feeds it what happened (a replica started, passed its first probe, failed, stopped)
and asks `decide(state, now)` what to do next; `decide` returns the new state and commands
(start a replica of a version on a port, stop a replica with or without draining, finish). No
sockets, no sleeps: every rule below is tested with plain values.

Rules (start-first, the default):
- at most `parallelism` new replicas are unproven at once (starting, or joined less than `monitor`
  seconds ago); each starts on the lowest free port of the service's range, which is a spare port
  while all old replicas still run;
- a new replica joins the rotation after its first passing probe (the executor's health checker
  does that); as soon as more replicas serve than desired, the old one on the lowest port is
  drained and stopped, so an old replica never stops before its replacement is serving;
- stop-first drains and stops an old replica first and starts the new one on the freed port;
  start-first does the same for one replica when the range has no spare port left;
- when every old replica is gone, a new replica left on a borrowed port (outside the first
  `desired` ports) is moved home the same way: a replica starts on the free home port, and once it
  serves the borrowed one is drained and stopped. So the set settles back on 8000.. ;
- a new replica that exits or fails its probes before its `monitor` ran out fails the rollout:
  with `rollback`, every new replica is stopped (drained if it was serving) once enough old-version
  replicas serve again, starting old-version replicas start-first if some were already stopped;
  with `pause`, nothing more is started or stopped and the rollout ends paused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Union

Version = Literal["old", "new"]
Status = Literal["starting", "ready", "failed", "stopping", "stopped"]
Phase = Literal["rolling", "rolling_back", "complete", "rolled_back", "paused"]


@dataclass(frozen=True)
class Member:
    """One replica taking part in the rollout."""

    id: str
    port: int
    version: Version
    status: Status
    ready_at: float | None = None   # when it joined the rotation (new replicas: monitor starts here)

    @property
    def alive(self) -> bool:
        return self.status in ("starting", "ready")

    @property
    def holds_port(self) -> bool:
        return self.status != "stopped"


@dataclass(frozen=True)
class StartReplica:
    version: Version
    port: int
    reason: str
    # The service serves at full strength meanwhile (start-first): the new replica need not boot
    # at the expense of the serving ones (the docker driver's start CPU boost is left off).
    spare: bool = False


@dataclass(frozen=True)
class StopReplica:
    id: str
    drain: bool
    reason: str


@dataclass(frozen=True)
class Finish:
    outcome: Literal["complete", "rolled_back", "paused"]
    reason: str


Command = Union[StartReplica, StopReplica, Finish]


@dataclass(frozen=True)
class Rollout:
    service: str
    desired: int
    ports: tuple[int, ...]
    parallelism: int = 1
    order: Literal["start-first", "stop-first"] = "start-first"
    monitor: float = 5.0
    failure_action: Literal["rollback", "pause"] = "rollback"
    members: tuple[Member, ...] = ()
    phase: Phase = "rolling"
    reason: str = ""
    # Starts asked for and not yet reported by the executor: their ports are taken.
    pending: tuple[tuple[Version, int], ...] = field(default=())

    @property
    def home(self) -> tuple[int, ...]:
        return self.ports[: self.desired]

    def of(self, version: Version, *statuses: Status) -> list[Member]:
        return [m for m in self.members if m.version == version and (not statuses or m.status in statuses)]


def begin(service: str, old: list[tuple[str, int]], ports: list[int], *, desired: int | None = None,
          parallelism: int = 1, order: str = "start-first", monitor: float = 5.0,
          failure_action: str = "rollback") -> Rollout:
    """A rollout of `service` whose serving replicas are `old` ((id, port) pairs)."""
    members = tuple(Member(i, p, "old", "ready") for i, p in sorted(old, key=lambda x: x[1]))
    return Rollout(service, len(old) if desired is None else desired, tuple(sorted(ports)), parallelism, order,
                   monitor, failure_action, members)  # type: ignore[arg-type]


# ---- events (the executor reports what happened) ----

def started(r: Rollout, id: str, version: Version, port: int) -> Rollout:
    pending = list(r.pending)
    if (version, port) in pending:
        pending.remove((version, port))
    return replace(r, members=r.members + (Member(id, port, version, "starting"),), pending=tuple(pending))


def start_failed(r: Rollout, version: Version, port: int, why: str) -> Rollout:
    """The start itself failed (no replica id): counts as a failed member."""
    r = started(r, f"failed-start:{port}", version, port)
    return stopped(failed(r, f"failed-start:{port}", why), f"failed-start:{port}")


def ready(r: Rollout, id: str, now: float) -> Rollout:
    return _set(r, id, status="ready", ready_at=now)


def failed(r: Rollout, id: str, why: str, now: float | None = None) -> Rollout:
    """A member exited or failed its probes. A new one that had not yet served for `monitor`
    seconds fails the rollout; a proven one is only replaced, like any broken replica."""
    m = _get(r, id)
    if m is None or m.status in ("stopping", "stopped"):
        return r
    r = _set(r, id, status="failed")
    proven = m.status == "ready" and now is not None and (m.ready_at or 0) + r.monitor <= now
    if m.version == "new" and r.phase == "rolling" and not proven:
        what = "never became healthy" if m.status == "starting" else "failed within its monitor period"
        reason = f"new replica {id} on port {m.port} {what}: {why}"
        return replace(r, phase="rolling_back", reason=reason)
    return r


def stopped(r: Rollout, id: str) -> Rollout:
    return _set(r, id, status="stopped")


def _get(r: Rollout, id: str) -> Member | None:
    return next((m for m in r.members if m.id == id), None)


def _set(r: Rollout, id: str, **changes) -> Rollout:
    return replace(r, members=tuple(replace(m, **changes) if m.id == id else m for m in r.members))


# ---- the decision ----

def decide(r: Rollout, now: float) -> tuple[Rollout, list[Command]]:
    """What to do now. Call after every event and on a timer (for the monitor period)."""
    if r.phase in ("complete", "rolled_back", "paused"):
        return r, []
    if r.phase == "rolling_back":
        return _rollback(r)
    cmds: list[Command] = []
    # A failed member holds its port until stopped; failed old replicas are simply cleared away.
    for m in r.members:
        if m.status == "failed":
            cmds.append(StopReplica(m.id, drain=False, reason="failed"))
            r = _set(r, m.id, status="stopping")
    serving = lambda: len([m for m in r.members if m.status == "ready"])  # noqa: E731
    new_alive = r.of("new", "starting", "ready")
    unproven = [m for m in new_alive if m.status == "starting" or (m.ready_at or 0) + r.monitor > now]
    in_flight = len(unproven) + len([p for p in r.pending if p[0] == "new"])
    # Retire old replicas once their replacements serve (start-first).
    # (Old replicas start only in a rollback: while rolling, an alive old one is a ready one.)
    old_ready = sorted(r.of("old", "ready"), key=lambda m: m.port)
    while old_ready and serving() > r.desired:
        m = old_ready.pop(0)
        cmds.append(StopReplica(m.id, drain=True, reason="replaced by a new replica that is serving"))
        r = _set(r, m.id, status="stopping")
    # Start new replicas.
    pending_new = len([p for p in r.pending if p[0] == "new"])
    wanted_new = r.desired - len(new_alive) - pending_new
    if r.order == "start-first":
        while wanted_new > 0 and in_flight < r.parallelism:
            port = _free_port(r)
            if port is None:
                # No spare port in the range: replace this one stop-first (after draining it).
                old_alive = sorted(r.of("old", "ready"), key=lambda m: m.port)
                if in_flight == 0 and old_alive and not any(m.status == "stopping" for m in r.members):
                    m = old_alive[0]
                    cmds.append(StopReplica(m.id, drain=True, reason="no spare port: stop-first for this one"))
                    r = _set(r, m.id, status="stopping")
                break
            cmds.append(StartReplica("new", port, reason="rolling replacement (start-first)", spare=_full(r)))
            r = replace(r, pending=r.pending + (("new", port),))
            in_flight += 1
            wanted_new -= 1
    else:
        # An old replica being stopped to make room is a replacement under way.
        in_flight += len(r.of("old", "stopping"))
        while wanted_new > 0:
            old_alive = sorted(r.of("old", "ready"), key=lambda m: m.port)
            total = len(old_alive) + len(r.of("new", "starting", "ready")) + len([p for p in r.pending if p[0] == "new"])
            if total < r.desired:
                # Only on a home port: the one the stopped replica frees (wait while it is stopping).
                port = next((p for p in r.home if p not in _taken(r)), None)
                if port is None:
                    break
                cmds.append(StartReplica("new", port, reason="rolling replacement (stop-first)"))
                r = replace(r, pending=r.pending + (("new", port),))
                wanted_new -= 1
                in_flight += 1  # this start is a replacement under way until it is proven
            elif old_alive and in_flight < r.parallelism:
                m = old_alive[0]
                cmds.append(StopReplica(m.id, drain=True, reason="stop-first: makes room for a new replica"))
                r = _set(r, m.id, status="stopping")
                in_flight += 1
            else:
                break
    # Everything replaced and proven: settle borrowed ports home, then finish.
    if not r.of("old", "ready", "stopping") and not r.pending and not unproven \
            and len(r.of("new", "ready")) >= r.desired:
        borrowed = sorted((m for m in r.of("new", "ready") if m.port not in r.home), key=lambda m: -m.port)
        free_home = [p for p in r.home if p not in _taken(r)]
        if len(r.of("new", "ready")) > r.desired and borrowed:
            m = borrowed[0]
            cmds.append(StopReplica(m.id, drain=True, reason=f"settled back on port {sorted(r.home)[0]}.."))
            r = _set(r, m.id, status="stopping")
        elif borrowed and free_home:
            cmds.append(StartReplica("new", free_home[0], reason=f"move home from borrowed port {borrowed[0].port}",
                                     spare=_full(r)))
            r = replace(r, pending=r.pending + (("new", free_home[0]),))
        elif not r.of("new", "stopping"):
            # Said the same way for an apply, an undo (back to the previous version) and a restart.
            cmds.append(Finish("complete", f"all {r.desired} replica(s) replaced"))
            r = replace(r, phase="complete")
    return r, cmds


def _full(r: Rollout) -> bool:
    """As many replicas serve as the service wants: a new one is a spare until it is ready."""
    return len(r.of("old", "ready")) + len(r.of("new", "ready")) >= r.desired


def _rollback(r: Rollout) -> tuple[Rollout, list[Command]]:
    cmds: list[Command] = []
    if r.failure_action == "pause":
        # Leave everything as it is for a person to look at; the failed replica is out of rotation.
        return replace(r, phase="paused"), [Finish("paused", r.reason)]
    # New replicas that do not serve go at once; serving ones wait until old ones serve again.
    for m in r.of("new", "starting", "failed"):
        cmds.append(StopReplica(m.id, drain=False, reason="rollback"))
        r = _set(r, m.id, status="stopping")
    old_alive = r.of("old", "starting", "ready")
    pending_old = len([p for p in r.pending if p[0] == "old"])
    for _ in range(r.desired - len(old_alive) - pending_old):
        port = _free_port(r)
        if port is None:
            break
        cmds.append(StartReplica("old", port, reason="rollback: previous version"))
        r = replace(r, pending=r.pending + (("old", port),))
    for m in r.of("old", "failed"):
        cmds.append(StopReplica(m.id, drain=False, reason="failed"))
        r = _set(r, m.id, status="stopping")
    old_ready = len(r.of("old", "ready"))
    new_ready = sorted(r.of("new", "ready"), key=lambda m: -m.port)
    while new_ready and old_ready + len(new_ready) > r.desired:
        m = new_ready.pop(0)
        cmds.append(StopReplica(m.id, drain=True, reason="rollback"))
        r = _set(r, m.id, status="stopping")
    # Every new replica is stopping or stopped by now: starting ones were stopped above, and serving
    # ones are drained while more than `desired` serve.
    if old_ready >= r.desired and not r.pending and not any(m.status == "stopping" for m in r.members):
        cmds.append(Finish("rolled_back", r.reason))
        r = replace(r, phase="rolled_back")
    return r, cmds


def _taken(r: Rollout) -> set[int]:
    return {m.port for m in r.members if m.holds_port} | {p for _, p in r.pending}


def _free_port(r: Rollout) -> int | None:
    taken = _taken(r)
    return next((p for p in r.ports if p not in taken), None)
