"""Batching: requests that arrive while one round trip is under way share the next one.

The shared request counter behind `_count`: every counted request must be in the database before
it is handled, so that `_count` is exact and the same from every replica. One write transaction
per request made the counter row the busiest lock of the whole database. Here the requests that
arrive while one increment is being committed wait together and are committed by the next one,
as `n = n + k`: one transaction per batch, never more than one at a time per replica, and still
no request is handled before it is counted. An idle replica commits a lone request at once.

The acts service's username check works the same way (acts/users_client.py): one list of users
fetched for all the uploads that arrived while the previous one was on its way. So do identical
reads on a server database (SharedReads, used by common/db.py): each request still gets rows
read after it arrived, never an older answer, but ten clients asking for the category list at
once cost one or two queries instead of ten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """`await join()` returns the result of a `run(k)` that started after this call (k: how many
    joined it); a failed run fails its whole batch. At most one run at a time."""

    def __init__(self, run: Callable[[int], Awaitable[T]]):
        self._run = run
        self._waiting: asyncio.Future[T] | None = None  # the batch still open for requests
        self._size = 0
        self._flusher: asyncio.Task[None] | None = None

    async def join(self) -> T:
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
            self._size = 0
        self._size += 1
        batch = self._waiting
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        # shield: a client that goes away must not cancel the batch its neighbours wait on
        return await asyncio.shield(batch)

    async def _flush(self) -> None:
        try:
            while self._waiting is not None:
                batch, size = self._waiting, self._size
                self._waiting, self._size = None, 0
                try:
                    result = await self._run(size)
                except Exception as exc:
                    batch.set_exception(exc)
                    batch.exception()  # retrieved here too: every waiter may have gone away
                else:
                    batch.set_result(result)
        finally:
            self._flusher = None


    @property
    def idle(self) -> bool:
        return self._flusher is None and self._waiting is None


class SharedReads(Generic[T]):
    """`await read(key)`: the result of a `run(key)` that started after this call, shared with
    the callers of the same key that joined the same batch (a Batcher per key in use)."""

    def __init__(self, run: Callable[[tuple], Awaitable[T]]):
        self._run = run
        self._batches: dict[tuple, Batcher[T]] = {}

    async def read(self, key: tuple) -> T:
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = Batcher(lambda _k: self._run(key))
        try:
            return await batch.join()
        finally:
            if batch.idle and self._batches.get(key) is batch:
                del self._batches[key]  # nobody waits on this key: keep only the keys in use

    def __len__(self) -> int:
        return len(self._batches)


class GroupCounter(Batcher[None]):
    """`await add()` returns once this request is committed (`commit(k)` adds k to the count)."""

    add = Batcher.join
