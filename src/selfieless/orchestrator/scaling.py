"""The desired counts: a manual scale, the autoscaler loop of each service, and scale from zero.

The policies are pure (autoscale.py, scale_to_zero.py); this module feeds them the gateway's
request counters on their schedule and records what they decide in the service's runtime, with a
`scaled` event. The reconciler (controller.py) then converges the replicas on the new count.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from . import autoscale as auto
from . import scale_to_zero as stz
from .events import EventLog
from .service import ServiceRuntime
from .stack import RatePolicy, WindowPolicy

log = logging.getLogger(__name__)

# How often the rate policy samples the counters, and the window policy polls for a first request.
RATE_SAMPLE_INTERVAL = 0.25
FIRST_REQUEST_POLL = 0.1


class Scaling:
    """Sets `ServiceRuntime.desired`; `changed` is set whenever a count changed."""

    def __init__(self, events: EventLog, changed: asyncio.Event, stats: Callable[[str], auto.Sample],
                 monotonic: Callable[[], float], wall: Callable[[], float]):
        self.events = events
        self._changed = changed
        self._stats = stats
        self._mono = monotonic
        self._wall = wall

    def scale(self, svc: ServiceRuntime, n: int, reason: str) -> None:
        """Set the desired count now; the autoscaler carries on from it at its next decision."""
        if svc.dependency:
            raise ValueError(f"{svc.name} is a dependency: it always runs exactly one replica")
        # The stack's bounds, which the autoscaler keeps to as well (max never exceeds the port range).
        low, high = svc.spec.replicas.min, svc.spec.replicas.max
        if not low <= n <= high:
            raise ValueError(f"{svc.name}: replicas must be between {low} and {high} (replicas.min and "
                             f"replicas.max in the stack)")
        old = svc.desired
        svc.desired = n
        # The rate policy's stabilisation period restarts, so a manual count is not undone at once.
        svc.rate = auto.RateState(samples=svc.rate.samples, since=self._mono())
        svc.last_decision = f"scaled {svc.name} {old}\u2192{n}: {reason}"
        self.events.emit("scaled", svc.name, None, svc.last_decision)
        self._changed.set()

    def wake_from_zero(self, svc: ServiceRuntime, hold_for: float) -> None:
        """A request is held because no replica is ready: a service scaled to zero gets one replica
        now (the held requests go out once it is ready; the gateway holds them up to `hold_for`
        seconds, and the service stays up at least that long)."""
        if svc.dependency or svc.rollout_owner is not None:
            return
        policy = svc.spec.autoscale
        if stz.wake(svc.desired, held=True) is None or not (isinstance(policy, RatePolicy) and svc.spec.replicas.min == 0):
            return
        now = self._mono()
        svc.idle = stz.woken(self._stats(svc.name).count, now, hold_for)
        svc.rate = auto.RateState(samples=svc.rate.samples, since=now)
        svc.desired = 1
        svc.last_decision = f"scaled {svc.name} 0\u21921: a request is waiting (scale from zero)"
        self.events.emit("scaled", svc.name, None, svc.last_decision)
        self._changed.set()

    def carry_over(self, svc: ServiceRuntime, old: auto.Policy) -> None:
        """`apply` changed the service's policy or bounds (its spec already holds the new ones):
        the state the restarted loop goes on from (autoscale.carry_over), never a fresh one."""
        svc.window, svc.rate = auto.carry_over(old, svc.spec.autoscale, svc.window, svc.rate,
                                               self._stats(svc.name), self._mono())

    async def run(self, svc: ServiceRuntime) -> None:
        """The autoscaler of one service, until cancelled (or at once for a service without a policy)."""
        policy = svc.spec.autoscale
        lo, hi = svc.spec.replicas.min, svc.spec.replicas.max
        while True:
            try:
                sample = self._stats(svc.name)
            except Exception:
                log.exception("reading stats of %s failed", svc.name)
                await asyncio.sleep(1.0)
                continue
            now = self._mono()
            if isinstance(policy, WindowPolicy):
                while True:
                    svc.window, d = auto.window_step(svc.window, sample, now, svc.desired, policy, lo, hi,
                                                     svc.name, self._wall())
                    if d is None:
                        break
                    self._apply(svc, d)
                deadline = auto.window_next_deadline(svc.window, policy)
                # Sleep exactly to the end of the window so its count is read right at the boundary.
                pause = FIRST_REQUEST_POLL if deadline is None else max(0.0, deadline - self._mono())
            elif isinstance(policy, RatePolicy):
                svc.idle = stz.observe(svc.idle, sample.count, now)
                floor = stz.floor(policy, lo, svc.idle, now)
                svc.rate, d = auto.rate_step(svc.rate, sample, now, svc.desired, policy, floor, hi, svc.name)
                self._apply(svc, d)
                pause = RATE_SAMPLE_INTERVAL
            else:
                return
            await asyncio.sleep(pause)

    def _apply(self, svc: ServiceRuntime, d: auto.ScaleDecision) -> None:
        if d.desired == svc.desired:
            if isinstance(svc.spec.autoscale, WindowPolicy):
                svc.last_decision = d.reason
            return
        svc.last_decision = d.reason
        svc.desired = d.desired
        self.events.emit("scaled", svc.name, None, d.reason)
        self._changed.set()
