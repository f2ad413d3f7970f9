"""Gateways as the swarm driver runs them on every node, without a swarm: `python -m
selfieless.gateway` processes with their control API on TCP, one per loopback address
(127.0.0.1, 127.0.0.2: the same ports, as two nodes would have), and the one thing of the swarm
the fleet reads, which nodes run a gateway (:class:`Places`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

NODES = ("127.0.0.1", "127.0.0.2")
TOKEN = "fleet-test-token"
ROUTES = {"/api/v1": "acts"}


class Places:
    """Which nodes run a gateway: what the swarm driver reads from the manager."""

    def __init__(self, places: dict[str, str]) -> None:
        self.places = places

    async def gateway_places(self) -> dict[str, str]:
        return dict(self.places)


async def backend() -> tuple[asyncio.AbstractServer, int]:
    """An HTTP/1.1 backend answering `ok` to every request, keep-alive."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class NodeGateway:
    """`python -m selfieless.gateway` listening on `host`, its control API on `host:control_port`,
    started with the stack's routes (as the swarm driver's gateway service is)."""

    def __init__(self, host: str, port: int, control_port: int, tmp, tls: dict | None = None) -> None:
        self.host, self.state = host, tmp / f"gateway-{host}.json"
        self.state.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "selfieless.gateway", "--host", host, "--port", str(port),
             "--control-listen", f"{host}:{control_port}", "--state-file", str(self.state),
             "--routes-json", json.dumps(ROUTES), "--no-replica-wait", "1", "--grace", "0",
             *(["--tls-json", json.dumps(tls)] if tls is not None else [])],
            env={**os.environ, "SELFIELESS_GATEWAY_TOKEN": TOKEN}, stdin=subprocess.DEVNULL)

    async def started(self) -> "NodeGateway":
        async def listening():
            assert self.proc.poll() is None, "the gateway process exited"
            return self.state.exists() and "port" in json.loads(self.state.read_text())
        await wait(listening, what=f"the gateway on {self.host} listening")
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


async def wait(check, timeout: float = 20.0, what: str = "") -> float:
    t0 = time.monotonic()
    while not await check():
        assert time.monotonic() - t0 < timeout, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0
