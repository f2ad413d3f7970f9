"""Crash-loop backoff, as pure functions of (state, now).

A crash loop is a replica that never becomes healthy: it dies (or fails its start grace) before
its first passing probe, again and again. Only such failures in a row wait `initial`, doubling up
to `maximum`, so a replica that dies right after every start never spins the CPU. A replica that
did become healthy and failed later (a crash on request, a kill, a failed probe) proved that the
service can run: it is replaced at once and the count starts over. Otherwise `_crash` sent a few
times a second to a one-replica service grew the backoff to 16 s with no replica at all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0


@dataclass(frozen=True)
class BackoffState:
    failures: int = 0                  # consecutive failures not yet forgiven
    healthy_since: float | None = None  # when the current replica on this slot became ready


def record_ready(state: BackoffState, now: float) -> BackoffState:
    return state if state.healthy_since is not None else replace(state, healthy_since=now)


def record_failure(state: BackoffState, now: float, policy: BackoffPolicy = BackoffPolicy()) -> tuple[BackoffState, float]:
    """A replica on this slot failed; returns the new state and how long to wait before restarting."""
    # A replica that became healthy is not part of a crash loop, however short its life.
    failures = 0 if state.healthy_since is not None else state.failures
    delay = 0.0 if failures == 0 else min(policy.initial * policy.factor ** (failures - 1), policy.maximum)
    return BackoffState(failures=failures + 1, healthy_since=None), delay


def in_crash_loop(state: BackoffState) -> bool:
    return state.failures >= 2
