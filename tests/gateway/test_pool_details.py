"""The replica pool's bookkeeping in detail (pure: no sockets): idle keep-alive connections,
drain and ready waiters, ejection, exclusion on retries, views.

Idle connections are opaque to the pool (an object with ``closed``, ``idle_since`` and ``close()``,
see the pool's docstring), so a minimal one stands in for the proxy's upstream connection.
"""

import asyncio

import pytest

from selfieless.gateway.pool import (
    ACTIVE, DRAINING, EJECTED, OK, READY, REMOVED, WITHDRAWN, ReplicaPool, ReplicaView, in_rotation, view_state,
)


class Conn:
    def __init__(self, name):
        self.name, self.closed, self.idle_since, self.close_calls = name, False, None, 0

    def close(self):
        self.closed = True
        self.close_calls += 1

    def __repr__(self):
        return self.name


def pool_of(*ids, **kw):
    p = ReplicaPool("s", **kw)
    for i, rid in enumerate(ids):
        p.add(rid, "127.0.0.1", 9000 + i)
    return p


def test_unknown_balance_mode_is_refused():
    with pytest.raises(ValueError) as info:
        ReplicaPool("s", balance="random")
    assert str(info.value) == "unknown balance mode 'random'"


def test_views_and_repr():
    p = ReplicaPool("s")
    assert p.add("A", "127.0.0.1", "9000") == ReplicaView("A", "127.0.0.1", 9000, READY, 0, 0)
    rep = p.acquire()
    assert p.replicas == [ReplicaView("A", "127.0.0.1", 9000, READY, 1, 0)]
    assert repr(rep) == "Backend('A', 127.0.0.1:9000, ready, in_flight=1)"
    p.release(rep)
    p.release(p.acquire(), served=False)
    assert p.replicas == [ReplicaView("A", "127.0.0.1", 9000, READY, 0, 1)]
    assert p.get("A") is rep and p.get("B") is None and p.ready_count == 1


def test_idle_connections_lifo_max_age_and_limits():
    p = pool_of("A")
    rep = p.get("A")
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    assert rep.put_idle(a, 10.0, 2) and rep.put_idle(b, 11.0, 2)
    assert not rep.put_idle(c, 12.0, 2)  # at most two kept
    assert (a.idle_since, b.idle_since) == (10.0, 11.0)
    # Most recent first; one idle for max_age or longer is closed instead.
    assert rep.take_idle(12.0, 5.0) is b
    assert rep.take_idle(15.0, 5.0) is None and a.closed and rep.idle == []
    # A connection the replica closed while idle is skipped (closed again: harmless).
    d, e = Conn("d"), Conn("e")
    rep.put_idle(d, 20.0, 4)
    rep.put_idle(e, 20.0, 4)
    e.closed = True
    assert rep.take_idle(20.0, 5.0) is d and e.close_calls == 1
    closed = Conn("x")
    closed.closed = True
    assert not rep.put_idle(closed, 20.0, 4)


def test_expire_idle_closes_only_the_old_ones():
    rep = pool_of("A").get("A")
    old, new, dead = Conn("old"), Conn("new"), Conn("dead")
    rep.put_idle(old, 0.0, 8)
    rep.put_idle(dead, 3.0, 8)
    rep.put_idle(new, 4.0, 8)
    dead.closed = True
    rep.expire_idle(5.0, 5.0)  # old is exactly max_age: expired; dead is closed: dropped
    assert old.closed and rep.idle == [new] and not new.closed
    rep.expire_idle(8.9, 5.0)
    assert rep.idle == [new]
    rep.close_idle()
    assert new.closed and rep.idle == []


def test_idle_connections_dropped_when_the_replica_leaves_or_moves():
    p = pool_of("A", "B", "C")
    conns = {}
    for rid in "ABC":
        conns[rid] = Conn(rid)
        assert p.get(rid).put_idle(conns[rid], 0.0, 4)
    p.add("A", "127.0.0.1", 9000)  # same address: kept
    assert not conns["A"].closed
    p.add("A", "127.0.0.1", 9100)  # moved: its connections point at the old address
    assert conns["A"].closed and p.get("A").port == 9100
    p.eject(p.get("B"), "refused")
    assert conns["B"].closed
    assert not p.get("B").put_idle(Conn("late"), 0.0, 4)  # not ready: not kept
    p.remove("C")
    assert conns["C"].closed
    p.add("D", "h", 1)
    d = Conn("d")
    p.get("D").put_idle(d, 0.0, 4)
    p.close()
    assert d.closed


