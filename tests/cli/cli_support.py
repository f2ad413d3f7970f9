"""Helpers for the CLI tests: a test stack on free ports, and `selfieless up` as a real subprocess.

(A uniquely named module: test directories are not packages.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from selfieless.orchestrator.stack import BUNDLED_STACK
from support.ports import free_port


def write_test_stack(path: Path, acts_ports: range, users_ports: range, *, name: str | None = None,
                     window: float = 120, probe_interval: float = 0.5) -> Path:
    """The bundled stack's users and acts, on free port ranges, with faster probes; written as YAML."""
    data = yaml.safe_load(BUNDLED_STACK.read_text())
    data["name"] = name or f"clitest-{acts_ports[0]}"
    data["driver"] = "process"
    data["gateway"]["host"] = "127.0.0.1"
    del data["services"]["web"]  # a static page: nothing the CLI tests look at
    for svc, ports in (("acts", acts_ports), ("users", users_ports)):
        s = data["services"][svc]
        s["host_ports"] = f"{ports[0]}-{ports[-1]}"
        s["health"]["interval"] = probe_interval
        s["drain_timeout"] = "3s"
        s["replicas"]["max"] = min(s["replicas"]["max"], len(ports))
    data["services"]["acts"]["autoscale"]["window_seconds"] = window
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "selfieless.cli.main", *args]


def run_cli(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a `selfieless` command as a subprocess (wide terminal so tables are not truncated)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SELFIELESS_ADMIN")}
    e.update({"COLUMNS": "200", "NO_COLOR": "1", **(env or {})})
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, env=e)


class UpProcess:
    """`selfieless up STACK --port P --admin-port A --state-dir D` running in the background."""

    def __init__(self, tmp: Path, stack: Path, *extra: str, admin_port: int | None = None):
        self.tmp = tmp
        self.state_dir = tmp / "state"
        self.port = free_port()
        self.admin_port = admin_port or free_port()
        self.gateway = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.out_path = tmp / "up.out"
        self._out = open(self.out_path, "wb")
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("SELFIELESS_ADMIN_URL", None)
        env.pop("SELFIELESS_ADMIN_TOKEN", None)
        self.proc = subprocess.Popen(
            cli("up", str(stack), "--port", str(self.port), "--admin-port", str(self.admin_port),
                "--state-dir", str(self.state_dir), *extra),
            stdout=self._out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def status(self, headers: dict | None = None) -> dict:
        return httpx.get(self.admin + "/api/status", headers=headers, timeout=5, trust_env=False).json()

    def wait_ready(self, timeout: float = 60, headers: dict | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited with {self.proc.returncode}:\n{self.output()}")
            try:
                st = self.status(headers)
                if st["converged"] and "stack" in self.output() and " is up" in self.output():
                    return st
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"stack not ready after {timeout} s:\n{self.output()}")
            time.sleep(0.1)

    def admin_file(self) -> dict:
        return json.loads((self.state_dir / "admin.json").read_text())

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()
        self.kill_leftovers()
        return self.proc.returncode

    def kill_leftovers(self) -> None:
        """Replicas recorded in the state dir that are still alive (should be none): kill them."""
        for f in (self.state_dir).glob("*/replicas/*.json"):
            try:
                pid = json.loads(f.read_text())["pid"]
                os.killpg(pid, signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass


def replica_pids(state: dict, service: str) -> dict[int, int]:
    return {r["port"]: r["pid"] for r in state["services"][service]["replicas"]}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except OSError:
        return False
