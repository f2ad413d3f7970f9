"""The event ring buffer: ids, cursors, capacity, follow."""

import asyncio

import pytest

from selfieless.orchestrator.events import EventLog, newer_count


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


@pytest.mark.parametrize("last_id, cursor, held, limit, expected", [
    (5, 0, 3, None, 3),     # the ring holds 3..5: all of them
    (5, 2, 3, None, 3),     # cursor just before the oldest held
    (5, 3, 3, None, 2),
    (5, 4, 3, None, 1),
    (5, 5, 3, None, 0),     # nothing new
    (5, 9, 3, None, 0),     # a cursor from the future (an earlier run): nothing
    (5, 0, 3, 2, 2),        # the newest two only
    (5, 4, 3, 2, 1),        # fewer than the limit
    (0, 0, 0, None, 0),     # empty log
    (10_000, 9_000, 5_000, None, 1_000),
])
def test_newer_count(last_id, cursor, held, limit, expected):
    assert newer_count(last_id, cursor, held, limit) == expected


def test_since_and_tail_with_limits():
    log = EventLog(capacity=4)
    for i in range(6):
        log.emit("start", "acts", f"r{i}")
    assert [e.id for e in log.since(0, limit=2)] == [5, 6]
    assert [e.id for e in log.since(3)] == [4, 5, 6]
    assert [e.id for e in log.tail(3)] == [4, 5, 6] and [e.id for e in log.tail(10)] == [3, 4, 5, 6]
    assert log.tail(0) == []


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
