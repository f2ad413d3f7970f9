"""Tasks Swarm lists as running without the host port they published, and when to end them.

A task's published port (host mode, picked by Swarm) is known only from the task's status. After
the Raft leader's node was lost, the lab showed a task on a surviving node `running` for minutes
with no port in its status at all: the gateways cannot reach it, so it is no replica, and Swarm,
which counts it, starts nothing in its place. Such a task is ended on its node (the node job
that ends a silent task), after the same wait and with the same retry as a silent one
(driver_owned.silent_tasks), and Swarm's restart policy starts one that reports its port. Pure:
the driver lists the tasks and runs the jobs.
"""

from __future__ import annotations

from ..driver_owned import Silence, silent_tasks
from .swarm_spec import (LABEL_CONTAINER_PORT, LABEL_SERVICE, LABEL_STACK, TaskPlace, published_port,
                         ready_nodes)


def portless_places(stack: str, tasks: list[dict], nodes: list[dict]) -> dict[str, TaskPlace]:
    """Task id -> place, for the stack's service tasks that run on a ready node with a container
    port but report no published port for it."""
    where = ready_nodes(nodes)
    out = {}
    for t in tasks:
        status = t.get("Status") or {}
        if t.get("DesiredState") != "running" or status.get("State") != "running" or t.get("NodeID") not in where:
            continue
        spec = (t.get("Spec") or {}).get("ContainerSpec") or {}
        labels = spec.get("Labels") or {}
        if labels.get(LABEL_STACK) != stack or LABEL_SERVICE not in labels:
            continue
        try:
            container_port = int(labels.get(LABEL_CONTAINER_PORT, "0"))
        except ValueError:
            continue
        container = (status.get("ContainerStatus") or {}).get("ContainerID")
        if container_port <= 0 or not container or published_port(t, container_port) is not None:
            continue
        out[t["ID"]] = TaskPlace(task=t["ID"], node=t["NodeID"], container=container, image=spec.get("Image", ""))
    return out


class PortlessTasks:
    """Which port-less tasks to end now, as they keep being listed (driver_owned.silent_tasks)."""

    def __init__(self) -> None:
        self.state = Silence(since={}, ending={}, end=[])

    def to_end(self, places: dict[str, TaskPlace], now: float) -> list[TaskPlace]:
        listed = set(places)
        self.state = silent_tasks(self.state.since, self.state.ending, list(listed - set(self.state.since)),
                                  listed, set(), now)
        return [places[t] for t in self.state.end]
