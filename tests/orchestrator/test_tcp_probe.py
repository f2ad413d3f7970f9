"""The TCP check of dependencies against real local servers (asyncio, in-process): open and not
closed at once is a pass; closed at once, reset, refused or no connection in time are failures,
each with its reason. (The HTTP probe has its own tests, test_probe.py.)"""

import asyncio

import pytest

from selfieless.orchestrator.health import tcp_probe

from support.ports import free_port

pytestmark = pytest.mark.anyio


async def serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


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
