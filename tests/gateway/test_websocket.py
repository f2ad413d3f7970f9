"""WebSocket through the gateway: the upgrade reaches a replica, its 101 comes back, and then the
two sockets are one tunnel (both directions, large messages, closing from either side)."""

from __future__ import annotations

import socket
import time

import pytest
from gw_support import request
from support.processes import wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


def replicas(loop_thread, gw):
    return {v.id: v for v in loop_thread.call(lambda: gw.pool("acts").replicas)}


def test_websocket_echo_through_the_gateway(make_gateway, backends, loop_thread):
    gw = make_gateway(replicas={"acts": backends[:2]})
    greeted = []
    for _ in range(2):  # round-robin applies to upgrades like to any request
        with connect(f"ws://127.0.0.1:{gw.port}/api/v1/ws", open_timeout=10, max_size=None) as ws:
            greeted.append(ws.recv(timeout=10))
            ws.send("ping")
            assert ws.recv(timeout=10) == "ping"
            big = bytes(range(256)) * 8192  # 2 MiB: flow control on both sockets
            ws.send(big)
            assert ws.recv(timeout=30) == big
            # While the tunnel is open the replica has it in flight (drain waits for it).
            assert sum(v.in_flight for v in replicas(loop_thread, gw).values()) == 1
    assert sorted(greeted) == ["hello from A", "hello from B"]
    assert wait_until(lambda: all(v.in_flight == 0 for v in replicas(loop_thread, gw).values()), 10)
    assert wait_until(lambda: not gw.clients, 10)
    st = gw.stats("acts")
    assert st.status_classes[1] == 2 and st.requests == 2
    # Plain HTTP on the same gateway is untouched.
    assert request(gw.port)[0] == 200


def test_replica_closing_the_websocket_closes_the_client(make_gateway, backends, loop_thread):
    gw = make_gateway(replicas={"acts": backends[:1]})
    with connect(f"ws://127.0.0.1:{gw.port}/api/v1/ws", open_timeout=10) as ws:
        ws.recv(timeout=10)
        ws.send("close")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1000
    assert wait_until(lambda: replicas(loop_thread, gw)[backends[0].id].in_flight == 0, 10)


def test_idle_tunnel_is_closed(make_gateway, backends, loop_thread):
    gw = make_gateway(replicas={"acts": backends[:1]}, tunnel_idle_timeout=0.5)
    with connect(f"ws://127.0.0.1:{gw.port}/api/v1/ws", open_timeout=10) as ws:
        ws.recv(timeout=10)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert time.monotonic() - started < 5
    assert wait_until(lambda: replicas(loop_thread, gw)[backends[0].id].in_flight == 0, 10)


def test_upgrade_refused_by_the_replica_is_a_plain_answer(make_gateway, raw_backend):
    """A replica that answers the upgrade with a normal response: relayed, then the connection
    closes (what the client may have sent after its upgrade request is not HTTP)."""
    b = raw_backend(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
                    after="record")
    gw = make_gateway(replicas={"acts": [b]})
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{gw.port}/api/v1/ws", open_timeout=10)
    assert info.value.response.status_code == 403
    # The close the docstring promises: a keep-alive client that sent frames right after its
    # upgrade request gets the answer, then end of stream (the frames are never parsed as HTTP).
    # (A second replica: this one serves one connection at a time and the gateway may keep it.)
    b = raw_backend(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", after="record")
    gw = make_gateway(replicas={"acts": [b]})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n"
                  b"Upgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  b"GET /api/v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):  # a socket.timeout here means the gateway kept it open
            got += chunk
    assert got.startswith(b"HTTP/1.1 403 Forbidden\r\n") and got.endswith(b"\r\n\r\nno")
    assert got.count(b"HTTP/1.1") == 1  # the bytes after the upgrade request were not answered
    assert len(b.seen) == 1 and b"smuggled" not in b.seen[0]


def test_websocket_handshake_headers_reach_the_replica(make_gateway, raw_backend):
    """Upgrade and Connection: upgrade are forwarded for WebSocket (not stripped), with the
    Sec-WebSocket-* headers unchanged."""
    b = raw_backend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: abc\r\n\r\nSERVER-BYTES",
                    after="record")
    gw = make_gateway(replicas={"acts": [b]})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n"
                  b"Upgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  b"EARLY")
        got = b""
        while b"SERVER-BYTES" not in got:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
    head = got.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "Connection: upgrade" in head and "Upgrade: websocket" in head
    assert "Sec-WebSocket-Accept: abc" in head
    seen = b.seen[0]
    assert b"Connection: upgrade\r\nUpgrade: websocket\r\n" in seen
    assert b"Sec-WebSocket-Key: k\r\n" in seen and b"keep-alive" not in seen.lower()
    assert wait_until(lambda: b"EARLY" in b.seen[0], 10)  # sent before the 101, relayed after it


def test_tunnel_holds_back_a_replica_faster_than_its_client(make_gateway, raw_backend, loop_thread):
    """Flow control in the tunnel: a replica pushing 16 MiB at a client that is not reading does
    not pile up in the gateway; everything arrives once the client reads."""
    payload = bytes(range(256)) * (16 * 4096)  # 16 MiB
    b = raw_backend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\n" + payload, after="record")
    gw = make_gateway(replicas={"acts": [b]})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\n\r\n")
        time.sleep(1.0)  # not reading: kernel buffers fill, then the gateway must pause the replica

        def buffered():
            return max(c.transport.get_write_buffer_size() for c in gw.clients)

        assert loop_thread.call(buffered) < 1024 * 1024
        got = b""
        while len(got) < len(payload) + 100:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
            if got.endswith(payload[-4096:]):
                break
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and body == payload
