"""The event log: an in-memory ring buffer of everything the control plane did, and why.

Each event has a monotonically increasing id, so a follower (admin API, `selfieless events -f`)
keeps a cursor and asks for what came after it; ids keep increasing when old events fall off.
The ids in the buffer are consecutive, so what follows a cursor is found from the newest end
without looking at the rest (a follower asks after every event, and a scale to a thousand
replicas makes two thousand of them).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from dataclasses import asdict, dataclass
from typing import Callable

KINDS = frozenset({
    "start", "ready", "unhealthy", "ejected", "withdrawn", "stalled", "replaced", "scaled", "drained",
    "adopted", "backoff", "exited", "stopped", "waiting", "held", "recovered",
    "rollout", "rollback", "applied", "port", "tls", "lease",
})


def newer_count(last_id: int, cursor: int, held: int, limit: int | None = None) -> int:
    """How many of the newest `held` events (ids consecutive, up to `last_id`) come after
    `cursor`, at most `limit` of them."""
    n = min(held, max(0, last_id - cursor))
    return min(n, limit) if limit else n


@dataclass(frozen=True)
class Event:
    id: int
    ts: float          # wall clock (time.time())
    kind: str
    service: str | None
    replica: str | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.ts))
        who = "/".join(x for x in (self.service, self.replica) if x)
        return f"{when} #{self.id} {self.kind:<9} {who}: {self.reason}"


# Enough for a scale to a thousand replicas (a start and a ready event each) and then some.
CAPACITY = 5000


class EventLog:
    def __init__(self, capacity: int = CAPACITY, clock: Callable[[], float] = time.time):
        self._events: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._next_id = 1
        self._clock = clock
        self._listeners: list[Callable[[Event], None]] = []
        self._changed: asyncio.Event | None = None

    def emit(self, kind: str, service: str | None = None, replica: str | None = None, reason: str = "") -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        ev = Event(self._next_id, self._clock(), kind, service, replica, reason)
        self._next_id += 1
        self._events.append(ev)
        for listener in list(self._listeners):
            listener(ev)
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return ev

    def since(self, cursor: int = 0, limit: int | None = None) -> list[Event]:
        """Events with id > cursor, oldest first (with `limit`, the newest `limit` of them)."""
        return list(self._newest(newer_count(self.last_id, cursor, len(self._events), limit)))[::-1]

    def _newest(self, n: int):
        return itertools.islice(reversed(self._events), n)

    def tail(self, n: int = 50) -> list[Event]:
        return list(self._newest(max(0, n)))[::-1]

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call `listener` for every new event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def wait(self, cursor: int, timeout: float | None = None) -> list[Event]:
        """Events after `cursor`, waiting up to `timeout` for one to appear (follow mode)."""
        while True:
            got = self.since(cursor)
            if got:
                return got
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                return []

    def __len__(self) -> int:
        return len(self._events)
