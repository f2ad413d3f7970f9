"""Requests/s history per service, kept by the admin server so a fresh dashboard shows the last minutes.

The admin server samples the gateway's API request counters once a second (`record`), and
`GET /api/history` answers the rates between successive samples (`series`). Keeping them here
costs nothing per request: the counters are the gateway's own, read once a second. The window is
bounded (`keep` samples), so memory does not grow with uptime.
"""

from __future__ import annotations

from collections import deque
from typing import Any

SAMPLE_INTERVAL = 1.0   # seconds between samples
KEEP_SECONDS = 600      # history kept: the last ten minutes


class RateHistory:
    """Counter samples per service and the request rates between them."""

    def __init__(self, keep: int = int(KEEP_SECONDS / SAMPLE_INTERVAL) + 1) -> None:
        self.keep = keep
        self.samples: dict[str, deque[tuple[float, int]]] = {}

    def record(self, now: float, counts: dict[str, int]) -> None:
        """One sample: `counts` are the services' cumulative API request counters at wall time `now`."""
        for name, n in counts.items():
            self.samples.setdefault(name, deque(maxlen=self.keep)).append((now, n))

    def series(self, seconds: float, now: float) -> dict[str, list[list[float]]]:
        """`{service: [[t, requests/s], ...]}` for the intervals ending in the last `seconds` before `now`,
        oldest first; `t` is the interval's end (Unix time). A counter that went down (the gateway
        was restarted) counts as a rate of 0, not a negative one."""
        out: dict[str, list[list[float]]] = {}
        since = now - seconds
        for name, points in self.samples.items():
            rates = []
            prev = None
            for t, n in points:
                if prev is not None and t > since and t > prev[0]:
                    rates.append([round(t, 3), round(max(0, n - prev[1]) / (t - prev[0]), 3)])
                prev = (t, n)
            out[name] = rates
        return out


def api_request_counts(orchestrator: Any, gateway: Any) -> dict[str, int]:
    """Cumulative API requests per routed service, from the gateway's counters (0 before any)."""
    stats = getattr(gateway, "all_stats", None)
    stats = (stats() if callable(stats) else stats) or {}
    out = {}
    for name, svc in getattr(orchestrator, "services", {}).items():
        if getattr(svc, "dependency", False):
            continue  # no routes: nothing counts requests to it
        st = stats.get(name)
        out[name] = int(getattr(st, "api_requests", 0)) if st is not None else 0
    return out