def test_remove_and_readd():
    p = pool_of("A", "B")
    assert not p.remove("X")
    rep = p.get("B")
    assert p.remove("B") and rep.state == REMOVED and p.get("B") is None
    assert [v.id for v in p.replicas] == ["A"] and p.ready_count == 1
    ejected = p.get("A")
    p.eject(ejected, "reset")
    assert ejected.eject_reason == "reset" and p.acquire() is None
    p.add("A", "127.0.0.1", 9000)  # back after the control plane confirms it
    assert ejected.state == READY and ejected.eject_reason is None and p.acquire() is ejected


def test_eject_only_ready_replicas_of_this_pool_and_survive_a_bad_callback():
    calls = []

    def callback(*args):
        calls.append(args)
        raise RuntimeError("control plane bug")

    p = pool_of("A", "B", on_eject=callback)
    a = p.get("A")
    assert p.eject(a, "refused") and a.state == EJECTED and calls == [("s", "A", "refused")]
    other = pool_of("B").get("B")  # same id, another pool's object
    assert not p.eject(other, "x")
    b = p.get("B")
    p.remove("B")
    assert not p.eject(b, "x")
    assert len(calls) == 1


def test_acquire_exclude_for_retries():
    p = pool_of("A", "B", "C")
    a = p.get("A")
    assert p.acquire(exclude=a).id == "B"  # A was next: skipped
    assert p.acquire(exclude=a).id == "C"
    assert p.acquire(exclude=a).id == "B"  # wraps past A again
    single = pool_of("A")
    assert single.acquire(exclude=single.get("A")) is None
    assert single.get("A").in_flight == 0
    least = pool_of("A", "B", balance="least_outstanding")
    la = least.get("A")
    assert least.acquire(exclude=la).id == "B" and least.acquire(exclude=la).id == "B"
    only = pool_of("A", balance="least_outstanding")
    assert only.acquire(exclude=only.get("A")) is None and only.get("A").in_flight == 0
    assert ReplicaPool("s", balance="least_outstanding").acquire() is None


def test_rotation_cursor_when_a_replica_before_it_leaves():
    p = pool_of("A", "B", "C", "D")
    assert [p.acquire().id for _ in range(3)] == ["A", "B", "C"]  # D next
    p.remove("A")  # before the cursor: D stays next
    assert p.acquire().id == "D"
    p.remove("D")  # the one just served, at the end: B next
    assert [p.acquire().id for _ in range(3)] == ["B", "C", "B"]


@pytest.mark.anyio
async def test_drain_waits_for_in_flight_then_resolves():
    p = pool_of("A", "B")
    a = p.acquire()
    assert a.id == "A"
    assert await p.drain("X") is True  # unknown: nothing in flight
    waiter = asyncio.ensure_future(p.drain("A", timeout=10))
    await asyncio.sleep(0.01)
    assert not waiter.done() and a.state == DRAINING and p.acquire().id == "B"
    p.release(a)
    assert await asyncio.wait_for(waiter, 1) is True
    assert a._drain_waiters == []


@pytest.mark.anyio
async def test_drain_times_out_and_removal_wakes_drainers():
    p = pool_of("A")
    a = p.acquire()
    assert await p.drain("A", timeout=0.05) is False
    assert a._drain_waiters == []  # the timed-out waiter is forgotten
    waiter = asyncio.ensure_future(p.drain("A", timeout=10))
    await asyncio.sleep(0.01)
    p.release_drained(a)  # the proxy saw its last exchange end
    assert await asyncio.wait_for(waiter, 1) is True
    # Idle already: drained at once, even while ejected.
    b = pool_of("B")
    rep = b.get("B")
    b.eject(rep, "x")
    assert await b.drain("B") is True and rep.state == EJECTED
    # remove() of a replica with nothing in flight resolves its drainers.
    c = pool_of("C")
    crep = c.acquire()
    w = asyncio.ensure_future(c.drain("C", timeout=10))
    await asyncio.sleep(0.01)
    crep.in_flight = 0
    c.remove("C")
    assert await asyncio.wait_for(w, 1) is True


