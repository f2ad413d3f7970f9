"""Starting real server processes on 127.0.0.1 and waiting for them, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .ports import free_port


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


class ModuleProcess:
    """`python -m MODULE ARGS` in its own process group, its output in a log file. ``prefix`` is a
    command that execs the rest (``nsenter --net=...``: run it in a network namespace)."""

    def __init__(self, name: str, module: str, args: list[str], log_dir: Path, prefix: tuple[str, ...] = ()):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", module, *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def answers_200(self, url: str) -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ok(self, url: str, timeout: float = 30) -> None:
        """Until `url` answers 200; fails at once, with the log, if the process exits."""
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            return self.answers_200(url)
        wait_until(ready, timeout, what=f"{self.name} answering 200 at {url}")

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


class ServiceProcess(ModuleProcess):
    """One replica of a SelfieLessActs service run as `python -m selfieless.apps.<service>`."""

    def __init__(self, service: str, database_url: str, log_dir: Path, port: int | None = None,
                 users_url: str | None = None, extra_args: list[str] | None = None):
        self.service = service
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--port", str(self.port), "--database-url", database_url]
        if users_url:
            args += ["--users-url", users_url]
        super().__init__(f"{service}-{self.port}", f"selfieless.apps.{service}", args + (extra_args or []), log_dir)

    def healthy(self) -> bool:
        return self.answers_200(self.url + "/api/v1/_health")

    def wait_healthy(self, timeout: float = 30) -> "ServiceProcess":
        self.wait_ok(self.url + "/api/v1/_health", timeout)
        return self


def working_in(home: Path) -> list[int]:
    """Every process whose working directory is `home`. A `selfieless up` started there passes it
    on to its gateway, its preloaders and every replica, so this finds what a run left behind;
    their environments cannot tell, as setproctitle writes the title over what
    /proc/PID/environ shows."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "cwd") == str(home):
                    out.append(int(d.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
    return out


def listening_on(ranges: list[tuple[int, int]]) -> list[int]:
    """Ports of the inclusive `ranges` that something listens on (IPv4 or IPv6), from /proc/net."""
    found = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A":  # TCP_LISTEN
                port = int(parts[1].rsplit(":", 1)[1], 16)
                if any(lo <= port <= hi for lo, hi in ranges):
                    found.add(port)
    return sorted(found)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
