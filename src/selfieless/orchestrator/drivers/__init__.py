"""Drivers run replicas. Modules:
    base             the interfaces: `PortDriver` (one replica at a time on a host port), `EngineDriver`
                     (an engine runs the service and its count), their common `Driver`, LaunchSpec...
    process          PortDriver: local child processes, adopted again after a restart (pid files)
    preload          the process driver's fork server: replicas forked from a preloaded interpreter
    docker           PortDriver: containers on the local Docker engine
    swarm            EngineDriver: Docker Swarm services across a cluster, through the manager
    swarm_spec       Swarm's records <-> ours: service and job definitions, tasks as replicas (pure)
    swarm_edge       the stack's edge services (gateway on every node, floating IP) through the manager
    swarm_edge_spec  their service definitions, and what their tasks and nodes say (pure)
    swarm_lease      the stack's control-plane lease, kept in a Swarm config's labels (versioned writes)
    swarm_control    the control plane as a one-replica Swarm service on a manager (`up --detach`)
    swarm_portless   tasks Swarm lists running without their published port: reading it on the node (pure)
    swarm_sealed     the control plane's ACME folder kept in the swarm, sealed (a config; its key a secret)
    logtail          the last lines a replica wrote, quoted in the reason of its exit
    port_holder      PortTaken, and which program holds a host port (from /proc)

`make_driver(stack_name, setting, state_dir)` picks one from the stack's `driver` setting; the orchestrator sees
only which of the two interfaces it got (that picks its reconciler), never which driver.
"""

from __future__ import annotations

import os
from typing import Callable

from .base import Driver, DriverError, EngineDriver, ExitEvent, LaunchSpec, PortDriver, ReplicaHandle

__all__ = ["Driver", "DriverError", "EngineDriver", "ExitEvent", "LaunchSpec", "PortDriver", "ReplicaHandle",
           "make_driver", "resolve_driver_kind"]


def resolve_driver_kind(setting: str) -> str:
    """`auto` means docker when an engine answers, else process."""
    if setting != "auto":
        return setting
    from .docker import docker_available

    return "docker" if docker_available() is None else "process"


def make_driver(stack_name: str, setting: str, state_dir: str | os.PathLike, *,
                manager: str | None = None, network: str | None = None, helper_image: str | None = None,
                container_health_check: bool = False, acting: Callable[[], bool] | None = None) -> Driver:
    """`manager`, `network`, `helper_image`, `container_health_check`: the swarm driver's settings
    (stack.SwarmSpec); `acting`: whether this control plane holds the stack's lease now."""
    kind = resolve_driver_kind(setting)
    if kind == "swarm":
        from .swarm import SwarmDriver

        return SwarmDriver(stack_name, manager=manager, network=network, helper_image=helper_image,
                           container_health_check=container_health_check, acting=acting)
    if kind == "docker":
        from .docker import DockerDriver

        return DockerDriver(stack_name)
    if kind == "process":
        from .process import ProcessDriver

        return ProcessDriver(stack_name, state_dir)
    raise ValueError(f"unknown driver {setting!r}")
