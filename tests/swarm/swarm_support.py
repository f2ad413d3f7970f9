"""Helpers for the swarm tests and benchmark: the lab (scripts/swarm-lab), a real
`selfieless up --driver swarm` in a subprocess, and a GET load that counts failures.

(No __init__.py here, as in tests/docker: the module names must not shadow packages.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from support.ports import free_port
from support.processes import wait_until

REPO = Path(__file__).resolve().parents[2]
LAB_SCRIPT = REPO / "scripts" / "swarm-lab"
LAB_ENV = Path("/run/sllab/lab.env")
IMAGES = ("users:latest", "acts:latest", "selfieless/mariadb:latest")
HOW_TO = ("run them as root on a machine prepared by `scripts/docker-prepare` (dockerd and the images); "
          "the tests build the lab themselves with `scripts/swarm-lab up` (about 2 minutes)")


def lab_unavailable() -> str | None:
    """Why the lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return f"the swarm lab needs root (network namespaces, one dockerd per node): {HOW_TO}"
    for tool in ("dockerd", "docker", "ip", "nsenter", "iptables"):
        if shutil.which(tool) is None:
            return f"the swarm lab needs `{tool}`: {HOW_TO}"
    from support.docker_engine import _not_ready

    why = _not_ready(IMAGES)
    if why is not None:
        return f"the swarm lab copies the images from this host's engine: {why}; {HOW_TO}"
    return None


def read_env() -> dict[str, str]:
    out = {}
    for line in LAB_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = value.strip('"')
    return out


class Lab:
    """The lab: brought up here unless one was running already (then left as it was found)."""

    def __init__(self) -> None:
        self.started_here = False
        self.env: dict[str, str] = {}

    def run(self, *args: str, timeout: float = 300) -> str:
        r = subprocess.run([str(LAB_SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/swarm-lab {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r.stdout

    def up(self) -> None:
        was_up = LAB_ENV.exists() and subprocess.run([str(LAB_SCRIPT), "status"], capture_output=True).returncode == 0
        self.run("up")
        self.started_here = not was_up
        self.env = read_env()

    def down(self) -> None:
        if self.started_here:
            self.run("down")

    @property
    def manager(self) -> str:
        return self.env["SWARM_LAB_MANAGER"]

    def node_socket(self, n: int) -> str:
        return self.env[f"SWARM_LAB_NODE{n}_DOCKER_HOST"]

    def address(self, n: int) -> str:
        return self.env["SWARM_LAB_ADDRESSES"].split()[n - 1]

    def cut(self, n: int) -> None:
        self.run("cut", str(n))

    def heal(self, n: int) -> None:
        self.run("heal", str(n))

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.manager, timeout=30)


def make_stack_file(path: Path, name: str) -> Path:
    """The bundled swarm stack renamed (its own services, network and volume), with placement
    that lets the acts tasks move: the database on the manager, users on the users node, acts
    spread over every node."""
    import yaml

    from selfieless.orchestrator.stack import BUNDLED_SWARM_STACK

    data = yaml.safe_load(BUNDLED_SWARM_STACK.read_text())
    data["name"] = name
    data["network"] = name
    data["variables"]["db_url"] = data["variables"]["db_url"].replace("selfieless-db", f"{name}-db")
    data["variables"]["users_url"] = f"http://{name}-users:80"
    db = data["dependencies"]["db"]
    db["volumes"] = {f"{name}-db-data": "/var/lib/mysql"}
    db["placement"] = {"constraints": ["node.role==manager"]}
    acts = data["services"]["acts"]
    acts["placement"] = {"constraints": ["node.labels.selfieless.lab==true"],
                         "preferences": [{"spread": "node.labels.selfieless.lab.node"}]}
    acts["autoscale"] = {"policy": "none"}
    for svc in data["services"].values():
        svc["environment"]["SELFIELESS_PUBLIC_URL"] = svc["environment"]["SELFIELESS_PUBLIC_URL"].replace(
            "selfieless-", f"{name}-")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class SwarmUp:
    """`selfieless up STACK --driver swarm` as a subprocess, talking to the lab's manager."""

    def __init__(self, stack_path: Path, state_dir: Path, manager: str):
        self.stack_path = stack_path
        self.state_dir = state_dir
        self.manager = manager
        self.gateway_port = free_port()
        self.admin_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = state_dir / f"up-{time.time():.0f}.log"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start(self) -> "SwarmUp":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "selfieless", "up", str(self.stack_path), "--driver", "swarm",
               "--port", str(self.gateway_port), "--admin-port", str(self.admin_port),
               "--state-dir", str(self.state_dir)]
        self.t_start = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "DOCKER_HOST": self.manager, "COLUMNS": "200"})
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

    def wait_converged(self, timeout: float = 240) -> float:
        def ok():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"selfieless up exited ({self.proc.returncode}):\n{self.log()}")
            st = self.status()
            return st is not None and st["converged"]

        wait_until(ok, timeout, 0.1, what=f"the stack to converge:\n{self.log()}")
        return time.monotonic() - self.t_start

    def ready(self, service: str) -> list[dict]:
        st = self.status()
        return [r for r in st["services"][service]["replicas"] if r["state"] == "ready"] if st else []

    def in_rotation(self, service: str) -> list[dict]:
        """Ready replicas the gateway sends requests to (not withdrawn as stalled, not ejected)."""
        return [r for r in self.ready(service) if r["in_pool"]]

    def scale(self, service: str, n: int) -> None:
        r = httpx.post(f"{self.admin}/api/scale", json={"service": service, "replicas": n}, timeout=10)
        assert r.status_code < 300, r.text

    def down(self, timeout: float = 180) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "selfieless", "down", "--state-dir", str(self.state_dir)],
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
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""


def remove_stack(client, name: str) -> None:
    """Whatever a failed test left on the swarm: the services and the network of stack `name`."""
    for s in client.services.list(filters={"label": f"selfieless.stack={name}"}):
        s.remove()
    for _ in range(40):
        nets = client.networks.list(filters={"label": f"selfieless.stack={name}"})
        if not nets:
            return
        for n in nets:
            try:
                n.remove()
            except Exception:
                pass
        time.sleep(0.5)


class GetLoad:
    """`clients` threads sending GETs through the gateway back to back; counts what failed (no
    answer, or a 5xx) and when, so a test or the benchmark can tell failures apart by time."""

    def __init__(self, url: str, clients: int = 4, timeout: float = 10.0):
        self.url = url
        self.clients = clients
        self.timeout = timeout
        self.ok = 0
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as c:
            while not self._stop.is_set():
                try:
                    r = c.get(self.url)
                    bad = f"HTTP {r.status_code}" if r.status_code >= 500 else None
                except httpx.HTTPError as e:
                    bad = f"{type(e).__name__}: {e}"
                with self._lock:
                    if bad is None:
                        self.ok += 1
                    else:
                        self.failures.append((time.monotonic(), bad))

    def __enter__(self) -> "GetLoad":
        for i in range(self.clients):
            t = threading.Thread(target=self._run, name=f"get-load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)
