"""Carries out an apply plan (apply_plan.py) on a running orchestrator.

Live changes swap settings in place (no replica restarts); rolling replacements go through
rollout_exec.py one service at a time; the call returns when the stack has converged, or with the
reason it could not.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from . import apply_plan as ap
from .rollout_exec import roll
from .stack import Stack


@dataclass
class ApplyResult:
    ok: bool
    actions: list[str]
    reason: str = ""
    rollouts: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan_for(orch, new: Stack, running_images: dict[str, str | None] | None = None,
             current_images: dict[str, str | None] | None = None) -> list[ap.ApplyAction]:
    running = orch.stack
    # The running spec of each service is the controller's (a rollout or live update changed it).
    services = {n: orch.services[n].spec for n in running.services if n in orch.services}
    running = running.model_copy(update={"services": services})
    return ap.plan_apply(running, new, running_images, current_images)


async def image_ids(orch, new: Stack) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(running, current) image id per service of `new` that runs now and names an image: a rebuilt
    image with an unchanged name is a change only these ids show (docker driver)."""
    images = {n: s.image for n, s in new.services.items() if s.image and n in orch.services}
    if not images:
        return {}, {}
    ran, current = await orch.driver.image_ids(images)
    return {n: ap.running_image(ran.get(n, []), current.get(n)) for n in images}, current


async def apply_stack(orch, new: Stack, *, dry_run: bool = False, timeout: float = 600.0,
                      current_images: dict[str, str | None] | None = None) -> ApplyResult:
    t0 = time.monotonic()
    try:
        running_images, found = await image_ids(orch, new)
    except Exception as e:  # the engine did not answer: without the ids a rebuild would go unseen
        return ApplyResult(False, [], f"cannot read the running image ids: {e}")
    actions = plan_for(orch, new, running_images, {**found, **(current_images or {})})
    lines = [ap.describe(a) for a in actions]
    refused = [a for a in actions if isinstance(a, ap.Refuse)]
    if refused:
        return ApplyResult(False, lines, "; ".join(f"{a.what}: {a.reason}" for a in refused))
    if dry_run or not actions:
        return ApplyResult(True, lines, "dry run" if dry_run else "no change")
    result = ApplyResult(True, lines)
    for a in actions:
        if isinstance(a, ap.AddService):
            orch.add_service(a.service, new.services[a.service])
        elif isinstance(a, ap.LiveUpdate):
            svc = orch.services[a.service]
            old_policy = svc.spec.autoscale
            svc.spec = svc.spec.model_copy(update={f: getattr(new.services[a.service], f) for f in a.fields})
            if "autoscale" in a.fields:
                orch.scaling.carry_over(svc, old_policy)
                orch.restart_autoscaler(a.service)
        elif isinstance(a, ap.Rescale):
            svc = orch.services[a.service]
            svc.spec = svc.spec.model_copy(update={"replicas": new.services[a.service].replicas})
            lo, hi = svc.spec.replicas.min, svc.spec.replicas.max
            wanted = min(max(svc.desired, lo), hi)
            if wanted != svc.desired:
                await orch.scale(a.service, wanted, reason=f"apply: replicas min {lo} max {hi}")
            orch.restart_autoscaler(a.service)
        elif isinstance(a, ap.SetGatewayLimits):
            orch.gateway.set_limits(a.balance, a.limits.model_dump())
        elif isinstance(a, ap.SetRoutes):
            orch.gateway.set_routes(dict(a.routes))
        elif isinstance(a, ap.RollingReplace):
            old = orch.services[a.service].spec
            r = await roll(orch, a.service, new.services[a.service], reason="; ".join(a.reasons),
                           timeout=max(1.0, timeout - (time.monotonic() - t0)),
                           rollback_spec=ap.pinned(old, a.previous_image) if a.previous_image else None)
            result.rollouts.append(dataclasses.asdict(r))
            if r.outcome != "complete":
                result.ok = False
                result.reason = f"{a.service}: rolling update {r.outcome.replace('_', ' ')}: {r.reason}"
                break
        elif isinstance(a, ap.RemoveService):
            await orch.remove_service(a.service)
    if result.ok:
        # The file is the stack from now on (services rolled back above keep their old spec).
        orch.stack = new
        try:
            await orch.wait_ready(max(1.0, timeout - (time.monotonic() - t0)))
        except TimeoutError as e:
            result.ok, result.reason = False, str(e)
    orch.events.emit("applied", None, None,
                     ("applied: " if result.ok else "apply failed: ") + (result.reason or "; ".join(lines)))
    result.seconds = round(time.monotonic() - t0, 3)
    return result

