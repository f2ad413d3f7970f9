"""The driver interface: how a replica is run. The rest of the control plane sees only this.

A driver starts a replica of a service on a host port from a fully rendered `LaunchSpec`, stops
it, lists the replicas of its stack that exist right now (including ones started by an earlier
orchestrator, for adoption), and reports exits as they happen through `exits()`.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator


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


@dataclass(frozen=True)
class ReplicaHandle:
    id: str                 # unique per incarnation; also the replica's id in the gateway pool
    service: str
    port: int               # host port
    started_at: float       # wall clock
    pid: int | None = None  # process driver
    detail: str = ""        # container id, command line... for status output


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
    name: str = "base"

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
        replicas (the docker network). Data volumes stay."""

    async def exits(self) -> AsyncIterator[ExitEvent]:
        """Exit events as they happen, for replicas started or adopted by this driver."""
        while True:
            yield await self._exit_queue.get()

    def _report_exit(self, event: ExitEvent) -> None:
        self._exit_queue.put_nowait(event)
