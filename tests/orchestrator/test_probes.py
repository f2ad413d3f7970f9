"""The health probes against real local servers (asyncio, in-process): what each outcome reads as.

HTTP: 200 is the only success; another status, a refused connection, a timeout and a broken
answer are failures with a short reason. TCP (dependencies): open and not closed at once.
"""

import asyncio

import pytest

from selfieless.orchestrator.health import HttpProber, tcp_probe

from support.ports import free_port

pytestmark = pytest.mark.anyio


async def serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def http_answer(status_line: bytes, seen: list):
    async def handler(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(status_line + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()
    return handler


async def test_http_probe_outcomes():
    prober = HttpProber()
    seen: list[bytes] = []
    ok_server, ok_port = await serve(http_answer(b"HTTP/1.1 200 OK", seen))
    bad_server, bad_port = await serve(http_answer(b"HTTP/1.1 503 Service Unavailable", []))
    moved_server, moved_port = await serve(http_answer(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere", []))

    async def silent(reader, writer):
        await asyncio.sleep(30)
        writer.close()

    async def garbage(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    silent_server, silent_port = await serve(silent)
    garbage_server, garbage_port = await serve(garbage)
    try:
        assert await prober("127.0.0.1", ok_port, "/api/v1/_health", 5) == (True, "200")
        assert seen[0].startswith(b"GET /api/v1/_health HTTP/1.1\r\n")
        assert await prober("127.0.0.1", bad_port, "/h", 5) == (False, "status 503")
        assert await prober("127.0.0.1", moved_port, "/h", 5) == (False, "status 302")  # never followed
        t0 = asyncio.get_running_loop().time()
        assert await prober("127.0.0.1", silent_port, "/h", 0.2) == (False, "no answer within 0.2 s")
        assert asyncio.get_running_loop().time() - t0 < 3  # the probe's timeout, not a default
        ok, detail = await prober("127.0.0.1", free_port(), "/h", 5)
        assert not ok and detail.startswith("connection failed (") and detail.endswith(")")
        ok, detail = await prober("127.0.0.1", garbage_port, "/h", 5)
        assert not ok and detail.startswith("RemoteProtocolError (") and detail != "RemoteProtocolError (None)"
        # A fresh connection each time: the server saw one request per connection.
        assert await prober("127.0.0.1", ok_port, "/again", 5) == (True, "200")
        assert [s.split(b" ")[1] for s in seen] == [b"/api/v1/_health", b"/again"]
    finally:
        await prober.aclose()
        for s in (ok_server, bad_server, moved_server, silent_server, garbage_server):
            s.close()


async def test_http_probe_detail_is_kept_short(monkeypatch):
    import httpx

    prober = HttpProber()

    async def fail(*a, **kw):
        raise httpx.ConnectError("x" * 200)

    monkeypatch.setattr(prober._client, "get", fail)
    ok, detail = await prober("127.0.0.1", 1, "/h", 1)
    assert not ok and detail == "connection failed (" + "x" * 77 + "...)"

    async def fail_short(*a, **kw):
        raise httpx.ConnectError("")

    monkeypatch.setattr(prober._client, "get", fail_short)
    assert await prober("127.0.0.1", 1, "/h", 1) == (False, "connection failed (ConnectError)")
    for n, shown in ((79, "y" * 79), (80, "y" * 77 + "...")):
        async def fail_n(*a, n=n, **kw):
            raise httpx.ConnectError("y" * n)

        monkeypatch.setattr(prober._client, "get", fail_n)
        assert await prober("127.0.0.1", 1, "/h", 1) == (False, f"connection failed ({shown})")
    await prober.aclose()


async def test_http_probe_opens_a_fresh_connection_each_time_and_ignores_proxies(monkeypatch):
    """A pooled connection could hide that a replica stopped accepting new ones; a proxy from the
    environment must never sit between the probe and a replica."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    connections = []

    async def keep_alive(reader, writer):  # answers any number of requests on one connection
        connections.append(writer)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, port = await serve(keep_alive)
    prober = HttpProber()
    try:
        for _ in range(3):
            assert await prober("127.0.0.1", port, "/h", 5) == (True, "200")
        assert len(connections) == 3
    finally:
        await prober.aclose()
        server.close()


async def test_tcp_probe_outcomes():
    async def close_at_once(reader, writer):
        writer.close()

    async def greet(reader, writer):
        writer.write(b"hello")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def wait_for_client(reader, writer):
        await asyncio.sleep(1)
        writer.close()

    servers = [await serve(h) for h in (close_at_once, greet, wait_for_client)]
    try:
        (_, closing), (_, greeting), (_, quiet) = servers
        assert await tcp_probe("127.0.0.1", closing, 1.0) == (False, "connection closed at once")
        assert await tcp_probe("127.0.0.1", greeting, 1.0) == (True, "open")
        assert await tcp_probe("127.0.0.1", quiet, 1.0) == (True, "open")
        port = free_port()
        assert await tcp_probe("127.0.0.1", port, 1.0) == \
            (False, f"connection failed (Connect call failed ('127.0.0.1', {port}))")
    finally:
        for s, _ in servers:
            s.close()


async def test_tcp_probe_reset_and_no_connection():
    import socket
    import struct
    import threading
    import time

    # A server that resets every connection it accepts.
    resetter = socket.create_server(("127.0.0.1", 0))
    port = resetter.getsockname()[1]

    def reset_all():
        while True:
            try:
                conn, _ = resetter.accept()
            except OSError:
                return
            time.sleep(0.05)  # the client is connected and reading by now
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    threading.Thread(target=reset_all, daemon=True).start()
    # A listener whose backlog is full and never accepts: a new connection never completes.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(full.getsockname())
        fillers.append(s)
    await asyncio.sleep(0.2)
    try:
        assert await tcp_probe("127.0.0.1", port, 1.0) == (False, "connection reset (Connection reset by peer)")
        t0 = asyncio.get_running_loop().time()
        assert await tcp_probe("127.0.0.1", full.getsockname()[1], 0.3) == (False, "no connection within 0.3 s")
        assert asyncio.get_running_loop().time() - t0 < 3
    finally:
        resetter.close()
        full.close()
        for s in fillers:
            s.close()
