"""The whole SelfieLessActs stack as real processes on 127.0.0.1, for the browser tests.

users + acts (``support.processes.ServiceProcess``), the web front end and the gateway in front of
them, routed the way the bundled stack routes them (plus a PNG generator and sha1 for the tests):
``/ui`` -> web, ``/api/v1/users`` -> users, ``/api/v1`` -> acts (which checks usernames through
the gateway, as in production).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from pathlib import Path

from support.ports import free_port
from support.processes import ModuleProcess, ServiceProcess


class WebStack:
    """Start with ``WebStack(tmp_dir).start()``; ``url`` is the gateway, the page's origin."""

    def __init__(self, tmp_dir: Path):
        self.tmp = tmp_dir
        self.gateway_port = free_port()
        self.url = f"http://127.0.0.1:{self.gateway_port}"
        self.users: ServiceProcess | None = None
        self.acts: ServiceProcess | None = None
        self.web: ModuleProcess | None = None
        self.gateway: ModuleProcess | None = None

    def start(self) -> "WebStack":
        try:
            self.users = ServiceProcess("users", f"sqlite:///{self.tmp / 'users.db'}", self.tmp)
            self.acts = ServiceProcess("acts", f"sqlite:///{self.tmp / 'acts.db'}", self.tmp, users_url=self.url)
            web_port = free_port()
            self.web = ModuleProcess("web", "selfieless.apps.web", ["--port", str(web_port)], self.tmp)
            self.gateway = ModuleProcess("gateway", "selfieless.gateway", [
                "--port", str(self.gateway_port),
                "--route", f"/ui=127.0.0.1:{web_port}",
                "--route", f"/api/v1/users=127.0.0.1:{self.users.port}",
                "--route", f"/api/v1=127.0.0.1:{self.acts.port}",
            ], self.tmp)
            self.users.wait_healthy()
            self.acts.wait_healthy()
            self.web.wait_ok(f"http://127.0.0.1:{web_port}/ui/_health")
            self.gateway.wait_ok(f"{self.url}/ui/_health")
            self.gateway.wait_ok(f"{self.url}/api/v1/_health")
        except BaseException:
            self.stop()
            raise
        return self

    def logs(self) -> str:
        parts = [p for p in (self.users, self.acts, self.web, self.gateway) if p is not None]
        return "\n".join(f"--- {type(p).__name__} {getattr(p, 'name', getattr(p, 'service', ''))}\n{p.log()}"
                         for p in parts)

    def stop(self) -> None:
        for p in (self.gateway, self.web, self.acts, self.users):
            if p is not None:
                p.stop()


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def make_png(width: int = 96, height: int = 72) -> bytes:
    """A real RGB PNG (a green-blue gradient with a white diagonal), built with zlib + struct."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            on_diagonal = abs(x * height - y * width) < width
            rows += bytes((255, 255, 255)) if on_diagonal else bytes((40, 90 + 120 * y // height, 60 + 180 * x // width))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")


PNG = make_png()
PNG_B64 = base64.b64encode(PNG).decode()
