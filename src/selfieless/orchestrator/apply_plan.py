"""The apply plan: what changing a running stack to a new stack file takes.

A pure function of (running stack, new stack, image ids), like the per-service convergence plan in
plan.py: `selfieless apply --dry-run` prints it, and the runtime carries it out in the order given.

Rules:
- replicas, autoscale, health, drain_timeout and update settings, routes and gateway limits apply
  live: nothing restarts, and the gateway swaps its whole route table at once;
- a changed image, command, environment, container port, host ports, preload flag, extra hosts,
  or a variable the command or environment uses needs new processes: a rolling replacement with the
  service's `update` settings. So does an unchanged image name whose image id changed (a rebuilt
  `acts:latest`);
- services new in the file start before the route table points at them; services gone from the
  file stop after it no longer does;
- what cannot change on a running stack (name, driver, network, gateway address, HTTPS settings,
  dependencies) is refused with the reason, and a plan holding a Refuse must not be carried out at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

from .stack import GatewayLimits, ServiceSpec, Stack, UpdateSpec, placeholders


@dataclass(frozen=True)
class Refuse:
    what: str
    reason: str


@dataclass(frozen=True)
class AddService:
    service: str
    replicas: int


@dataclass(frozen=True)
class Rescale:
    service: str
    old: tuple[int, int, int | None]   # (min, max, initial)
    new: tuple[int, int, int | None]


@dataclass(frozen=True)
class LiveUpdate:
    """Settings of one service the runtime swaps in without touching its replicas."""

    service: str
    fields: tuple[str, ...]             # e.g. ("autoscale", "health")


@dataclass(frozen=True)
class SetRoutes:
    routes: tuple[tuple[str, str], ...]  # (path prefix, service), the whole new table


@dataclass(frozen=True)
class SetGatewayLimits:
    fields: tuple[str, ...]
    balance: str
    limits: GatewayLimits


@dataclass(frozen=True)
class RollingReplace:
    service: str
    reasons: tuple[str, ...]
    update: UpdateSpec
    # Set when the image name is unchanged but its content is new: the id the replicas run now.
    # A rollback must start that id, not the name, which resolves to the new content by now.
    previous_image: str | None = None


@dataclass(frozen=True)
class RemoveService:
    service: str


ApplyAction = Union[Refuse, AddService, Rescale, LiveUpdate, SetRoutes, SetGatewayLimits, RollingReplace,
                    RemoveService]

# Fields of a service that its replicas were started with.
_REPLACE_FIELDS = ("image", "command", "environment", "container_port", "host_ports", "preload", "extra_hosts")
# Fields the runtime reads each time it decides something.
_LIVE_FIELDS = ("autoscale", "health", "drain_timeout", "update", "depends_on")


def plan_apply(running: Stack, new: Stack, running_images: Mapping[str, str | None] | None = None,
               current_images: Mapping[str, str | None] | None = None) -> list[ApplyAction]:
    """Actions that turn the running stack into `new`, in the order they must run. Empty: no change.

    `running_images`: service -> the image id its replicas were started from; `current_images`:
    service -> the id its image name resolves to now (docker driver; empty for the process driver).
    """
    running_images = running_images or {}
    current_images = current_images or {}
    refusals = _refusals(running, new)
    if refusals:
        return refusals
    actions: list[ApplyAction] = []
    added = [n for n in new.services if n not in running.services]
    removed = [n for n in running.services if n not in new.services]
    for name in added:
        actions.append(AddService(name, new.services[name].replicas.start_count))
    for name in new.services:
        if name in added:
            continue
        old_svc, new_svc = running.services[name], new.services[name]
        live = tuple(f for f in _LIVE_FIELDS if getattr(old_svc, f) != getattr(new_svc, f))
        if live:
            actions.append(LiveUpdate(name, live))
        if old_svc.replicas != new_svc.replicas:
            r = lambda s: (s.replicas.min, s.replicas.max, s.replicas.initial)  # noqa: E731
            actions.append(Rescale(name, r(old_svc), r(new_svc)))
    g_old, g_new = running.gateway, new.gateway
    changed_limits = tuple(f for f in GatewayLimits.model_fields if getattr(g_old.limits, f) != getattr(g_new.limits, f))
    if g_old.balance != g_new.balance:
        changed_limits = ("balance",) + changed_limits
    if changed_limits:
        actions.append(SetGatewayLimits(changed_limits, g_new.balance, g_new.limits))
    if running.routes() != new.routes():
        actions.append(SetRoutes(tuple(sorted(new.routes().items()))))
    for name in new.services:
        if name in added:
            continue
        was, now = running_images.get(name), current_images.get(name)
        reasons = _replace_reasons(running, new, name, was, now)
        if reasons:
            content = _new_content(running.services[name], new.services[name], was, now)
            actions.append(RollingReplace(name, tuple(reasons), new.services[name].update,
                                          previous_image=was if content else None))
    for name in removed:
        actions.append(RemoveService(name))
    return actions


def _refusals(running: Stack, new: Stack) -> list[ApplyAction]:
    out: list[ApplyAction] = []
    if running.name != new.name:
        out.append(Refuse("name", f"the running stack is {running.name!r}, the file describes {new.name!r}"))
    for field in ("driver", "network", "dependencies"):
        if getattr(running, field) != getattr(new, field):
            out.append(Refuse(field, f"{field} cannot change on a running stack: run `down` then `up`"))
    for field in ("host", "port"):
        if getattr(running.gateway, field) != getattr(new.gateway, field):
            out.append(Refuse(f"gateway.{field}", "the gateway's address cannot change on a running stack: "
                                                   "run `down` then `up`"))
    if running.tls_settings() != new.tls_settings():  # gateway.tls, or a service's redirect_https
        out.append(Refuse("gateway.tls", "HTTPS settings are read when the gateway starts: run `down` then "
                                         "`up` (certificate files themselves reload by themselves, or with "
                                         "`selfieless tls reload`)"))
    return out


def _replace_reasons(running: Stack, new: Stack, name: str, running_image: str | None,
                     current_image: str | None) -> list[str]:
    old_svc, new_svc = running.services[name], new.services[name]
    reasons = [f"{f} changed" for f in _REPLACE_FIELDS if getattr(old_svc, f) != getattr(new_svc, f)]
    for var in sorted(_used_variables(new, new_svc) | _used_variables(running, old_svc)):
        if _variable(running, old_svc, var) != _variable(new, new_svc, var):
            reasons.append(f"variable {var} changed")
    if _new_content(old_svc, new_svc, running_image, current_image):
        reasons.append(f"image {new_svc.image} has new content ({_short(running_image)} -> {_short(current_image)})")
    return reasons


def _new_content(old_svc: ServiceSpec, new_svc: ServiceSpec, running_image: str | None,
                 current_image: str | None) -> bool:
    return bool(old_svc.image == new_svc.image and running_image and current_image and running_image != current_image)


def running_image(ids: Iterable[str | None], current: str | None) -> str | None:
    """The one image id to compare with `current` for a service whose replicas run `ids`.

    The current id when every replica runs it; otherwise an id some replica runs that is not the
    current one, so a service left partly on old content (say, a rollout paused halfway) still
    rolls. None when no replica runs (nothing to compare)."""
    known = sorted({i for i in ids if i})
    others = [i for i in known if i != current]
    if others:
        return others[0]
    return current if known else None


def pinned(spec: ServiceSpec, image_id: str | None) -> ServiceSpec:
    """`spec` running exactly `image_id` (what a rollback after a content change goes back to)."""
    return spec.model_copy(update={"image": image_id}) if image_id else spec


def _variable(stack: Stack, svc: ServiceSpec, name: str) -> str | None:
    return svc.variables.get(name, stack.variables.get(name))


def _used_variables(stack: Stack, svc: ServiceSpec) -> set[str]:
    """Variables the command or environment refers to, following variables that use variables."""
    todo = [*(svc.command or []), *svc.environment.values()]
    seen: set[str] = set()
    while todo:
        for name in placeholders(todo.pop()):
            if name not in seen:
                seen.add(name)
                value = _variable(stack, svc, name)
                if value is not None:
                    todo.append(value)
    return {n for n in seen if _variable(stack, svc, n) is not None}


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def with_up_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None,
                      port: int | None = None, driver: str | None = None) -> dict[str, Any]:
    """The stack file (a mapping) to apply, with what the running `up` was told on its command
    line (`overrides`: "port", "driver"; None values were not given) put back in: `up --port P`
    then `apply FILE` keeps P whatever port the file names. `port` and `driver` given with this
    request (apply --port, a second `up --port`) win over both."""
    out = dict(data)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    port = port if port is not None else overrides.get("port")
    driver = driver if driver is not None else overrides.get("driver")
    if port is not None:
        out["gateway"] = {**(out.get("gateway") or {}), "port": port}
    if driver is not None:
        out["driver"] = driver
    return out


def describe(action: ApplyAction) -> str:
    """One line for `apply --dry-run` and the events."""
    if isinstance(action, Refuse):
        return f"refuse  {action.what}: {action.reason}"
    if isinstance(action, AddService):
        return f"add     {action.service}: start {action.replicas} replica(s)"
    if isinstance(action, Rescale):
        fmt = lambda r: f"min {r[0]} max {r[1]}" + (f" initial {r[2]}" if r[2] is not None else "")  # noqa: E731
        return f"scale   {action.service}: {fmt(action.old)} -> {fmt(action.new)} (live)"
    if isinstance(action, LiveUpdate):
        return f"update  {action.service}: {', '.join(action.fields)} (live, no restart)"
    if isinstance(action, SetGatewayLimits):
        return f"gateway {', '.join(action.fields)} (live, no restart)"
    if isinstance(action, SetRoutes):
        return "routes  " + ", ".join(f"{p} -> {s}" for p, s in action.routes) + " (atomic swap)"
    if isinstance(action, RollingReplace):
        u = action.update
        return (f"roll    {action.service}: {'; '.join(action.reasons)} "
                f"({u.order}, {u.parallelism} at a time, monitor {u.monitor:g} s, on failure {u.failure_action})")
    if isinstance(action, RemoveService):
        return f"remove  {action.service}: drain and stop every replica"
    raise TypeError(action)


def restarts_nothing(actions: list[ApplyAction]) -> bool:
    """True when the plan changes no running replica (only live settings)."""
    return not any(isinstance(a, (RollingReplace, RemoveService, Refuse)) for a in actions)

