"""One replica's lifecycle as pure decisions: what an observation means and what to do about it.

The controller observes (a probe result, the probe that confirms a gateway ejection, a driver exit,
a replica found running at start), asks one of these functions, and carries out the `Step` it
gets back. A step names the state transition (replica.py's table decides whether it is allowed)
together with the event that says why, so every transition the lifecycle makes is recorded in the
event log the way supervisord records one event per process state change. Nothing here touches a
socket, a task or a clock: every input is a plain value, so the whole sequence
(adopt or not -> probe -> unhealthy -> replace -> start when due) is tested as tables (tests/orchestrator/test_lifecycle.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Container, Mapping, Sequence

from . import disruption
from .backoff import BackoffPolicy, BackoffState, record_failure
from .health import Verdict, verdict
from .replica import ReplicaState as S

# Why a replica leaves when it is replaced: a broken replica is out of rotation and has nothing to
# finish, so it is killed at once and its successor gets the port (a dependency, e.g. a database,
# gets its normal stop timeout).
BROKEN_REPLACE_GRACE = 0.0


@dataclass(frozen=True)
class Facts:
    """What the controller knows about one replica when something happens to it."""

    state: S
    started_at: float                 # monotonic
    consecutive_failures: int = 0
    joined: bool = False              # the control plane put it in the gateway pool (pool.py)
    in_rotation: bool = False         # and the gateway routes to it (its view; pool.in_rotation)
    adopted: bool = False
    spared: bool = False              # kept in rotation by the disruption budget while failing
    dependency: bool = False          # a backing service: no gateway pool
    last_error: str | None = None


@dataclass(frozen=True)
class Rules:
    """The service's health settings (stack.HealthSpec)."""

    failure_threshold: int
    start_grace: float


@dataclass(frozen=True)
class Siblings:
    """The other replicas of the service, as the disruption budget counts them."""

    ready: int = 0             # other replicas in rotation
    failing_ready: int = 0     # of those, how many currently fail their probes
    unavailable: int = 0       # replicas starting, unhealthy or exited, plus starts waiting on a port


@dataclass(frozen=True)
class Step:
    """What to do, carried out by the controller in this order: stop the probe loop, leave the
    pool, transition, bookkeeping, join the pool, the budget's mark, events, wake the reconciler."""

    to: S | None = None               # the transition, if any ...
    why: str = ""                     # ... and its reason (the replica's history)
    failures: int | None = None       # new consecutive failure count (None: unchanged)
    stop_probe: bool = False
    leave_pool: bool = False          # tell the pool to forget it
    ejected: bool = False             # the gateway took it out itself: confirm with a probe
    became_ready: bool = False        # record ready_at, forgive the backoff, tell the driver
    last_error: str | None = None     # set when not None; cleared when became_ready
    join_pool: bool = False
    spare: bool | None = None         # True: the budget keeps it; False: no longer; None: unchanged
    events: tuple[tuple[str, str], ...] = ()   # (kind, reason) for events.py
    probe_again: bool = False         # keep (or start) probing it
    wake: bool = False                # something to reconcile


NOTHING = Step()


def probed(f: Facts, ok: bool, rules: Rules, siblings: Callable[[], Siblings], now: float,
           service: str = "") -> Step:
    """A routine health probe of a live replica returned `ok`. `siblings()` counts the others for
    the disruption budget; it is called only for a ready replica that fails, since counting is
    linear in the service's replicas and a thousand pass every second."""
    v, failures = verdict(f.state, ok, f.consecutive_failures, rules.failure_threshold, f.started_at, now,
                          rules.start_grace)
    if v == Verdict.BECAME_READY:
        where = "ready" if f.dependency else "in rotation"
        return Step(to=S.READY, why="first probe passed", failures=failures, became_ready=True, join_pool=True,
                    events=(("ready", f"passed its first health probe {now - f.started_at:.2f} s after start; "
                                      f"{where}"),), wake=True)
    if v in (Verdict.HEALTHY, Verdict.RECOVERED):
        events: list[tuple[str, str]] = []
        rejoin = not f.in_rotation and not f.dependency
        if rejoin:
            events.append(("ready", "health probe passed again; back in rotation"))
        if f.spared:
            events.append(("recovered", "health probe passed again; no longer held"))
        return Step(failures=failures, join_pool=rejoin, spare=False if f.spared else None, events=tuple(events))
    if v == Verdict.UNHEALTHY:
        cause = f.last_error or "health probe failed"
        if f.state == S.READY and not f.dependency:
            # This replica is ready and failing: count it with its siblings for the budget.
            siblings = siblings()
            d = disruption.on_failure(siblings.ready + 1, siblings.failing_ready + 1, siblings.unavailable)
            if not d.replace:
                if f.spared:
                    return Step(failures=failures)
                total = siblings.ready + 1 + siblings.unavailable
                return Step(failures=failures, spare=True, events=((
                    "held", f"{cause}; " + disruption.describe_hold(service, total, d.all_failing,
                                                                     siblings.unavailable)),))
        return _unhealthy(f, rules, failures, _failed_probes(failures, cause), stop_probe=False)
    return Step(failures=failures)  # failing below the threshold, or still within its start grace


def confirmed(f: Facts, ok: bool, rules: Rules) -> Step:
    """The probe sent right after the gateway ejected a ready replica (refused or reset) returned
    `ok`. A pass puts it back; a failure confirms the gateway and it is replaced now, without
    waiting for `failure_threshold` more probes (and without the disruption budget: the gateway
    already took it out of rotation)."""
    if f.state != S.READY:
        return NOTHING  # an exit event or the probe loop got there first
    if ok:
        return Step(join_pool=True, events=(("ready", "probe passed after ejection; back in rotation"),))
    cause = f.last_error or "health probe failed"
    return _unhealthy(f, rules, f.consecutive_failures + 1, f"ejected by the gateway, then its probe failed: {cause}",
                      stop_probe=True)


