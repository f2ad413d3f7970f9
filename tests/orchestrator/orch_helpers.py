"""Helpers for the orchestrator tests (a uniquely named module: test dirs are not packages)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx

ECHO_APP = str(Path(__file__).with_name("echo_app.py"))


def echo_command() -> list[str]:
    return [sys.executable, ECHO_APP, "--port", "{port}"]


async def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` (sync or async) until truthy; returns its value or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def get_json(port: int, path: str = "/api/v1/whoami", timeout: float = 1.0):
    """GET a replica directly; None when it does not answer 200."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as c:
            r = await c.get(f"http://127.0.0.1:{port}{path}")
            return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def echo_stack(ports, name="t", **svc_overrides):
    """A one-service stack running the echo app on `ports`."""
    from selfieless.orchestrator.stack import parse_stack

    svc = {
        "command": echo_command(),
        "host_ports": f"{ports[0]}-{ports[-1]}",
        "routes": ["/api/v1"],
        "health": {"interval": 0.2, "timeout": 0.5},
        "replicas": {"initial": 1, "min": 1, "max": len(ports)},
        "autoscale": {"policy": "none"},
        "drain_timeout": 2,
    }
    for k, v in svc_overrides.items():
        if isinstance(v, dict) and isinstance(svc.get(k), dict):
            svc[k] = {**svc[k], **v}
        else:
            svc[k] = v
    return parse_stack({"name": name, "driver": "process", "gateway": {"port": 0}, "services": {"echo": svc}})


def kinds(orch, service="echo"):
    return [e.kind for e in orch.events.since(0) if e.service == service]


def pids_by_port(orch, service="echo"):
    st = orch.status()["services"][service]
    return {r["port"]: r["pid"] for r in st["replicas"] if r["state"] == "ready"}


# --- end-to-end helpers: the real acts app behind the real gateway ---------------------------

def acts_stack(ports, window=5.0, **svc_overrides):
    """The bundled stack's acts service, time-compressed, on `ports`, gateway on a free port."""
    from selfieless.orchestrator.stack import parse_stack

    svc = {
        "command": ["python", "-m", "selfieless.apps.acts", "--port", "{port}",
                    "--database-url", "{database_url}", "--users-url", "{gateway_url}"],
        "host_ports": f"{ports[0]}-{ports[-1]}",
        "routes": ["/api/v1"],
        "health": {"interval": 0.5, "timeout": 1.0},
        "replicas": {"initial": 1, "min": 1, "max": len(ports)},
        "autoscale": {"policy": "window", "window_seconds": window, "requests_per_replica": 20},
        "drain_timeout": 5,
        "environment": {"SELFIELESS_ALLOW_CRASH": "1"},
    }
    svc.update(svc_overrides)
    return parse_stack({
        "name": f"e2e-{ports[0]}", "driver": "process",
        "gateway": {"host": "127.0.0.1", "port": 0, "limits": {"no_replica_wait": 5}},
        "variables": {"database_url": "sqlite:///{state_dir}/acts.db"},
        "services": {"acts": svc},
    })


class Load:
    """A steady stream of GETs through the gateway from `concurrency` clients; counts failures."""

    def __init__(self, url: str, concurrency: int = 3, pause: float = 0.005, rate: float | None = None):
        # rate: total requests per second to aim for (paced), instead of as fast as possible.
        self.url, self.concurrency, self.pause, self.rate = url, concurrency, pause, rate
        self.ok = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def _worker(self):
        async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
            interval = self.concurrency / self.rate if self.rate else None
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    r = await c.get(self.url)
                    if r.status_code >= 500:
                        self.failures.append(f"{r.status_code} {r.text[:100]}")
                    else:
                        self.ok += 1
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                if interval is None:
                    await asyncio.sleep(self.pause)
                else:
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def start(self):
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        return self

    async def stop(self):
        self._stop.set()
        await asyncio.gather(*self._tasks)
