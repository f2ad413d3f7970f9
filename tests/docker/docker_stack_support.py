"""Helpers for the Docker deployment tests: a real `selfieless up --driver docker` in a subprocess,
`docker ps` as the course grader reads it, and the check that the machine is prepared.

(tests/docker has no __init__.py on purpose: it must never shadow the `docker` SDK package.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import yaml
from support.ports import free_port as any_free_port, free_port_range, port_is_free as port_free  # noqa: E402
from support.docker_engine import require_docker  # noqa: E402
from support.up_process import UpProcess  # noqa: E402

IMAGES = ("users:latest", "acts:latest", "web:latest", "selfieless/mariadb:latest")
LABEL_STACK = "selfieless.stack"


def require_images() -> None:
    """Skip (saying to run scripts/docker-prepare) without an engine or the images; fail if the
    engine is there but broken."""
    require_docker(*IMAGES)


def free_port(candidates=None) -> int:
    """The first free port among `candidates` (e.g. the course's 80), else any free one."""
    for port in candidates or []:
        if port_free(port):
            return port
    return any_free_port()


def docker_ps(*args: str) -> list[str]:
    """`docker ps` lines (no header), newest first, exactly as a grader reads them."""
    out = subprocess.run(["docker", "ps", *args], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[1:]


def acts_lines() -> list[str]:
    return [line for line in docker_ps() if "acts" in line]


def stack_containers(stack: str, all: bool = True) -> list[str]:
    args = ["-a"] if all else []
    out = subprocess.run(["docker", "ps", *args, "-q", "--filter", f"label={LABEL_STACK}={stack}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def inspect(container: str) -> dict:
    out = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def make_stack_file(tmp_path: Path, name: str, window: float | None = None, ports: bool = True) -> Path:
    """The bundled docker stack, optionally renamed (own network, volume, free ports) and with a
    shorter autoscaling window."""
    from selfieless.orchestrator.stack import BUNDLED_DOCKER_STACK

    data = yaml.safe_load(BUNDLED_DOCKER_STACK.read_text())
    if name != data["name"]:
        data["name"] = name
        data["network"] = name
        data["variables"]["db_url"] = data["variables"]["db_url"].replace("selfieless-db", f"{name}-db")
        db = data["dependencies"]["db"]
        db["volumes"] = {f"{name}-db-data": "/var/lib/mysql"}
    if ports:
        acts = free_port_range(10)
        data["services"]["acts"]["host_ports"] = f"{acts[0]}-{acts[-1]}"
        for svc in ("users", "web"):
            p = free_port_range(10)
            data["services"][svc]["host_ports"] = f"{p[0]}-{p[-1]}"
        data["dependencies"]["db"]["host_port"] = free_port()
    if window is not None:
        data["services"]["acts"]["autoscale"]["window_seconds"] = window
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Up(UpProcess):
    """`selfieless up STACK --driver docker` as a subprocess on free gateway and admin ports."""

    driver = "docker"

    def ready_ports(self, service: str) -> list[int]:
        return sorted(r["port"] for r in self.replicas(service) if r["state"] == "ready")

    def served_by_port(self, service: str) -> dict[int, int]:
        return {r["port"]: r["requests"] for r in self.replicas(service) if r["state"] == "ready"}
