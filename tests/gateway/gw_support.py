"""Helpers for the gateway tests: an event loop thread for gateways, real uvicorn backends,
small HTTP clients.

Everything listens on 127.0.0.1 with free ports. Backends run either in threads (fast to start,
shared by the session) or as subprocesses (for tests that kill them).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).parent))
from gw_backend import make_app  # noqa: E402
from support.ports import free_port  # noqa: E402,F401  (also used by the tests)

from selfieless.gateway import new_event_loop  # noqa: E402

HERE = Path(__file__).parent


class RawBackend:
    """A replica made of a bare socket: reads a request head, sends ``reply`` as it is, then
    ``after`` decides: ``"close"``, ``"hold"`` (stay silent, connection open, until the test
    ends) or ``"record"`` (keep reading). ``seen[i]`` is everything connection i sent."""

    def __init__(self, reply: bytes, after: str = "close") -> None:
        self.reply = reply
        self.after = after
        self.seen: list[bytes] = []
        self.held: list[socket.socket] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.id = f"raw{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            i = len(self.seen)
            self.seen.append(b"")
            while b"\r\n\r\n" not in self.seen[i]:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                self.seen[i] += chunk
            conn.sendall(self.reply)
            if self.after == "hold":
                self.held.append(conn)
                continue
            if self.after == "record":
                while chunk := conn.recv(65536):
                    self.seen[i] += chunk
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


class ThreadBackend:
    """A uvicorn server running the test app in a thread."""

    def __init__(self, replica_id: str, **kw) -> None:
        self.id = replica_id
        self.port = free_port()
        config = uvicorn.Config(make_app(replica_id), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off", access_log=False, **kw)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_port(self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class ProcBackend:
    """The test app as a subprocess, so a test can SIGKILL it."""

    def __init__(self, replica_id: str) -> None:
        self.id = replica_id
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "gw_backend.py"), str(self.port), replica_id],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class LoopThread:
    """A uvloop event loop in a thread; gateways live there, tests drive them from outside."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        async def wrapper():
            return fn(*args)
        return self.run(wrapper())

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def request(port, method="GET", path="/api/v1/x", body=None, headers=None, conn=None, timeout=20):
    """One request with http.client; returns (status, headers dict lowercased, body bytes)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        if own:
            conn.close()


def jrequest(port, *a, **kw):
    status, headers, data = request(port, *a, **kw)
    return status, headers, (json.loads(data) if data else None)


def raw_exchange(port, payload: bytes, timeout=10.0, read_until_close=True) -> bytes:
    """Send raw bytes, return everything the gateway sends back until it closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may answer and stop reading early (413, 431); read its answer
        out = b""
        s.settimeout(timeout)
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
        return out


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)

