"""Round-robin order over three replicas, retry exactly once, the replay body limit and dropped
request trailers: through a real gateway to real sockets, checking what each replica received.

With two replicas a backwards rotation gives the same order as a forwards one, so the order is
checked over three. A "retry" is counted where it shows: which replicas saw the request.
"""

from __future__ import annotations

import hashlib
import socket
import threading

from gw_support import RawBackend, ThreadBackend, free_port, jrequest

from selfieless.gateway import pool as pool_states


def served_by(port, n, path="/api/v1/who"):
    return "".join(jrequest(port, path=path)[2]["replica"] for _ in range(n))


def test_round_robin_order_over_three_replicas(make_gateway, backends, loop_thread):
    gw = make_gateway(replicas={"acts": backends})  # added A, B, C in that order
    assert served_by(gw.port, 9) == "ABCABCABC"
    pool = gw.pool("acts")
    loop_thread.call(pool.remove, "B")
    assert served_by(gw.port, 4) == "ACAC"
    # B joins the end of the rotation, [A, C, B]; the cursor was past C, so B is next.
    loop_thread.call(pool.add, "B", "127.0.0.1", backends[1].port)
    assert served_by(gw.port, 6) == "BACBAC"
    # Keep-alive does not pin a client to a replica: one connection, every request rotates.
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    got = "".join(jrequest(gw.port, path="/api/v1/who", conn=conn)[2]["replica"] for _ in range(6))
    conn.close()
    assert got == "BACBAC"


def closing_replica() -> RawBackend:
    """Reads a request head, then closes without answering: the request was sent and lost."""
    return RawBackend(b"", after="close")


def heads(replica: RawBackend) -> list[bytes]:
    """The request heads a raw replica received, one per connection that sent anything."""
    return [seen.split(b"\r\n\r\n")[0] for seen in replica.seen if seen]


def fresh(*names):
    return [ThreadBackend(n) for n in names]


def log_of(backend):
    return jrequest(backend.port, path="/_log")[2]


def test_refused_connection_is_retried_once_elsewhere(make_gateway, loop_thread):
    """Nothing listens on the first replica: it is ejected at once and the request (any method:
    nothing of it was sent) goes to the next replica, once."""
    (live,) = fresh("L")
    ejected = []
    try:
        dead_port = free_port()  # nothing listens here
        gw = make_gateway(on_eject=lambda *a: ejected.append(a))
        loop_thread.call(gw.pool("acts").add, "dead", "127.0.0.1", dead_port)
        loop_thread.call(gw.pool("acts").add, live.id, "127.0.0.1", live.port)
        st, _, body = jrequest(gw.port, "POST", path="/api/v1/things", body=b'{"a": 1}')
        assert st == 200 and body["replica"] == "L" and body["body_len"] == 8
        assert log_of(live)["complete"] == [["POST", "/api/v1/things"]]  # exactly once
        assert [a[:2] for a in ejected] == [("acts", "dead")] and "refused" in ejected[0][2]
        assert gw.stats("acts").retries == 1
        states = {v.id: v.state for v in loop_thread.call(lambda: gw.pool("acts").replicas)}
        assert states == {"dead": pool_states.EJECTED, "L": pool_states.READY}
    finally:
        live.stop()


def test_lost_request_is_retried_exactly_once(make_gateway, loop_thread):
    """A GET sent to a replica that closes without answering is retried on one other replica, and
    only one: when that one fails too, the client gets 502 and the third replica never sees it."""
    first, second = closing_replica(), closing_replica()
    (third,) = fresh("T")
    try:
        gw = make_gateway(replicas={"acts": [first, second, third]})
        st, _, body = jrequest(gw.port, path="/api/v1/lost")
        assert st == 502 and "error" in body
        assert [h.split(b"\r\n")[0] for h in heads(first)] == [b"GET /api/v1/lost HTTP/1.1"]
        assert [h.split(b"\r\n")[0] for h in heads(second)] == [b"GET /api/v1/lost HTTP/1.1"]
        assert log_of(third)["seen"] == []
        assert gw.stats("acts").retries == 1

        # One failure, then a replica that answers: the retry succeeds, the client sees 200.
        gw2 = make_gateway(replicas={"acts": [lost_once := closing_replica(), third]})
        try:
            st, _, body = jrequest(gw2.port, path="/api/v1/again")
            assert st == 200 and body["replica"] == "T"
            assert len(heads(lost_once)) == 1
            assert log_of(third)["complete"] == [["GET", "/api/v1/again"]]
        finally:
            lost_once.close()
    finally:
        first.close()
        second.close()
        third.stop()


def test_replay_body_limit(make_gateway):
    """An idempotent request whose body fits in retry_body_limit is replayed whole on the next
    replica; a larger one cannot be replayed and gets 502, and the next replica never sees it."""
    small = bytes(range(256)) * 4          # 1024 bytes: at the limit
    large = bytes(range(256)) * 4 + b"x"   # one byte over
    for body, replayed in ((small, True), (large, False)):
        lost = closing_replica()
        (live,) = fresh("R")
        try:
            gw = make_gateway(replicas={"acts": [lost, live]}, retry_body_limit=1024)
            st, _, got = jrequest(gw.port, "PUT", path="/api/v1/doc", body=body)
            assert len(heads(lost)) == 1
            if replayed:
                assert st == 200 and got["replica"] == "R"
                assert got["body_len"] == len(body) and got["body_sha"] == hashlib.sha256(body).hexdigest()
            else:
                assert st == 502 and got["error"]
                assert log_of(live)["seen"] == []
        finally:
            lost.close()
            live.stop()


def test_request_trailers_are_dropped(make_gateway):
    """The README: request trailers are dropped (RFC 9110 allows a proxy to). The replica gets the
    chunked body whole, ended by a last chunk with no trailer section."""
    got: list[bytes] = []
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(10)
        data = b""
        try:
            # The body ends with the last chunk and the empty line after the (dropped) trailers.
            while not (b"\r\n0\r\n" in data and data.endswith(b"\r\n\r\n")):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            got.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    class Replica:
        id, port = "trailers", srv.getsockname()[1]

    try:
        gw = make_gateway(replicas={"acts": [Replica]})
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(b"POST /api/v1/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                      b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: secret-trailer\r\n\r\n")
            answer = b""
            while b"ok" not in answer:
                chunk = s.recv(65536)
                assert chunk, answer
                answer += chunk
        t.join(10)
        assert answer.startswith(b"HTTP/1.1 200")
        head, _, body = got[0].partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert body.endswith(b"0\r\n\r\n") and b"secret-trailer" not in got[0]
        # The data itself arrives whole (the gateway may re-chunk it).
        data, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            data, rest = data + rest[:size], rest[size + 2:]
        assert data == b"hello world"
    finally:
        srv.close()