def ejected(f: Facts, reason: str) -> Step:
    """The gateway took a replica out of rotation by itself; only a ready one is worth a probe."""
    if f.state != S.READY:
        return NOTHING
    return Step(ejected=True, events=(("ejected", f"gateway took it out of rotation: {reason}"),))


def exited(f: Facts, reason: str) -> Step:
    """The driver reports the replica's process or container gone."""
    if f.state in (S.STOPPING, S.STOPPED, S.EXITED):
        return NOTHING  # expected (we stopped it) or already handled
    return Step(to=S.EXITED, why=reason, stop_probe=True, leave_pool=True, last_error=reason,
                events=(("exited", f"{reason}; will be replaced"),), wake=True)


def triage(running: Sequence[tuple[str, int]], ports: Mapping[str, Container[int]]) -> list[str | None]:
    """Replicas found running at start as (service, port), oldest first, and each service's port
    range: None for one to adopt, else why it is stopped instead."""
    seen: set[tuple[str, int]] = set()
    out: list[str | None] = []
    for service, port in running:
        if service not in ports or port not in ports[service]:
            out.append("found running but not part of this stack (any more)")
        elif (service, port) in seen:
            out.append(f"duplicate replica on port {port}; kept the older one")
        else:
            seen.add((service, port))
            out.append(None)
    return out


def adopted_count(found: int | None, low: int, high: int, dependency: bool) -> int | None:
    """The desired count to carry on with when `found` replicas of a service were already running
    at start (None: none were, keep the initial count): what ran, within the stack's bounds; a
    dependency always runs one."""
    if found is None:
        return None
    return 1 if dependency else max(low, min(high, found))


def found(f: Facts, ok: bool, rules: Rules, now: float, what: str) -> Step:
    """A replica found running at start (adoption) was probed once; `what` says where it runs."""
    if ok:
        step = probed(f, True, rules, Siblings, now)
        return _with(step, events=step.events + (("adopted", f"{what}; healthy, in rotation"),), probe_again=True)
    if f.last_error and "connection failed" in f.last_error and now - f.started_at < rules.start_grace:
        # Probably still booting (the previous orchestrator had just started it).
        return Step(events=(("adopted", f"{what}; still starting"),), probe_again=True)
    step = _unhealthy(f, rules, f.consecutive_failures, _failed_probes(f.consecutive_failures,
                                                                       f.last_error or "health probe failed"),
                      stop_probe=False)
    return _with(step, events=(("adopted", f"{what}; failing its health probe, replacing"),) + step.events)


@dataclass(frozen=True)
class Replacement:
    """How a broken replica gives its port to a new one."""

    why: str                 # the old replica's STOPPING reason
    stop_reason: str         # the old one's stop (no event of its own: the new one's says it)
    start_reason: str        # the new one's start
    grace: float             # the old one's stop timeout
    backoff: BackoffState    # the port's new crash-loop state
    delay: float             # before the new one starts
    events: tuple[tuple[str, str], ...] = ()


def replacement(old_id: str, port: int, cause: str, backoff: BackoffState, now: float, policy: BackoffPolicy,
                dependency: bool, drain_timeout: float) -> Replacement:
    """A broken replica (unhealthy or exited) is replaced on its port, after the crash-loop backoff."""
    state, delay = record_failure(backoff, now, policy)
    events: tuple[tuple[str, str], ...] = ()
    if delay > 0:
        events = (("backoff", f"crash loop on port {port} ({state.failures} failures in a row): "
                              f"next start in {delay:g} s"),)
    return Replacement(why=f"replacing: {cause}", stop_reason=f"replaced: {cause}",
                       start_reason=f"replacing {old_id} ({cause})", grace=drain_timeout if dependency else BROKEN_REPLACE_GRACE,
                       backoff=state, delay=delay, events=events)


def launch_failed(backoff: BackoffState, now: float, policy: BackoffPolicy) -> tuple[BackoffState, float]:
    """The driver could not even launch a replica (bad image, port taken...): the same backoff as a
    crash, but never a retry at once."""
    state, delay = record_failure(backoff, now, policy)
    return state, max(delay, policy.initial)


def waits_for(depends_on: list[str] | tuple[str, ...], ready: dict[str, bool]) -> str | None:
    """A service with no replica yet: the first dependency (by the stack's order) not ready, if any.
    `ready` maps each dependency of the stack to whether it has a ready replica."""
    for name in depends_on:
        if name in ready and not ready[name]:
            return name
    return None


def _failed_probes(n: int, cause: str) -> str:
    return f"{n} consecutive failed probe{'s' if n != 1 else ''}: {cause}"


def _unhealthy(f: Facts, rules: Rules, failures: int, why: str, stop_probe: bool) -> Step:
    if f.state == S.STARTING and not f.adopted:
        why = f"not ready {rules.start_grace:g} s after start ({f.last_error or 'health probe failed'})"
    return Step(to=S.UNHEALTHY, why=why, failures=failures, stop_probe=stop_probe,
                leave_pool=f.joined or f.state == S.READY, last_error=why, spare=False if f.spared else None,
                events=(("unhealthy", f"{why}; out of rotation, will be replaced"),), wake=True)


def _with(step: Step, **changes) -> Step:
    return replace(step, **changes)
