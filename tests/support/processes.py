"""Starting real service processes on 127.0.0.1 and waiting for them, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

_used_ports: set[int] = set()


def free_port() -> int:
    """A port the kernel says is free, never handed out twice in one test run."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


class ServiceProcess:
    """One replica of a SelfieLessActs service run as `python -m selfieless.apps.<service>`."""

    def __init__(self, service: str, database_url: str, log_dir: Path, port: int | None = None,
                 users_url: str | None = None, extra_args: list[str] | None = None):
        self.service = service
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", f"selfieless.apps.{service}", "--port", str(self.port),
                "--database-url", database_url]
        if users_url:
            args += ["--users-url", users_url]
        args += extra_args or []
        self.log_path = log_dir / f"{service}-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/api/v1/_health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = 30) -> "ServiceProcess":
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.service} exited with {self.proc.returncode}:\n{self.log()}")
            return self.healthy()
        wait_until(ready, timeout, what=f"{self.service} on port {self.port} healthy")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
