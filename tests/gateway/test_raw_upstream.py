"""Unusual replica responses, from a raw socket backend: close-delimited bodies, 1xx heads,
garbage, a replica that closes after sending half a head."""

from __future__ import annotations

import socket
import time

from gw_support import raw_exchange, request


def test_close_delimited_response_is_rechunked(make_gateway, raw_backend):
    b = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\n" + b"z" * 70000)
    gw = make_gateway(replicas={"acts": [b]})
    st, h, body = request(gw.port)
    assert st == 200 and body == b"z" * 70000 and h["transfer-encoding"] == "chunked"
    assert h["x-a"] == "1"


def test_informational_response_is_dropped(make_gateway, raw_backend):
    b = raw_backend(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    gw = make_gateway(replicas={"acts": [b]})
    st, h, body = request(gw.port)
    assert st == 201 and body == b"ok" and "link" not in h


def test_garbage_or_truncated_head_is_502(make_gateway, raw_backend):
    for reply in (b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Len"):
        ejected = []
        b = raw_backend(reply)
        gw = make_gateway(replicas={"acts": [b]}, on_eject=lambda *a: ejected.append(a))
        st, h, body = request(gw.port)
        assert st == 502 and b'"error"' in body
        assert ejected == []  # it answered something: a bad replica, not a dead one


def test_connect_timeout_tries_another_replica_then_504(make_gateway, backends, loop_thread):
    # A listener that never accepts, with its accept queue filled: further SYNs are dropped,
    # so connecting to it hangs (like a replica host that stopped answering).
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(hole.getsockname())
        fillers.append(s)
    try:
        port = hole.getsockname()[1]
        gw = make_gateway(replicas={"acts": [backends[0]]}, connect_timeout=0.5)
        loop_thread.call(gw.pool("acts").add, "hole", "127.0.0.1", port)
        for _ in range(2):  # round-robin reaches the hole once: retried on A, nothing ejected
            st, _, body = request(gw.port)
            assert st == 200
        views = {v.id: v for v in loop_thread.call(lambda: gw.pool("acts").replicas)}
        assert views["hole"].state == "ready" and views["hole"].in_flight == 0
        loop_thread.call(gw.pool("acts").remove, backends[0].id)
        st, _, body = request(gw.port)
        assert st == 504 and b'"error"' in body
    finally:
        for s in fillers:
            s.close()
        hole.close()


def test_replica_dying_between_head_and_body(make_gateway, raw_backend, backends, loop_thread):
    """uvicorn writes head and body separately; a crash in between must not reach the client as
    a truncated response: the head is held until body bytes come, so a GET goes elsewhere."""
    dying = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    ejected = []
    gw = make_gateway(replicas={"acts": [dying, backends[0]]}, on_eject=lambda *a: ejected.append(a))
    st, _, body = request(gw.port)
    assert st == 200 and b'"replica": "A"' in body
    assert [e[1] for e in ejected] == [dying.id]
    loop_thread.call(gw.pool("acts").add, dying.id, "127.0.0.1", dying.port)
    loop_thread.call(gw.pool("acts").remove, backends[0].id)
    st, h, body = request(gw.port, "POST", body=b"once")  # never replayed: a clean 502
    assert st == 502 and h["content-type"] == "application/json" and b'"error"' in body


def test_replica_stalling_mid_body_is_cut_off(make_gateway, raw_backend):
    """A replica that stops sending halfway through its body must not hold the client forever:
    after response_timeout of silence the client connection is closed (the body is short)."""
    stall = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40, after="hold")
    gw = make_gateway(replicas={"acts": [stall]}, response_timeout=0.5)
    started = time.monotonic()
    got = raw_exchange(gw.port, b"GET /api/v1/x HTTP/1.1\r\nHost: t\r\n\r\n")
    waited = time.monotonic() - started
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"x" * 40)
    assert 0.4 < waited < 5, waited
    assert gw.stats("acts").gateway_errors == 1


def test_replica_stalling_after_head_is_504(make_gateway, raw_backend):
    """Head sent, body never: nothing reached the client yet (the head is held back until body
    bytes come), so it gets a clean 504 instead of a response that never ends."""
    stall = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", after="hold")
    gw = make_gateway(replicas={"acts": [stall]}, response_timeout=0.5)
    started = time.monotonic()
    st, _, body = request(gw.port)
    assert st == 504 and b"timeout" in body
    assert time.monotonic() - started < 5
