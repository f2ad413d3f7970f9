"""The lease keeper (orchestrator/lease_keeper.py) against a versioned in-memory record with the
semantics of the Swarm config it uses in production (a write against a stale version loses;
tests/swarm/test_swarm_lease.py runs it on the real thing): a second keeper waits while the first
renews, takes over only after the first's deadline plus the margin, and a keeper whose store
stops answering reports the loss before its deadline. Short leases (2 s, margin 0.5 s): about
8 s in all."""

from __future__ import annotations

import asyncio
import threading
import time

from selfieless.orchestrator.drivers.swarm_lease import Record
from selfieless.orchestrator.lease import Terms
from selfieless.orchestrator.lease_keeper import LeaseKeeper

TERMS = Terms(seconds=2.0, margin=0.5)


class VersionedRecord:
    """One record, written only against the version last read (as Swarm's optimistic updates)."""

    def __init__(self) -> None:
        self.lease = None
        self.version = 0
        self.lock = threading.Lock()
        self.cut = threading.Event()    # set: every call hangs until `heal`
        self.healed = threading.Event()

    def _wait_if_cut(self) -> None:
        if self.cut.is_set():
            self.healed.wait(30)

    def read(self) -> Record:
        self._wait_if_cut()
        with self.lock:
            return Record(self.lease, self.version if self.version else None, "id" if self.version else None)

    def write(self, lease, read: Record) -> bool:
        self._wait_if_cut()
        with self.lock:
            if (read.version or 0) != self.version:
                return False
            self.lease, self.version = lease, self.version + 1
            return True

    def remove(self) -> None:
        with self.lock:
            self.lease, self.version = None, 0


async def _until(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.02)


def test_the_second_waits_while_the_first_renews_then_takes_over_after_the_deadline_and_margin():
    async def main():
        store = VersionedRecord()
        a, b = LeaseKeeper(store, TERMS, me="a"), LeaseKeeper(store, TERMS, me="b")
        stop = asyncio.Event()
        assert await a.acquire(stop) and a.acting()
        lost = []
        keep = asyncio.create_task(a.keep(lost.append))
        b_acquired = asyncio.create_task(b.acquire(stop))
        await asyncio.sleep(3 * TERMS.seconds / 2)          # a renews meanwhile; b waits
        assert not b_acquired.done() and a.acting() and not b.acting()
        assert any("b waits: held by a" in r for r in b.history)
        keep.cancel()                                        # a dies: no more renewals
        last = store.lease
        await asyncio.wait_for(b_acquired, 10)
        took_over_at = time.time()
        assert took_over_at >= last.deadline + TERMS.margin
        assert b.acting() and not a.acting() and store.lease.holder == "b"
        assert "previous holder a" in b.history[-1]
        assert lost == []
    asyncio.run(main())


def test_a_keeper_whose_store_stops_answering_stops_acting_before_its_deadline():
    async def main():
        store = VersionedRecord()
        a = LeaseKeeper(store, TERMS, me="a")
        assert await a.acquire(asyncio.Event())
        lost: list[tuple[float, str]] = []
        keep = asyncio.create_task(a.keep(lambda reason: lost.append((time.time(), reason))))
        held = a.held
        store.cut.set()
        try:
            await _until(lambda: lost, 10)
            at, reason = lost[0]
            # The last renewal may have committed before the cut: the deadline is the stored one.
            assert at < store.lease.deadline, (at, store.lease, held)
            assert not a.acting() and "stopped acting" in reason
        finally:
            store.healed.set()
            await asyncio.wait_for(keep, 5)
    asyncio.run(main())


def test_a_release_lets_the_next_act_at_once():
    async def main():
        store = VersionedRecord()
        a, b = LeaseKeeper(store, TERMS, me="a"), LeaseKeeper(store, TERMS, me="b")
        assert await a.acquire(asyncio.Event())
        await a.release()
        assert not a.acting() and store.lease.holder == ""
        t0 = time.monotonic()
        assert await b.acquire(asyncio.Event())
        assert time.monotonic() - t0 < TERMS.seconds   # not after a's deadline
        assert "released by its previous holder" in b.history[-1]
    asyncio.run(main())
