"""The server databases' connection slots (common/aiodb.py: Connections), with stand-in
connections: never more than `size` open, waiters served in order, a broken connection's slot
passed on, a refused or too long wait a NoConnection."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from selfieless.apps.common import aiodb
from selfieless.apps.common.aiodb import Connections
from selfieless.apps.common.dberrors import NoConnection


class Server:
    def __init__(self, refuse: bool = False):
        self.ids = itertools.count(1)
        self.closed: list[int] = []
        self.refuse = refuse

    async def connect(self) -> int:
        await asyncio.sleep(0)
        if self.refuse:
            raise RuntimeError("Transport does not expose socket instance")  # asyncmy at max_connections
        return next(self.ids)

    def close(self, conn: int) -> None:
        self.closed.append(conn)


def test_at_most_size_open_and_waiters_get_released_connections_in_order():
    server = Server()

    async def main():
        pool = Connections(server.connect, server.close, 2)
        a, b = await pool.acquire(), await pool.acquire()
        third = asyncio.ensure_future(pool.acquire())
        fourth = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.01)
        assert not third.done() and pool.open == 2
        pool.release(b)
        pool.release(a, broken=True)  # its slot goes to the next waiter, which opens a new one
        assert await third == b and await fourth == 3
        pool.release(b)
        assert await pool.acquire() == b  # an idle one is reused before anything is opened
        return pool.open
    assert asyncio.run(main()) == 2
    assert server.closed == [1]


def test_a_refused_connection_is_no_connection_and_frees_its_slot():
    server = Server(refuse=True)

    async def main():
        pool = Connections(server.connect, server.close, 1)
        with pytest.raises(NoConnection):
            await pool.acquire()
        server.refuse = False
        return await pool.acquire(), pool.open
    assert asyncio.run(main()) == (1, 1)


def test_a_wait_too_long_is_no_connection_and_a_cancelled_waiter_takes_nothing(monkeypatch):
    monkeypatch.setattr(aiodb, "ACQUIRE_TIMEOUT", 0.05)
    server = Server()

    async def main():
        pool = Connections(server.connect, server.close, 1)
        held = await pool.acquire()
        with pytest.raises(NoConnection):
            await pool.acquire()
        gone = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        pool.release(held)
        return await pool.acquire(), pool.open
    assert asyncio.run(main()) == (1, 1)
