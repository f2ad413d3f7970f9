"""Crash-loop backoff, as pure functions of (state, now).

The first failure after a healthy stretch is replaced at once: a one-off crash must be invisible
(a replacement serves within about a second). Failures that follow each other without
`reset_after` seconds of health in between wait `initial`, doubling up to `maximum`, so a replica
that dies right after every start never spins the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    reset_after: float = 60.0


@dataclass(frozen=True)
class BackoffState:
    failures: int = 0                  # consecutive failures not yet forgiven
    healthy_since: float | None = None  # when the current replica on this slot became ready


def record_ready(state: BackoffState, now: float) -> BackoffState:
    return state if state.healthy_since is not None else replace(state, healthy_since=now)


def record_failure(state: BackoffState, now: float, policy: BackoffPolicy = BackoffPolicy()) -> tuple[BackoffState, float]:
    """A replica on this slot failed; returns the new state and how long to wait before restarting."""
    failures = state.failures
    if state.healthy_since is not None and now - state.healthy_since >= policy.reset_after:
        failures = 0
    delay = 0.0 if failures == 0 else min(policy.initial * policy.factor ** (failures - 1), policy.maximum)
    return BackoffState(failures=failures + 1, healthy_since=None), delay


def in_crash_loop(state: BackoffState) -> bool:
    return state.failures >= 2
