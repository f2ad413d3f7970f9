"""A real `selfieless up` in a subprocess, driven through its admin API: the part the Docker
deployment tests (tests/docker) and the swarm tests (tests/swarm) share. Each suite subclasses it
with its driver's command line and timeouts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.ports import free_port
from support.processes import wait_until


class UpProcess:
    """`selfieless up [STACK] --driver DRIVER` on free gateway and admin ports, its output in a log
    file under the state dir."""

    driver = "docker"
    extra_args: tuple[str, ...] = ()  # more `up` options (a subclass's or an instance's)
    converge_timeout = 120.0   # default for wait_converged()
    stop_timeout = 60.0        # how long stop_quietly() waits after SIGINT
    down_timeout = 120.0

    def __init__(self, stack_path: Path | None, state_dir: Path, gateway_port: int | None = None):
        self.stack_path = stack_path
        self.state_dir = state_dir
        self.gateway_port = gateway_port or free_port()
        self.admin_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = state_dir / f"up-{time.time():.0f}.log"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def environment(self) -> dict[str, str]:
        """The subprocess's environment (a subclass adds e.g. DOCKER_HOST)."""
        return {**os.environ, "COLUMNS": "200"}

    def start(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "selfieless", "up"]
        if self.stack_path is not None:
            cmd.append(str(self.stack_path))
        cmd += ["--driver", self.driver, "--port", str(self.gateway_port), "--admin-port", str(self.admin_port),
                "--state-dir", str(self.state_dir), *self.extra_args]
        self.t_start = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=self.environment())
        return self

    def status(self) -> dict | None:
        try:
            r = httpx.get(f"{self.admin}/api/status", timeout=2)
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def events(self) -> list[dict]:
        data = httpx.get(f"{self.admin}/api/events", params={"after": 0}, timeout=2).json()
        return data["events"] if isinstance(data, dict) else data

    def wait_converged(self, timeout: float | None = None) -> float:
        """Seconds from start() until the status says converged (fails at once if `up` exits)."""
        def ok():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"selfieless up exited ({self.proc.returncode}):\n{self.log()}")
            st = self.status()
            return st is not None and st["converged"]

        wait_until(ok, timeout or self.converge_timeout, 0.1, what=f"the stack to converge:\n{self.log()}")
        return time.monotonic() - self.t_start

    def replicas(self, service: str) -> list[dict]:
        st = self.status()
        return st["services"][service]["replicas"] if st else []

    def down(self, *extra: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """`selfieless down [extra...]`, then wait for the `up` process to end."""
        timeout = timeout or self.down_timeout
        r = subprocess.run([sys.executable, "-m", "selfieless", "down", "--state-dir", str(self.state_dir), *extra],
                           capture_output=True, text=True, timeout=timeout)
        if self.proc is not None:
            self.proc.wait(timeout=timeout)
        return r

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""
