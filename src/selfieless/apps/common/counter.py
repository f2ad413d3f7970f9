"""Group commit for the shared request counter behind `_count`.

Every counted request must be in the database before it is handled, so that `_count` is exact
and the same from every replica. One write transaction per request made the counter row the
busiest lock of the whole database. Here the requests that arrive while one increment is being
committed wait together and are committed by the next one, as `n = n + k`: one transaction per
batch, never more than one at a time per replica, and still no request is handled before it is
counted. An idle replica commits a lone request at once, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class GroupCounter:
    """`await add()` returns once this request is committed; a failed commit fails its whole batch."""

    def __init__(self, commit: Callable[[int], Awaitable[None]]):
        self._commit = commit          # adds k to the shared count in one transaction
        self._waiting: asyncio.Future[None] | None = None  # the batch still open for requests
        self._size = 0
        self._flusher: asyncio.Task[None] | None = None

    async def add(self) -> None:
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
            self._size = 0
        self._size += 1
        batch = self._waiting
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        # shield: a client that goes away must not cancel the batch its neighbours wait on
        await asyncio.shield(batch)

    async def _flush(self) -> None:
        try:
            while self._waiting is not None:
                batch, size = self._waiting, self._size
                self._waiting, self._size = None, 0
                try:
                    await self._commit(size)
                except Exception as exc:
                    batch.set_exception(exc)
                    batch.exception()  # retrieved here too: every waiter may have gone away
                else:
                    batch.set_result(None)
        finally:
            self._flusher = None
