"""Per-service counters kept on the hot path (no I/O, no locks), and the only code that bumps them.

Everything is a plain int, float or list of ints that the event loop thread bumps; readers
(the control plane, a Prometheus exporter) only read attributes, which is safe because the loop
is single-threaded and an exporter on the same loop sees a consistent snapshot between callbacks.
Histogram buckets are *not* cumulative here (one bump per observation); ``cumulative()`` turns
them into Prometheus' form when someone asks.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable

from .routing import path_under

# Upper bounds in seconds (Prometheus' defaults); the last, implicit bucket is +Inf.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class LatencyHistogram:
    """Fixed-bucket histogram: ``counts[i]`` observations with ``bounds[i-1] < v <= bounds[i]``."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.counts: list[int] = [0] * (len(self.bounds) + 1)  # last one is +Inf
        self.sum = 0.0
        self.count = 0

    def plus(self, other: "LatencyHistogram") -> "LatencyHistogram":
        """A new histogram holding both one's observations (same bounds)."""
        out = LatencyHistogram(self.bounds)
        out.counts = [x + y for x, y in zip(self.counts, other.counts)]
        out.sum, out.count = self.sum + other.sum, self.count + other.count
        return out

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le semantics).
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(le, cumulative count), ...]`` ending with ``(inf, count)``, Prometheus style."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            total += n
            out.append((bound, total))
        return out

    def snapshot(self) -> dict:
        return {"buckets": self.cumulative(), "sum": self.sum, "count": self.count}


class ServiceStats:
    """Counters of one service.

    ``api_requests`` counts requests forwarded to a replica whose path is a counted API path (see
    :class:`CountRule`); ``first_request_at`` is ``time.monotonic()`` of the first of them.
    ``requests`` counts every forwarded request; ``status_classes[k]`` counts responses with status
    ``k``xx (index 0 is unused), gateway-made errors for this service included.
    """

    __slots__ = ("service", "api_requests", "first_request_at", "requests", "latency",
                 "status_classes", "retries", "ejections", "withdrawals", "gateway_errors")

    def __init__(self, service: str) -> None:
        self.service = service
        self.api_requests = 0
        self.first_request_at: float | None = None
        self.requests = 0
        self.latency = LatencyHistogram()
        self.status_classes: list[int] = [0] * 6
        self.retries = 0
        self.ejections = 0
        self.withdrawals = 0  # replicas taken out as stalled (gateway/stall.py)
        self.gateway_errors = 0  # errors the gateway answered itself (502/503/504/413...)

    # Every counter is bumped here, by what happened (the proxy calls these, nothing else writes).
    def forwarded(self, counted: bool) -> None:
        """A request reached a backend (once, however many attempts it took); ``counted``: an
        API request (:class:`CountRule`). The clock is read for the first counted one only."""
        self.requests += 1
        if counted:
            self.api_requests += 1
            if self.first_request_at is None:
                self.first_request_at = time.monotonic()

    def answered(self, status: int, seconds: float) -> None:
        """A backend's response (status ``status``) was relayed, ``seconds`` after the request began."""
        self.latency.observe(seconds)
        self.status_classes[status // 100 if 100 <= status < 600 else 5] += 1

    def gateway_error(self, status: int = 0) -> None:
        """The gateway answered ``status`` itself, or (0) closed the connection without a word."""
        self.gateway_errors += 1
        if status:
            self.status_classes[status // 100] += 1

    def retried(self) -> None:
        self.retries += 1

    def ejected(self) -> None:
        self.ejections += 1

    def withdrew(self) -> None:
        self.withdrawals += 1

    def plus(self, other: "ServiceStats") -> "ServiceStats":
        """A new object holding both one's counters (the same service on two gateways, say), and
        the earlier first request. Kept beside the fields so that a new counter is summed too."""
        out = ServiceStats(self.service)
        for name in ("api_requests", "requests", "retries", "ejections", "withdrawals", "gateway_errors"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        firsts = [t for t in (self.first_request_at, other.first_request_at) if t is not None]
        out.first_request_at = min(firsts) if firsts else None
        out.status_classes = [x + y for x, y in zip(self.status_classes, other.status_classes)]
        out.latency = self.latency.plus(other.latency)
        return out

    def snapshot(self) -> dict:
        return {
            "service": self.service,
            "api_requests": self.api_requests,
            "first_request_at": self.first_request_at,
            "requests": self.requests,
            "latency": self.latency.snapshot(),
            "status": {f"{k}xx": self.status_classes[k] for k in range(1, 6)},
            "retries": self.retries,
            "ejections": self.ejections,
            "withdrawals": self.withdrawals,
            "gateway_errors": self.gateway_errors,
        }


class CountRule:
    """Decides whether a path counts as an API request (docs/interfaces.md, bottom).

    Counted: at or below ``prefix`` and not at or below any excluded path. Decided on bytes, with a
    bounded memo because the same few paths come back all the time.
    """

    __slots__ = ("prefix", "exclude", "_cache")

    def __init__(self, prefix: str = "/api/v1", exclude: Iterable[str] = ()) -> None:
        self.prefix = prefix.rstrip("/").encode() or b"/"
        self.exclude = tuple(e.rstrip("/").encode() for e in exclude)
        self._cache: dict[bytes, bool] = {}

    def counted(self, path: bytes) -> bool:
        try:
            return self._cache[path]
        except KeyError:
            pass
        ok = path_under(path, self.prefix) and not any(path_under(path, e) for e in self.exclude)
        if len(self._cache) < 4096:
            self._cache[path] = ok
        return ok
