"""Autoscaling decisions as pure functions of (state, counter sample, now, replicas, config).

Nothing here sleeps or reads a clock: the runtime samples the gateway's monotonic request counter,
passes the time in, and applies the returned decision. Two policies:

`window` (the course policy): the first window starts at the first counted request; windows are
back to back and `window_seconds` long; at the end of each window the service is set to
clamp(floor(N / requests_per_replica) + 1, min, max), N being that window's count.

`rate`: desired = ceil(observed requests per second / target_rps_per_replica), over a short sliding
window. Scale-out applies at once; scale-in only once every recommendation during the last
`scale_in_delay` seconds agrees (the maximum over the stabilisation period is used).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .stack import NoPolicy, RatePolicy, WindowPolicy


@dataclass(frozen=True)
class Sample:
    """One reading of the gateway's counters for a service."""

    count: int                       # monotonic count of counted API requests
    first_request_at: float | None   # monotonic time of the first counted request


@dataclass(frozen=True)
class Decision:
    desired: int
    current: int
    reason: str
    count: int = 0                   # requests in the window the decision is about
    window_end: float | None = None  # monotonic

    @property
    def changes(self) -> bool:
        return self.desired != self.current


def clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, n))


def _clock_text(mono: float, now: float, wall_now: float | None) -> str:
    wall = (wall_now if wall_now is not None else time.time()) - (now - mono)
    return time.strftime("%H:%M:%S", time.localtime(wall))


def _arrow(service: str, current: int, desired: int) -> str:
    return f"scaled {service} {current}\u2192{desired}" if desired != current else f"kept {service} at {current}"


# --- window policy ---------------------------------------------------------------------------

@dataclass(frozen=True)
class WindowState:
    window_start: float | None = None  # monotonic start of the current window
    base_count: int = 0                # counter value at the start of the current window


def window_count(state: WindowState, sample: Sample) -> int:
    """Requests counted so far in the current window (0 before the first request)."""
    if state.window_start is None:
        # The first window starts with the first request even if no step has run since.
        return sample.count if sample.first_request_at is not None else 0
    return sample.count - state.base_count


def window_next_deadline(state: WindowState, cfg: WindowPolicy) -> float | None:
    return None if state.window_start is None else state.window_start + cfg.window_seconds


def window_step(state: WindowState, sample: Sample, now: float, current: int, cfg: WindowPolicy,
                lo: int, hi: int, service: str = "service",
                wall_now: float | None = None) -> tuple[WindowState, Decision | None]:
    """Close at most one window. Call again while it returns a decision to catch up on several.

    Returns (new state, None) when no window has ended by `now`.
    """
    if state.window_start is None:
        if sample.first_request_at is None:
            return state, None
        # The first window starts at the first counted request, not when the orchestrator started.
        # Everything counted so far belongs to it (the counter started at zero).
        state = WindowState(window_start=sample.first_request_at, base_count=0)
    end = state.window_start + cfg.window_seconds
    if now < end:
        return state, None
    n = sample.count - state.base_count
    desired = clamp(n // cfg.requests_per_replica + 1, lo, hi)
    reason = (f"{_arrow(service, current, desired)}: {n} request{'s' if n != 1 else ''} in the window "
              f"ending {_clock_text(end, now, wall_now)}")
    # The next window starts exactly where this one ended (back to back), so a late sample does
    # not shift the grid; requests that arrived after `end` but before this sample are attributed
    # to the window just closed (the runtime samples right at `end`, so that slack is milliseconds).
    return WindowState(window_start=end, base_count=sample.count), Decision(desired, current, reason, n, end)


# --- rate policy -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RateState:
    samples: tuple[tuple[float, int], ...] = ()          # (time, count), oldest first
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, raw desired), oldest first
    # Since when recommendations have been collected; scale-in waits for a full stabilisation
    # period of them. The runtime resets this on a manual scale so the manual count holds a while.
    since: float | None = None


