"""The pure core of `selfieless load`: the open-loop schedule and the summary math.

Open loop means request *i* is due at ``start + i / rps`` whatever happened to the requests before
it: a slow server does not slow the generator down (which would hide the latency it causes, the
"coordinated omission" problem). Latency is measured from the *scheduled* time, not from when the
request could actually be sent, for the same reason; both are recorded.

No I/O here, so benchmarks and tests import it freely.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


def schedule(rps: float, duration: float) -> Iterator[float]:
    """Offsets in seconds from the start at which each request is due: 0, 1/rps, 2/rps, ...

    ``round(rps * duration)`` requests in all, every offset < ``duration``.
    """
    if rps <= 0:
        raise ValueError("rps must be > 0")
    if duration <= 0:
        raise ValueError("duration must be > 0")
    n = planned_count(rps, duration)
    interval = 1.0 / rps
    for i in range(n):
        yield i * interval


def planned_count(rps: float, duration: float) -> int:
    """How many requests a run of `duration` seconds at `rps` sends."""
    return max(1, int(round(rps * duration)))


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation (like numpy's default); None if empty."""
    if not sorted_values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass(frozen=True)
class Result:
    """One request's outcome: a status code, or an error name when no response came back."""

    scheduled: float          # offset from the start at which it was due (s)
    latency: float            # seconds from `scheduled` to the end of the response (or the error)
    status: int | None = None
    error: str | None = None
    send_delay: float = 0.0   # how late it actually went out after `scheduled` (client saturation)


@dataclass
class Summary:
    planned: int
    sent: int
    ok: int                               # 2xx and 3xx
    statuses: dict[int, int]
    errors: dict[str, int]
    elapsed: float                        # s, first scheduled send -> last completion
    achieved_rps: float                   # completed requests per second over `elapsed`
    target_rps: float
    p50: float | None                     # latency, seconds
    p90: float | None
    p99: float | None
    max: float | None
    mean: float | None
    max_send_delay: float = 0.0
    status_classes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "planned": self.planned, "sent": self.sent, "ok": self.ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "status_classes": self.status_classes, "errors": self.errors,
            "elapsed": self.elapsed, "achieved_rps": self.achieved_rps, "target_rps": self.target_rps,
            "latency": {"p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max, "mean": self.mean},
            "max_send_delay": self.max_send_delay,
        }


def summarize(results: Iterable[Result], target_rps: float, planned: int, elapsed: float | None = None) -> Summary:
    """Counts by status and error, latency percentiles over completed requests (any status), rps.

    ``elapsed`` defaults to the span from the first scheduled send to the last completion.
    """
    results = list(results)
    statuses = Counter(r.status for r in results if r.status is not None)
    errors = Counter(r.error for r in results if r.status is None)
    latencies = sorted(r.latency for r in results if r.status is not None)
    if elapsed is None:
        elapsed = max((r.scheduled + r.latency for r in results), default=0.0) - \
            min((r.scheduled for r in results), default=0.0)
    completed = len(latencies)
    classes = Counter(f"{s // 100}xx" for s in statuses.elements())
    return Summary(
        planned=planned,
        sent=len(results),
        ok=sum(n for s, n in statuses.items() if 200 <= s < 400),
        statuses=dict(sorted(statuses.items())),
        errors=dict(errors),
        elapsed=elapsed,
        achieved_rps=completed / elapsed if elapsed > 0 else 0.0,
        target_rps=target_rps,
        p50=percentile(latencies, 50),
        p90=percentile(latencies, 90),
        p99=percentile(latencies, 99),
        max=latencies[-1] if latencies else None,
        mean=sum(latencies) / completed if completed else None,
        max_send_delay=max((r.send_delay for r in results), default=0.0),
        status_classes=dict(sorted(classes.items())),
    )


def target_url(url: str) -> tuple[str, str | None]:
    """The URL to load and, when it was completed, the note that says how.

    `127.0.0.1:8080/api/v1/categories` (no scheme, as curl takes it) means http://; a scheme other
    than http/https, or no host, is a ValueError that says what to write instead.
    """
    from urllib.parse import urlsplit

    text = url.strip()
    note = None
    if "://" not in text:
        text, note = f"http://{text}", f"no scheme in {url!r}: loading http://{url.strip()}"
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"URL {url!r}: scheme {parts.scheme!r} is not supported; use http:// or https://")
    if not parts.hostname:
        raise ValueError(f"URL {url!r} has no host; write e.g. http://127.0.0.1:8080/api/v1/categories")
    return text, note
