"""Tasks Swarm lists as running without the host port they published: their port, read on their
node, and when to end one.

A task's published port (host mode, picked by the node's engine) is known only from the task's
status. When the Raft leader's node is lost, the new leader lists every task running on the
surviving nodes with no port in its status at all (seen in the lab for minutes, for the apps', the
database's and the gateways' tasks alike, while their containers go on serving on their ports).
Without a port a task is no replica: no gateway is sent to it and the stack never counts as
converged. So the driver asks the node's own engine (a node job, `docker inspect` of the task's
container) which host port the container publishes, and uses that port for as long as Swarm
lists the task without one. A container that publishes none really is unreachable: that task is
ended on its node, and Swarm's restart policy starts one that reports its port. The questions are
asked after the same wait and with the same retry as the silent tasks' ends
(driver_owned.silent_tasks). Pure: the driver lists the tasks and runs the jobs.
"""

from __future__ import annotations

from ..driver_owned import Silence, silent_tasks
from .swarm_spec import (LABEL_CONTAINER_PORT, LABEL_SERVICE, LABEL_STACK, TaskPlace, job_image, published_port,
                         ready_nodes)

# The node job: for each `container/port` argument, the host port the container publishes for
# its container port (tcp), or "-" when it publishes none or is gone: one line `container port`.
LOOK_UP_PORTS_CODE = """\
import sys, docker
d = docker.from_env()
for arg in sys.argv[1:]:
    cid, port = arg.rsplit("/", 1)
    try:
        binds = (d.containers.get(cid).attrs["NetworkSettings"]["Ports"] or {}).get(port + "/tcp") or []
    except docker.errors.NotFound:
        binds = []
    print(cid, next((b["HostPort"] for b in binds if b.get("HostPort")), "-"))
"""


def portless_places(stack: str, tasks: list[dict], nodes: list[dict], known: dict[str, int] | None = None
                    ) -> dict[str, TaskPlace]:
    """Task id -> place, for the stack's service tasks that run on a ready node with a container
    port but report no published port for it, and whose port was not read on its node (`known`)."""
    where = ready_nodes(nodes)
    known = known or {}
    out = {}
    for t in tasks:
        status = t.get("Status") or {}
        if t.get("DesiredState") != "running" or status.get("State") != "running" or t.get("NodeID") not in where:
            continue
        spec = (t.get("Spec") or {}).get("ContainerSpec") or {}
        labels = spec.get("Labels") or {}
        if labels.get(LABEL_STACK) != stack or LABEL_SERVICE not in labels or t["ID"] in known:
            continue
        try:
            container_port = int(labels.get(LABEL_CONTAINER_PORT, "0"))
        except ValueError:
            continue
        container = (status.get("ContainerStatus") or {}).get("ContainerID")
        if container_port <= 0 or not container or published_port(t, container_port) is not None:
            continue
        out[t["ID"]] = TaskPlace(task=t["ID"], node=t["NodeID"], container=container, image=job_image(spec),
                                 container_port=container_port)
    return out


def look_up_args(places: list[TaskPlace]) -> list[str]:
    """The node job's arguments for these places (all on one node)."""
    return [f"{p.container}/{p.container_port}" for p in places]


def read_looked_up(output: str, places: list[TaskPlace]) -> tuple[dict[str, int], list[TaskPlace]]:
    """The node job's output read against the places asked about: (task id -> the host port its
    container publishes, the places whose container publishes none or is not named at all)."""
    said: dict[str, str] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2:
            said[parts[0]] = parts[1]
    ports, none = {}, []
    for p in places:
        value = said.get(p.container, "-")
        if value.isdigit() and 0 < int(value) < 65536:
            ports[p.task] = int(value)
        else:
            none.append(p)
    return ports, none


class PortlessTasks:
    """The ports read on the nodes (task id -> host port), and which port-less tasks to ask
    about now, as they keep being listed (driver_owned.silent_tasks)."""

    def __init__(self) -> None:
        self.state = Silence(since={}, ending={}, end=[])
        self.ports: dict[str, int] = {}

    def keep_listed(self, listed: set[str]) -> None:
        """Forget the ports of tasks no longer listed (ended, replaced)."""
        self.ports = {t: p for t, p in self.ports.items() if t in listed}

    def learn(self, ports: dict[str, int]) -> None:
        self.ports.update(ports)

    def to_ask(self, places: dict[str, TaskPlace], now: float) -> list[TaskPlace]:
        listed = set(places)
        self.state = silent_tasks(self.state.since, self.state.ending, list(listed - set(self.state.since)),
                                  listed, set(), now)
        return [places[t] for t in self.state.end]