def rate_step(state: RateState, sample: Sample, now: float, current: int, cfg: RatePolicy,
              lo: int, hi: int, service: str = "service") -> tuple[RateState, Decision]:
    samples = tuple(s for s in state.samples if s[0] >= now - cfg.window_seconds) + ((now, sample.count),)
    t0, c0 = samples[0]
    if len(samples) < 2 or now - t0 <= 0:
        rps = 0.0
    else:
        # Over the span the samples actually cover: right after a start (or a gap) that is shorter
        # than the window, and dividing by the full window would under-read a fresh load step.
        rps = (sample.count - c0) / (now - t0)
    # Scale-out also looks at the most recent half window, so a load step shows at full height
    # after half a window instead of ramping up over a whole one.
    recent = [s for s in samples if s[0] >= now - cfg.window_seconds / 2]
    if len(recent) >= 2 and now - recent[0][0] > 0:
        rps = max(rps, (sample.count - recent[0][1]) / (now - recent[0][0]))
    raw = clamp(math.ceil(rps / cfg.target_rps_per_replica - 1e-9), lo, hi)
    recs = tuple(r for r in state.recommendations if r[0] >= now - cfg.scale_in_delay) + ((now, raw),)
    since = now if state.since is None else state.since
    new_state = RateState(samples=samples, recommendations=recs, since=since)
    if raw >= current:
        desired = raw
        why = f"{rps:.1f} req/s over the last {now - t0:.1f} s, target {cfg.target_rps_per_replica:g} per replica"
    else:
        # Stabilisation: only go as low as the highest recommendation of the last scale_in_delay
        # seconds, so a short lull does not tear replicas down.
        desired = min(current, max(r for _, r in recs))
        if now - since < cfg.scale_in_delay:
            desired = current  # not enough history yet to be sure the load stayed low
        why = (f"{rps:.1f} req/s over the last {now - t0:.1f} s, target {cfg.target_rps_per_replica:g} per replica, "
               f"stable for {cfg.scale_in_delay:g} s")
    return new_state, Decision(desired, current, f"{_arrow(service, current, desired)}: {why}", sample.count - c0)


# --- a policy changed by `apply` --------------------------------------------------------------

Policy = WindowPolicy | RatePolicy | NoPolicy


def carry_over(old: Policy, new: Policy, window: WindowState, rate: RateState, sample: Sample,
               now: float) -> tuple[WindowState, RateState]:
    """The autoscaler state to go on with when `apply` changes a service's policy or bounds.

    The gateway's counter runs on, so the state stays meaningful: an unchanged policy keeps it
    whole (the current window and its count, a manual count's stabilisation period). Starting
    afresh instead would put the first window back at the first request ever counted and replay
    every window since, all but the first with 0 requests (so the service fell to `min`).
    - window -> window with another length: the current window goes on, with its count, and ends
      at its start plus the new length (at once when that has passed: it ends now, so exactly one
      decision closes it, never a catch-up over windows that were never counted apart);
    - a service new to the window policy: its first window starts now, counting from now, or at
      the first request when none has been counted yet;
    - rate -> rate: the samples stay; the recommendations made with another target or delay go,
      and scale-in waits a full new `scale_in_delay` before it trusts the new ones;
    - a service new to the rate policy: no history, and no scale-in before `scale_in_delay`.
    """
    if isinstance(new, WindowPolicy):
        if isinstance(old, WindowPolicy):
            if window.window_start is not None and window.window_start + new.window_seconds < now:
                window = WindowState(window_start=now - new.window_seconds, base_count=window.base_count)
        elif sample.first_request_at is None:
            window = WindowState()
        else:
            window = WindowState(window_start=now, base_count=sample.count)
    elif isinstance(new, RatePolicy):
        if not isinstance(old, RatePolicy):
            rate = RateState(since=now)
        elif (old.target_rps_per_replica, old.scale_in_delay) != (new.target_rps_per_replica, new.scale_in_delay):
            rate = RateState(samples=rate.samples, since=now)
    return window, rate
