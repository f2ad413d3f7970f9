"""The driver interfaces: how replicas are run. The rest of the control plane sees only these.

Two kinds, one per reconcile mode (the orchestrator picks its reconciler by the kind it is given):
- `PortDriver` (process, docker): starts one replica of a service on a host port from a fully
  rendered `LaunchSpec`, stops it, lists the replicas of its stack that exist right now (including
  ones started by an earlier orchestrator, for adoption), and reports exits through `exits()`
  (the control plane's reconciler: reconcile_ports.py);
- `EngineDriver` (swarm): the engine runs, places and restarts the replicas itself. The control
  plane only tells it how many replicas a service should have (`set_replicas`), learns which
  replicas run, and where, from `snapshots()`, and keeps the rest of its job: probing, the gateway
  pool, autoscaling, events (reconcile_engine.py).
Both share `Driver`: readiness, image ids, log files, cleanup.
"""

from __future__ import annotations

import abc
import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator



DEFAULT_ENGINE = "unix:///var/run/docker.sock"


def engine_address(given: str | None = None) -> str:
    """The Docker engine to talk to: the one given (a stack's `swarm.manager`), else
    $DOCKER_HOST, else the local socket, as the docker CLI picks it."""
    return given or os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE

@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one replica, placeholders already filled in."""

    stack: str
    service: str
    host_port: int
    command: list[str] | None = None   # process driver
    image: str | None = None           # docker driver
    container_port: int = 80
    environment: dict[str, str] = field(default_factory=dict)
    preload: bool = False              # process driver: fork from a preloaded interpreter (preload.py)
    # Docker driver only (the process driver ignores them):
    name: str | None = None               # a fixed container name (dependencies); else generated
    host_ip: str = "0.0.0.0"              # address the host port is published on
    network: str | None = None            # user-defined network to join (created if missing)
    extra_hosts: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)   # named volume -> path in the container
    start_boost: bool = True              # a bigger CPU share until ready (off: others serve meanwhile)
    # Swarm driver only: placement (constraints, spread labels), the HTTP health path its
    # container health check asks (None: no check in the container), the stop grace period.
    constraints: tuple[str, ...] = ()
    preferences: tuple[str, ...] = ()
    health_path: str | None = None
    stop_grace: float = 10.0
    # Swarm driver only: the service's `update:` block, which becomes Swarm's UpdateConfig (a
    # rolling update is Swarm's own there, see orchestrator/rollout_owned.py).
    update_parallelism: int = 1
    update_order: str = "start-first"
    update_monitor: float = 5.0
    update_failure_action: str = "rollback"


@dataclass(frozen=True)
class ReplicaHandle:
    id: str                 # unique per incarnation; also the replica's id in the gateway pool
    service: str
    port: int               # host port
    started_at: float       # wall clock
    pid: int | None = None  # process driver
    detail: str = ""        # container id, command line... for status output
    host: str | None = None  # address it is reached at when not this host (a swarm node's)
    leaving: bool = False    # the engine is shutting it down (a swarm task of an update): drain it


@dataclass(frozen=True)
class ExitEvent:
    replica_id: str
    service: str
    port: int
    exit_code: int | None   # None when unknown (adopted process, signal not observable)
    reason: str


class DriverError(RuntimeError):
    pass


class Driver(abc.ABC):
    """What every driver does, whichever side owns the replicas."""

    name: str = "base"

    async def ready(self, handle: ReplicaHandle) -> None:
        """The replica passed its first health probe: a driver may now take back what it gave the
        replica only to start quickly."""

    async def image_ids(self, images: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, str | None]]:
        """For `apply`: per service, the image ids its running replicas were started from, and the
        id each image name (service -> name) resolves to now. Empty for drivers without images."""
        return {}, {}

    def log_files(self, service: str) -> dict[int, Path]:
        """Where the driver keeps the output of `service`'s replicas, by host port; {} when it keeps
        none itself (containers: `docker logs`)."""
        return {}

    async def close(self) -> None:
        """Release resources. Replicas keep running (so a restarted orchestrator can adopt them)."""

    async def cleanup(self) -> None:
        """After every replica was stopped: remove what the driver made for the stack beside its
        replicas (the docker network, the swarm services). Data volumes stay."""

    async def remove_volumes(self) -> list[str] | None:
        """After cleanup(): remove the stack's data volumes wherever the driver made them; the
        names removed, or None when the driver leaves that to `selfieless down` (docker)."""
        return None


class PortDriver(Driver):
    """Runs replicas one at a time on host ports the control plane picks (process, docker): the
    control plane decides what starts and stops where, and replaces what breaks."""

    def __init__(self) -> None:
        self._exit_queue: asyncio.Queue[ExitEvent] = asyncio.Queue()

    @abc.abstractmethod
    async def start(self, spec: LaunchSpec) -> ReplicaHandle:
        """Create and start a replica; returns once it is launched (not necessarily ready)."""

    @abc.abstractmethod
    async def stop(self, handle: ReplicaHandle, grace: float = 5.0) -> None:
        """Ask it to stop, kill it after `grace` seconds, and remove it. Idempotent."""

    @abc.abstractmethod
    async def list(self) -> list[ReplicaHandle]:
        """Replicas of this stack that exist now, started by us or by an earlier orchestrator."""

    async def adopt(self, handle: ReplicaHandle) -> None:
        """Start watching a replica found by list() so its exit is reported."""

    async def exits(self) -> AsyncIterator[ExitEvent]:
        """Exit events as they happen, for replicas started or adopted by this driver."""
        while True:
            yield await self._exit_queue.get()

    def _report_exit(self, event: ExitEvent) -> None:
        self._exit_queue.put_nowait(event)


class EngineDriver(Driver):
    """Hands a whole service to an engine that starts, places and replaces its replicas itself
    (swarm; a Kubernetes Deployment would be another): the control plane sets the count and reads
    back what runs where."""

    @abc.abstractmethod
    async def set_replicas(self, spec: LaunchSpec, count: int) -> None:
        """Create the service from `spec` if missing, and make the engine run `count` replicas of it."""

    @abc.abstractmethod
    async def replica_counts(self) -> dict[str, int]:
        """Replica count per service of this stack that exists now (adoption)."""

    @abc.abstractmethod
    def snapshots(self) -> AsyncIterator[list[ReplicaHandle]]:
        """Every replica of the stack that runs now, again and again (often enough that a new
        replica is seen within a fraction of a second)."""

    @abc.abstractmethod
    async def end(self, handle: ReplicaHandle) -> str:
        """End a replica that runs but does not answer, so that the engine replaces it; returns
        what was done."""

    # --- rolling updates, the engine's own (orchestrator/rollout_owned.py follows them) --------

    @abc.abstractmethod
    async def update_service(self, spec: LaunchSpec, force: bool = False) -> None:
        """Roll the service to `spec` the engine's way (force: replace every replica even when
        nothing changed). Returns once the engine accepted the update, not when it is done."""

    @abc.abstractmethod
    async def rollback_service(self, service: str) -> None:
        """Ask the engine to go back to the service's previous spec."""

    @abc.abstractmethod
    async def update_status(self, service: str) -> dict:
        """The engine's record of the service: its last update's `UpdateStatus`, its `Spec` and
        `PreviousSpec` (Swarm's names); {} when the engine keeps none."""
