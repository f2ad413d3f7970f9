"""What the control API's long poll sends: only the counters and backends that changed.

The control plane long-polls the gateway for its counters (the autoscaler's input, the metrics)
and its backends' views (in flight, served). Sending all of them on every answer cost CPU for
every replica on both sides twice a second, even with no traffic at all. :class:`Published`
numbers the versions it has seen (a revision); a reader says which revision it holds and gets
what changed after it, nothing when nothing did.

Pure bookkeeping, no I/O: the control API calls ``update`` with the gateway's current view.
Services are never removed from a gateway (their pools and counters stay), so a change is always
a new or replaced value.
"""

from __future__ import annotations

from typing import Any


class Published:
    """The latest view of each service's counters and backends, and the revision each last changed at."""

    def __init__(self) -> None:
        self.rev = 0  # 0: nothing published yet; a reader holding 0 has nothing
        self.stats: dict[str, Any] = {}
        self.pools: dict[str, Any] = {}
        self._changed: dict[tuple[str, str], int] = {}  # ("stats" | "pools", service) -> revision

    def update(self, stats: dict[str, Any], pools: dict[str, Any]) -> bool:
        """Take the current view (JSON-ready values by service); True when any value differs
        from the last one seen (the revision goes up by one for all of them together)."""
        changed = False
        for part, current in (("stats", stats), ("pools", pools)):
            seen = self.stats if part == "stats" else self.pools
            for name, value in current.items():
                if seen.get(name) != value:
                    if not changed:
                        self.rev += 1
                        changed = True
                    seen[name] = value
                    self._changed[(part, name)] = self.rev
        return changed

    def since(self, rev: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(stats, pools) that changed after revision ``rev``: everything for 0, or for a revision
        never published here (a reader of another gateway instance)."""
        if not 0 < rev <= self.rev:
            rev = 0
        return ({n: v for n, v in self.stats.items() if self._changed[("stats", n)] > rev},
                {n: v for n, v in self.pools.items() if self._changed[("pools", n)] > rev})
