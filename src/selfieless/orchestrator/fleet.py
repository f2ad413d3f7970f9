"""What the control plane makes of several gateways (the swarm driver's one per node): pure.

- ``attachments(held, seen)``: which gateway addresses to attach to and which to let go, from
  the addresses the control plane holds and those a swarm snapshot lists.
- ``add_stats`` / ``sum_stats``: one service's counters summed over gateways. ``Ledger`` keeps
  them monotonic when a gateway is replaced (its new instance starts from zero: the old
  instance's last counters are kept as ``retired``), so the autoscaler's window never sees a
  count go down.
- ``merge_views``: one service's backends as every gateway sees them, as one list: a backend any
  gateway holds something against (ejected, withdrawn, draining) is shown so, and the control
  plane's next passing probe re-adds it everywhere (orchestrator/pool.py's rule is unchanged).

``first_request_at`` is a gateway's monotonic clock, which means nothing on another machine:
the fleet replaces it with the control plane's own time of the poll that first showed a counted
request (``Ledger.observe``), at most one poll late.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

from selfieless.gateway.pool import ReplicaView
from selfieless.gateway.stats import ServiceStats


def attachments(held: Iterable[str], seen: Iterable[str]) -> tuple[list[str], list[str]]:
    """(attach, detach), each sorted: addresses seen and not held, held and no longer seen."""
    held, seen = set(held), set(seen)
    return sorted(seen - held), sorted(held - seen)


def add_stats(a: ServiceStats | None, b: ServiceStats | None) -> ServiceStats | None:
    """The two services' counters added (a new object; ServiceStats.plus); None + x = x."""
    if a is None or b is None:
        return copy.deepcopy(a if b is None else b)
    return a.plus(b)


def sum_stats(parts: Iterable[Mapping[str, ServiceStats]]) -> dict[str, ServiceStats]:
    """Every service's counters summed over ``parts`` (one mapping per gateway)."""
    out: dict[str, ServiceStats] = {}
    for part in parts:
        for name, st in part.items():
            out[name] = add_stats(out.get(name), st)
    return out


# The order in which a backend's state wins when gateways disagree (gateway/pool.py view_state).
_STATE_WEIGHT = {"removed": 4, "ejected": 3, "withdrawn": 3, "draining": 2, "ready": 0}


def merge_views(per_gateway: Iterable[Iterable[ReplicaView]]) -> list[ReplicaView]:
    """One list of a service's backends from every gateway's: first-seen order, the worst state,
    in-flight and served summed."""
    merged: dict[str, ReplicaView] = {}
    for views in per_gateway:
        for v in views:
            had = merged.get(v.id)
            if had is None:
                merged[v.id] = v
                continue
            worse = v.state if _STATE_WEIGHT.get(v.state, 1) > _STATE_WEIGHT.get(had.state, 1) else had.state
            merged[v.id] = had._replace(state=worse, in_flight=had.in_flight + v.in_flight,
                                        served=had.served + v.served)
    return list(merged.values())


class Ledger:
    """Counters of every gateway instance the fleet has seen, summed monotonically.

    ``observe(address, instance, stats, now)``: the latest counters of the gateway at ``address``;
    a new ``instance`` there retires the previous one's last counters into ``retired``.
    ``forget(address)`` does the same for a gateway let go. Plain state, no I/O."""

    def __init__(self) -> None:
        self.retired: dict[str, ServiceStats] = {}
        self.live: dict[str, tuple[str, dict[str, ServiceStats]]] = {}
        self._first: dict[tuple[str, str, str], float] = {}  # (address, instance, service) -> our time

    def observe(self, address: str, instance: str, stats: Mapping[str, ServiceStats], now: float) -> None:
        held = self.live.get(address)
        if held is not None and held[0] != instance:
            self.forget(address)
        local = {}
        for name, st in stats.items():
            key = (address, instance, name)
            if st.first_request_at is not None:
                self._first.setdefault(key, now)
            st = copy.copy(st)
            st.first_request_at = self._first.get(key)
            local[name] = st
        self.live[address] = (instance, local)

    def forget(self, address: str) -> None:
        held = self.live.pop(address, None)
        if held is not None:
            self.retired = sum_stats([self.retired, held[1]])
            self._first = {k: v for k, v in self._first.items() if k[0] != address}

    def totals(self) -> dict[str, ServiceStats]:
        return sum_stats([self.retired, *(stats for _, stats in self.live.values())])
