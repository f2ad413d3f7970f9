"""Batching (common/counter.py): the group commit behind `_count` and shared identical reads,
driven without a database."""

from __future__ import annotations

import asyncio

import pytest

from selfieless.apps.common.counter import Batcher, GroupCounter, KeyedBatches, SharedReads


class SlowCommit:
    """Records each batch size; each commit takes a few loop turns, like a real transaction."""

    def __init__(self, fail_on: int | None = None):
        self.batches: list[int] = []
        self.fail_on = fail_on

    async def __call__(self, k: int) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        self.batches.append(k)
        if self.fail_on == len(self.batches):
            raise RuntimeError("database is gone")


def test_a_lone_request_is_committed_alone():
    commit = SlowCommit()

    async def main():
        counter = GroupCounter(commit)
        await counter.add()
        await counter.add()
    asyncio.run(main())
    assert commit.batches == [1, 1]


def test_requests_arriving_during_a_commit_share_the_next_one():
    commit = SlowCommit()

    async def main():
        counter = GroupCounter(commit)
        await asyncio.gather(*(counter.add() for _ in range(50)))
    asyncio.run(main())
    assert sum(commit.batches) == 50
    assert len(commit.batches) < 50


def test_a_failed_commit_fails_its_batch_only():
    commit = SlowCommit(fail_on=1)

    async def main():
        counter = GroupCounter(commit)
        first = [asyncio.ensure_future(counter.add()) for _ in range(5)]
        results = await asyncio.gather(*first, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        await counter.add()  # the next batch commits again
    asyncio.run(main())
    assert commit.batches == [5, 1]


def test_a_request_that_goes_away_does_not_cancel_its_batch():
    commit = SlowCommit()

    async def main():
        counter = GroupCounter(commit)
        leaver = asyncio.ensure_future(counter.add())
        stayer = asyncio.ensure_future(counter.add())
        await asyncio.sleep(0)
        leaver.cancel()
        await stayer
        with pytest.raises(asyncio.CancelledError):
            await leaver
    asyncio.run(main())
    assert commit.batches == [2]


class VersionedTable:
    """A value that writes change; each read takes a few loop turns and returns the value as it
    was when the read started, like a query."""

    def __init__(self):
        self.version = 0
        self.reads: list[tuple] = []

    async def read(self, key: tuple) -> tuple:
        seen = self.version
        self.reads.append(key)
        for _ in range(3):
            await asyncio.sleep(0)
        return key, seen


def test_identical_reads_share_a_query_that_started_after_they_arrived():
    table = VersionedTable()

    async def main():
        shared = SharedReads(table.read)
        first = asyncio.ensure_future(shared.read(("categories",)))
        while not table.reads:
            await asyncio.sleep(0)        # until its query is on its way, at version 0
        table.version = 1                 # a write is acknowledged, then ten more reads arrive
        later = [asyncio.ensure_future(shared.read(("categories",))) for _ in range(10)]
        other = asyncio.ensure_future(shared.read(("acts", "Nature")))
        results = await asyncio.gather(first, *later, other)
        assert len(shared) == 0           # no key is kept once nobody waits on it
        return results
    results = asyncio.run(main())
    assert results[0] == (("categories",), 0)
    assert all(r == (("categories",), 1) for r in results[1:11])  # never the answer from before
    assert results[11] == (("acts", "Nature"), 1)
    assert sorted(table.reads) == [("acts", "Nature"), ("categories",), ("categories",)]


def test_two_runs_on_their_way_at_once_when_allowed():
    commit = SlowCommit()
    in_flight, most = 0, 0

    async def tracked(items: list) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await commit(len(items))
        finally:
            in_flight -= 1

    async def main(concurrency: int) -> int:
        nonlocal most
        most = 0
        counter = Batcher(tracked, concurrency)
        adds = []
        for _ in range(50):  # one request per turn of the loop
            adds.append(asyncio.ensure_future(counter.join()))
            await asyncio.sleep(0)
        await asyncio.gather(*adds)
        assert counter.idle
        return most
    assert asyncio.run(main(1)) == 1
    commit.batches.clear()
    assert asyncio.run(main(2)) == 2
    assert sum(commit.batches) == 50 and len(commit.batches) < 50


def test_keyed_batches_hand_each_run_what_its_callers_passed():
    runs: list[tuple] = []

    async def run(key: tuple, items: list) -> int:
        runs.append((key, list(items)))
        for _ in range(3):
            await asyncio.sleep(0)
        return len(items)

    async def main():
        batches = KeyedBatches(run)
        calls = [batches.join(("a",), 1), batches.join(("b",), 2), batches.join(("a",), 3)]
        results = await asyncio.gather(*calls)
        assert len(batches) == 0
        return results
    assert asyncio.run(main()) == [2, 1, 2]
    assert sorted(runs) == [(("a",), [1, 3]), (("b",), [2])]