@pytest.mark.anyio
async def test_wait_ready_wakes_on_add_and_stays_small():
    p = ReplicaPool("s")
    fut = p.wait_ready()
    assert not fut.done()
    p.add("A", "h", 1)
    assert fut.done()
    stale = [p.wait_ready() for _ in range(70)]
    for f in stale:
        f.cancel()
    live = p.wait_ready()
    assert len(p._ready_waiters) == 1  # the cancelled ones were dropped past 64
    p.add("B", "h", 2)
    assert live.done() and p._ready_waiters == []


def test_balance_mode_is_reported():
    assert ReplicaPool("s").balance == "round_robin"
    assert ReplicaPool("s", balance="least_outstanding").balance == "least_outstanding"


@pytest.mark.anyio
async def test_a_drained_replica_leaves_the_rotation():
    p = pool_of("A", "B", "C")
    assert await p.drain("B") is True  # nothing in flight: at once
    assert [p.acquire().id for _ in range(4)] == ["A", "C", "A", "C"]


def test_least_outstanding_scans_forward_from_the_cursor():
    p = pool_of("A", "B", "C", balance="least_outstanding")
    reps = [p.acquire() for _ in range(3)]  # one each; the cursor is back at A
    p.release(reps[1])
    p.release(reps[2])  # A busy, B and C idle: the first idle one after the cursor, B
    assert p.acquire().id == "B"


def test_round_robin_exclude_wraps_and_counts():
    p = pool_of("A", "B", "C")
    assert [p.acquire().id for _ in range(2)] == ["A", "B"]  # C next
    assert p.acquire(exclude=p.get("C")).id == "A"  # the excluded one was last: wrap to the first
    assert p.acquire(exclude=p.get("B")).id == "C"  # B next but excluded: the one after it
    single = pool_of("A")
    rep = single.acquire()
    assert single.acquire() is rep and rep.in_flight == 2
    single.release(rep)
    single.release(rep)
    assert rep.served == 2 and rep.in_flight == 0


@pytest.mark.anyio
async def test_drain_waits_for_the_last_request_not_the_first():
    p = pool_of("A")
    a = p.acquire()
    p.acquire()
    waiter = asyncio.ensure_future(p.drain("A", timeout=10))
    await asyncio.sleep(0.01)
    p.release(a)
    await asyncio.sleep(0.01)
    assert not waiter.done() and a.in_flight == 1
    p.release(a)
    assert await asyncio.wait_for(waiter, 1) is True


def test_ejection_is_logged_with_service_replica_and_reason(caplog):
    def bad(*a):
        raise RuntimeError("boom")

    p = pool_of("A", on_eject=bad)
    with caplog.at_level("WARNING", logger="selfieless.gateway.pool"):
        p.eject(p.get("A"), "connection refused")
    messages = [r.getMessage() for r in caplog.records]
    assert "gateway: ejected s/A: connection refused" in messages
    assert "on_eject callback failed for s/A" in messages


@pytest.mark.anyio
async def test_ready_waiters_are_pruned_past_64():
    p = ReplicaPool("s")
    first = [p.wait_ready() for _ in range(64)]
    for f in first:
        f.cancel()
    extra = p.wait_ready()
    assert len(p._ready_waiters) == 65  # 64 is not past the limit: nothing pruned yet
    extra.cancel()
    p.wait_ready()
    assert len(p._ready_waiters) == 1


def test_finish_parks_the_connection_only_when_it_may_be_reused_and_counts_the_request():
    p = pool_of("A", "B")
    a = p.acquire()
    assert a.id == "A" and a.in_flight == 1
    kept = Conn("kept")
    p.finish(a, kept, keep=True, now=5.0, max_idle=1)
    assert a.idle == [kept] and kept.idle_since == 5.0 and not kept.closed
    assert (a.in_flight, a.served) == (0, 1)
    # Each reason not to keep closes the connection and still counts the request:
    # the proxy said no; the idle list is full; the connection is already closed; the replica left.
    for keep, max_idle, closed, leave in ((False, 5, False, False), (True, 1, False, False),
                                          (True, 5, True, False), (True, 5, False, True)):
        a.in_flight += 1
        conn = Conn("c")
        conn.closed = closed
        if leave:
            p.withdraw(a, "out of rotation")
        before = list(a.idle)
        p.finish(a, conn, keep=keep, now=6.0, max_idle=max_idle)
        assert a.idle == before and conn.closed and conn.idle_since is None, (keep, max_idle, closed, leave)
    assert (a.in_flight, a.served) == (0, 5)


