"""Pure-module tests: route table, replica pool selection, header rewriting, counters."""

from __future__ import annotations

import asyncio

import pytest

from selfieless.gateway.headers import (
    FRAME_CHUNKED, FRAME_CLOSE, FRAME_LENGTH, FRAME_NONE, BadRequest, ResponseHeadReader,
    build_request_head,
)
from selfieless.gateway.keepalive import connection_header, keep_open
from selfieless.gateway.pool import DRAINING, EJECTED, READY, ReplicaPool
from selfieless.gateway.routing import RouteTable
from selfieless.gateway.stats import CountRule, LatencyHistogram


def test_longest_prefix_segment_aware():
    t = RouteTable({"/api/v1/users": "users", "/api/v1": "acts", "/other/": "other"})
    assert t.match(b"/api/v1/users") == "users"
    assert t.match(b"/api/v1/users/x") == "users"
    assert t.match(b"/api/v1/usersX") == "acts"
    assert t.match(b"/api/v1/acts/1") == "acts"
    assert t.match(b"/api/v1") == "acts"
    assert t.match(b"/api/v12") is None
    assert t.match(b"/other") == "other"
    assert t.match(b"/nope") is None
    assert RouteTable({"/": "all"}).match(b"/anything/at/all") == "all"


def test_round_robin_fair_under_changes():
    p = ReplicaPool("s")
    for rid in "ABC":
        p.add(rid, "h", 1)

    def take(n):
        out = []
        for _ in range(n):
            r = p.acquire()
            out.append(r.id)
            p.release(r)
        return "".join(out)

    assert take(6) == "ABCABC"
    assert take(1) == "A"
    p.remove("B")  # B was next: C is next now, nothing skipped twice
    assert take(4) == "CACA"
    p.add("D", "h", 1)  # joins at the end of the rotation
    assert take(6) == "CDACDA"
    assert [v.id for v in p.replicas] == ["A", "C", "D"]


def test_least_outstanding_with_round_robin_ties():
    p = ReplicaPool("s", balance="least_outstanding")
    for rid in "ABC":
        p.add(rid, "h", 1)
    a = p.acquire()
    assert a.id == "A"
    assert p.acquire().id == "B"  # A busy
    assert p.acquire().id == "C"  # A and B busy
    # All three have one in flight: the tie goes to the rotation, which is back at A.
    assert [p.acquire().id for _ in range(3)] == ["A", "B", "C"]
    # Fewest in flight wins whatever the rotation says: C and A finish, A is next in rotation.
    c = p.get("C")
    p.release(c)
    p.release(c)
    assert p.acquire().id == "C"
    assert p.acquire().id == "C"  # still the only one with fewer than two
    assert p.acquire().id == "A"  # now all at two: rotation continues after C
    # With nothing in flight it is plain round-robin.
    for rep in (p.get("A"), p.get("B"), p.get("C")):
        while rep.in_flight:
            p.release(rep)

    def take(n):
        out = []
        for _ in range(n):
            r = p.acquire()
            out.append(r.id)
            p.release(r)
        return "".join(out)

    assert take(6) == "BCABCA"


def test_eject_and_callback_once():
    calls = []
    p = ReplicaPool("s", on_eject=lambda *a: calls.append(a))
    p.add("A", "h", 1)
    p.add("B", "h", 2)
    rep = p.get("A")
    assert p.eject(rep, "refused")
    assert not p.eject(rep, "again")
    assert calls == [("s", "A", "refused")]
    assert {v.id: v.state for v in p.replicas} == {"A": EJECTED, "B": READY}
    assert all(p.acquire().id == "B" for _ in range(3))
    p.add("A", "h", 1)
    assert p.get("A").state == READY


def test_drain_resolves_when_idle():
    async def main():
        p = ReplicaPool("s")
        p.add("A", "h", 1)
        p.add("B", "h", 2)
        rep = p.acquire()
        assert rep.id == "A"
        assert await p.drain("A", timeout=0.05) is False
        assert p.get("A").state == DRAINING
        task = asyncio.ensure_future(p.drain("A", timeout=5))
        await asyncio.sleep(0.01)
        assert not task.done()
        assert p.acquire().id == "B"
        p.release(rep)
        assert await task is True
        assert await p.drain("unknown") is True

    asyncio.run(main())


