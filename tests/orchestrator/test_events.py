"""The event ring buffer: ids, cursors, capacity, follow."""

import asyncio

import pytest

from selfieless.orchestrator.events import EventLog


def test_ids_increase_and_cursor_follows():
    t = iter(range(100, 200))
    log = EventLog(capacity=3, clock=lambda: float(next(t)))
    for i in range(5):
        log.emit("start", "acts", f"r{i}", f"reason {i}")
    assert [e.id for e in log.since(0)] == [3, 4, 5]  # ring buffer dropped 1 and 2
    assert [e.replica for e in log.since(4)] == ["r4"]
    assert log.since(5) == [] and log.last_id == 5
    e = log.since(4)[0]
    assert e.ts == 104.0 and e.to_dict()["reason"] == "reason 4"
    assert "start" in str(e) and "acts/r4" in str(e)


def test_unknown_kind_rejected_and_listeners_called():
    log = EventLog()
    seen = []
    unsub = log.subscribe(seen.append)
    log.emit("scaled", "acts", None, "x")
    unsub()
    log.emit("scaled", "acts", None, "y")
    assert [e.reason for e in seen] == ["x"]
    with pytest.raises(ValueError):
        log.emit("exploded")


@pytest.mark.anyio
async def test_wait_returns_new_events_or_times_out():
    log = EventLog()
    assert await log.wait(0, timeout=0.01) == []
    waiter = asyncio.create_task(log.wait(0, timeout=5))
    await asyncio.sleep(0)
    log.emit("ready", "acts", "r", "probe ok")
    got = await waiter
    assert [e.kind for e in got] == ["ready"]