@pytest.mark.anyio
async def test_finish_of_the_last_request_in_flight_completes_a_drain():
    p = pool_of("A")
    a = p.acquire()
    b = p.acquire()
    assert a is b and a.in_flight == 2
    drained = asyncio.ensure_future(p.drain("A", timeout=5))
    await asyncio.sleep(0)
    p.finish(a, Conn("1"), keep=True, now=1.0, max_idle=8)
    await asyncio.sleep(0.05)
    assert not drained.done() and a.state == DRAINING and a.idle == []  # one still in flight
    p.finish(a, Conn("2"), keep=True, now=1.0, max_idle=8)
    assert await asyncio.wait_for(drained, 1) is True
    assert a.idle == [] and a.served == 2


def test_withdraw_and_reinstate():
    p = pool_of("A", "B", "C")
    a, b = p.get("A"), p.get("B")
    assert p.withdraw(b, "stalled") and b.state == "withdrawn" and b.eject_reason == "stalled"
    assert not p.withdraw(b, "again")  # only a ready one
    assert [p.acquire().id for _ in range(4)] == ["A", "C", "A", "C"]
    assert not p.eject(b, "refused")  # already out: nothing more to report
    assert p.reinstate(b) and b.state == "ready" and b.eject_reason is None
    assert not p.reinstate(a)  # only a withdrawn one
    assert sorted(p.acquire().id for _ in range(3)) == ["A", "B", "C"]
    p.withdraw(b, "stalled")
    p.add("B", "127.0.0.1", 9001)  # a passing probe: the control plane adds it again
    assert b.state == "ready" and p.ready_count == 3
    p.remove("B")
    assert not p.reinstate(b)  # removed meanwhile: stays out


# The two axes of a backend's state and the one rotation rule (pool.in_rotation, pool.view_state).
@pytest.mark.parametrize("admin, health, rotates, shown", [
    (ACTIVE, OK, True, READY),
    (ACTIVE, EJECTED, False, EJECTED),
    (ACTIVE, WITHDRAWN, False, WITHDRAWN),
    (DRAINING, OK, False, DRAINING),
    (DRAINING, EJECTED, False, EJECTED),  # drained after an ejection: the view still says why it left
    (DRAINING, WITHDRAWN, False, WITHDRAWN),
    (REMOVED, OK, False, REMOVED),
    (REMOVED, EJECTED, False, REMOVED),
    (REMOVED, WITHDRAWN, False, REMOVED),
])
def test_rotation_rule_and_view_state(admin, health, rotates, shown):
    assert in_rotation(admin, health) is rotates
    assert view_state(admin, health) == shown


@pytest.mark.anyio
async def test_a_withdrawn_backend_being_drained_does_not_come_back_when_it_answers():
    p = pool_of("A", "B")
    b = p.get("B")
    assert p.withdraw(b, "stalled")
    assert await p.drain("B", timeout=1) is True  # the control plane takes it out meanwhile
    assert p.reinstate(b) and b.health == OK  # it answered: nothing against it any more ...
    assert b.state == DRAINING and not b.in_rotation and p.ready_count == 1  # ... but it is leaving
    assert [p.acquire().id for _ in range(3)] == ["A", "A", "A"]


@pytest.mark.anyio
async def test_reinstating_wakes_requests_waiting_for_a_ready_backend_unless_it_is_leaving():
    p = pool_of("A")
    a = p.get("A")
    assert p.withdraw(a, "stalled") and p.ready_count == 0
    waiting = p.wait_ready()
    await p.drain("A", timeout=1)
    p.reinstate(a)  # answered, but draining: still out, nobody to wake
    await asyncio.sleep(0)
    assert not waiting.done() and p.acquire() is None
    p.add("A", "127.0.0.1", 9000)  # the control plane wants it again
    assert waiting.done() and p.acquire() is a
    p.release(a)
    p.withdraw(a, "stalled")
    again = p.wait_ready()
    assert p.reinstate(a) and again.done() and a.in_rotation and a.eject_reason is None


def test_a_new_backend_is_active_and_healthy_and_in_rotation_once_its_pool_places_it():
    from selfieless.gateway.pool import Backend
    b = Backend("A", "127.0.0.1", 9000)
    assert (b.admin, b.health, b.in_rotation, b.state) == (ACTIVE, OK, False, READY)
    assert (b.in_flight, b.served, b.idle, b.eject_reason, b.served_mark, b.heard_at) == (0, 0, [], None, 0, 0.0)