def test_request_head_rewrite():
    head, cl, chunked, expect = build_request_head(
        b"POST", b"/a?b=1",
        [(b"Host", b"x"), (b"Connection", b"keep-alive, X-Drop"), (b"X-Drop", b"1"),
         (b"Keep-Alive", b"5"), (b"TE", b"trailers"), (b"Upgrade", b"h2c"),
         (b"X-Forwarded-For", b"1.2.3.4"), (b"Content-Length", b"3"), (b"X-Keep", b"Yes")],
        b"127.0.0.1")
    assert head.startswith(b"POST /a?b=1 HTTP/1.1\r\n")
    text = head.decode()
    assert "Host: x\r\n" in text and "X-Keep: Yes\r\n" in text and "Content-Length: 3\r\n" in text
    for gone in ("X-Drop", "Keep-Alive", "TE:", "Upgrade", "Connection"):
        assert gone not in text
    assert "X-Forwarded-For: 1.2.3.4, 127.0.0.1\r\n" in text
    assert "X-Forwarded-Proto: http\r\n" in text
    assert head.endswith(b"\r\n\r\n") and cl == 3 and not chunked and not expect
    head, cl, chunked, _ = build_request_head(
        b"PUT", b"/", [(b"Transfer-Encoding", b"chunked")], b"10.0.0.1")
    assert chunked and cl == -1 and b"Transfer-Encoding: chunked\r\n\r\n" in head
    with pytest.raises(BadRequest):
        build_request_head(b"POST", b"/", [(b"Content-Length", b"1"), (b"Content-Length", b"2")], b"x")


def build_response_head(code, reason, headers, no_body, http11, wants):
    """Feed a head to a ResponseHeadReader the way the parser does, then finish it as the
    exchange does (keepalive.py decides the Connection line)."""
    reader = ResponseHeadReader()
    reader.begin_head()
    reader.on_status(reason)
    for name, value in headers:
        reader.on_header(name, value)
    frame, until_close = reader.body_framing(no_body, http11)
    keep = keep_open(wants, True, False, False, frame)
    return reader.render_head(code, frame, connection_header(keep, http11)), frame, keep, until_close


def test_response_head_rewrite():
    hdrs = [(b"Content-Type", b"text/plain"), (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"s"), (b"Transfer-Encoding", b"chunked"), (b"Keep-Alive", b"t=5")]
    head, framing, keep, until_close = build_response_head(200, b"OK", hdrs, False, True, True)
    assert framing == FRAME_CHUNKED and keep and not until_close
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    head, framing, keep, until_close = build_response_head(
        200, b"OK", [(b"Content-Length", b"2")], False, False, True)
    assert framing == FRAME_LENGTH and head.endswith(b"Connection: keep-alive\r\n\r\n")
    head, framing, keep, until_close = build_response_head(200, b"OK", [], False, False, True)
    assert framing == FRAME_CLOSE and not keep and until_close
    _, framing, _, until_close = build_response_head(204, b"No Content", [], True, True, True)
    assert framing == FRAME_NONE and not until_close


def test_counting_rule_and_histogram():
    rule = CountRule("/api/v1", ("/api/v1/_health", "/api/v1/_crash", "/api/v1/_count"))
    assert rule.counted(b"/api/v1/acts")
    assert rule.counted(b"/api/v1/_crashes")
    assert not rule.counted(b"/api/v1/_health")
    assert not rule.counted(b"/api/v1/_count/x")
    assert not rule.counted(b"/other")
    h = LatencyHistogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 5):
        h.observe(v)
    assert h.counts == [2, 1, 1]
    assert h.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]


def test_gateway_does_not_import_the_orchestrator():
    import ast
    from pathlib import Path

    import selfieless.gateway as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any("orchestrator" in n for n in names), f"{path.name} imports {names}"


def test_websocket_upgrade_detection():
    from selfieless.gateway.headers import websocket_upgrade, with_upgrade

    ws = [(b"Host", b"x"), (b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"WebSocket")]
    assert websocket_upgrade(ws) == b"WebSocket"
    assert websocket_upgrade([(b"Upgrade", b"websocket")]) is None  # Connection must name it
    assert websocket_upgrade([(b"Connection", b"upgrade"), (b"Upgrade", b"h2c")]) is None
    assert websocket_upgrade([(b"Connection", b"upgrade")]) is None
    head, *_ = build_request_head(b"GET", b"/ws", ws, b"10.0.0.1")
    assert b"Upgrade" not in head  # stripped as hop-by-hop by the plain rewrite...
    head = with_upgrade(head, b"WebSocket")  # ...and put back for a WebSocket tunnel
    assert head.endswith(b"X-Forwarded-Proto: http\r\nConnection: upgrade\r\nUpgrade: WebSocket\r\n\r\n")
    assert head.count(b"\r\n\r\n") == 1
