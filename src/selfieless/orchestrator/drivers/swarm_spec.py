"""The swarm driver's pure half: a LaunchSpec as a Swarm service definition, and Swarm's task and
node records as the replicas the control plane probes and routes to. No sockets here.

- Every service is replicated, with endpoint mode `dnsrr` and its container port published in
  host mode on a port Swarm picks per task: our own gateway is the load balancer, and a kernel
  without IPVS has no routing mesh anyway. A task is reached at `its node's address : that port`.
- Restart policy and update order are always set explicitly: the SDK's empty
  `RestartPolicy()`/`UpdateConfig()` would otherwise replace Swarm's own defaults.
- The container health check is switched off (`NONE`, which also overrides the images' own
  HEALTHCHECK) unless the stack asks for one (`swarm: {container_health_check: true}`): Swarm
  reports a task with a check `running`, and its published port, only after the check first
  passes, so a new task would wait for the check's 1 s cadence, the check's own start-up and
  Swarm's report before our first probe could even reach it (measured: 2-4 s of a 4-9 s
  replacement on the lab). Without it the port is known as soon as the container starts, and our
  probes (every 50 ms while a replica starts) find it serving at once. Our probes then also decide
  liveness: a task that fails them is out of rotation at once, and one still silent a few seconds
  later is ended on its node (driver_owned.silent_tasks; a paused container is never replaced by
  Swarm, check or not).
- Work on one node (end a task that is alive but silent, remove the stack's volumes there) is a
  one-shot Swarm job pinned to that node by `node.id`, with the node's engine socket mounted: the
  manager cannot reach the workers' engines, but every node runs what Swarm schedules on it.
- A task is a replica while Swarm wants it running, its state is `starting` or `running`, its
  node is `ready` and it has a host port (Swarm reports the port with `running`). Our own probe
  decides when it serves. A task on a node that went down stops being a replica as soon as Swarm
  says so. A task Swarm is shutting down (desired state `shutdown`, container still
  running: the old side of an update) is reported as `leaving`, so the control plane drains it
  out of the pool.
- The image is pinned: the service names the image by its repo digest (registry images) or its
  image id (images loaded on every node), resolved on the manager, and labels the id. A rebuilt
  `acts:latest` is then a changed spec Swarm rolls, and Swarm's rollback goes back to the exact
  old content, not to whatever the tag names by then.
- Rolling updates are Swarm's own (`update_configs`: the service's `update:` block, every field
  explicit, since the SDK's defaults would silently replace Swarm's); `update_outcome` reads
  Swarm's UpdateStatus.

The stack's own global services (the gateway on every node, the floating IP) are defined in
swarm_edge_spec.py.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from typing import Any

from ..backoff import BackoffPolicy
from .base import LaunchSpec, ReplicaHandle

LABEL_STACK = "selfieless.stack"
LABEL_SERVICE = "selfieless.service"
LABEL_CONTAINER_PORT = "selfieless.container_port"
LABEL_HEALTH_PATH = "selfieless.health_path"    # a service's (not a dependency's) tasks
LABEL_JOB = "selfieless.job"                  # on the one-shot node jobs (node_job_definition)
# A node label naming where that node's engine socket is, when not at the usual place (rootless
# engines, or the lab's engines, which share one file system).
LABEL_NODE_SOCKET = "selfieless.docker-socket"
# The images' own HEALTHCHECK asks an app on its port: a task that runs something else (the
# gateway, the control plane, a job) would stay `starting` and then be killed as unhealthy.
NO_HEALTHCHECK = {"Test": ["NONE"]}
DEFAULT_SOCKET = "/var/run/docker.sock"
LABEL_IMAGE = "selfieless.image"        # the image as the stack file names it
LABEL_IMAGE_ID = "selfieless.image_id"  # the id it resolved to on the manager when the spec was sent

NS = 1_000_000_000
# Swarm's restart delay after a task ends (the only crash-loop guard Swarm has): the first delay
# of our own crash-loop backoff for the other drivers, so a crash loop is paced alike everywhere.
RESTART_DELAY = BackoffPolicy.initial
# The optional container health check's settings.
HEALTH_INTERVAL = 1.0
HEALTH_TIMEOUT = 2.0
HEALTH_RETRIES = 3
# Task states whose container exists and may answer (see the module docstring).
SERVING_STATES = ("starting", "running")


def service_name(stack: str, service: str) -> str:
    """`<stack>-<service>`: also the DNS name other tasks reach it by on the stack's network."""
    return f"{stack}-{service}"


def health_command(path: str, container_port: int) -> list[str]:
    """An HTTP GET of the health path from inside the container. Needs python3 in the image
    (every image of this project has it); a plain exec, so no shell is needed either."""
    code = ("import sys,urllib.request as u;"
            f"sys.exit(0 if u.urlopen('http://127.0.0.1:{container_port}{path}',timeout={HEALTH_TIMEOUT:g})"
            ".status<500 else 1)")
    return ["CMD", "python3", "-c", code]


def pinned_image(name: str, inspected: dict | None) -> tuple[str, str | None]:
    """(the image reference to give Swarm, the image id) for `name` as the manager's engine
    inspected it (None: the manager does not have it; then the name as it is, no id).

    A repo digest of the same repository when there is one (every node can pull exactly that);
    otherwise the image id (images copied to every node keep their id)."""
    if not inspected or not inspected.get("Id"):
        return name, None
    image_id = inspected["Id"]
    digests = inspected.get("RepoDigests") or []
    repo = name.rsplit("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    same = [d for d in digests if d.split("@", 1)[0] == repo]
    if same or digests:
        return (same or digests)[0], image_id
    return image_id, image_id


def update_configs(spec: LaunchSpec) -> tuple[Any, Any]:
    """(UpdateConfig, RollbackConfig) from the service's `update:` block. Every field is set: an
    SDK object leaves out what it is not given, and Swarm then uses its own default for it (for
    the failure action, `pause`; for the order, stop-first).

    The update stops at the first failed task (max failure ratio 0). The rollback goes back the
    same way (same order and parallelism) and pauses if it fails too: rolling back a rollback
    would loop."""
    from docker import types

    common = {"parallelism": spec.update_parallelism, "delay": 0, "monitor": int(spec.update_monitor * NS),
              "max_failure_ratio": 0.0, "order": spec.update_order}
    return (types.UpdateConfig(failure_action=spec.update_failure_action, **common),
            types.RollbackConfig(failure_action="pause", **common))


# UpdateStatus.State -> our outcome, for an update and for a rollback we asked for (undo).
_UPDATE_DONE = {"completed": "complete", "paused": "paused", "rollback_completed": "rolled_back",
                "rollback_paused": "paused"}
_UNDO_DONE = {"rollback_completed": "complete", "rollback_paused": "paused"}


def update_outcome(before: dict | None, now: dict | None, undo: bool = False) -> tuple[str, str] | None:
    """(outcome, Swarm's message) once the update started after `before` (the UpdateStatus read
    before sending it) has ended, else None (not started yet, or still going).

    Outcomes: complete | rolled_back | paused. Swarm stamps each update with its start time; a
    status with the same start as `before` is the previous update's."""
    if not now or not now.get("State"):
        return None
    if before and before.get("StartedAt") == now.get("StartedAt"):
        return None
    outcome = (_UNDO_DONE if undo else _UPDATE_DONE).get(now["State"])
    if outcome is None:
        return None
    return outcome, now.get("Message") or now["State"].replace("_", " ")


def undo_by_rollback(spec: dict | None, previous: dict | None) -> bool:
    """Whether `rollout undo` can be Swarm's own rollback to the previous spec: only when there is
    one and it differs from the current spec in the task, not in the count (a scale since the last
    update also leaves a previous spec, and rolling back to it would only undo the scale)."""
    if not spec or not previous:
        return False
    return previous.get("Mode") == spec.get("Mode") and previous.get("TaskTemplate") != spec.get("TaskTemplate")


def service_definition(stack: str, spec: LaunchSpec, replicas: int, network: str,
                       image: tuple[str, str | None] | None = None,
                       container_health_check: bool = False) -> dict[str, Any]:
    """Keyword arguments for the SDK's low-level `create_service` (and `update_service`).
    `image`: the pinned reference and id (pinned_image); else the name as it is."""
    from docker import types

    labels = {LABEL_STACK: stack, LABEL_SERVICE: spec.service}
    ref, image_id = image or (spec.image, None)
    image_labels = {LABEL_IMAGE: spec.image or ""}
    if image_id:
        image_labels[LABEL_IMAGE_ID] = image_id
    health: Any = NO_HEALTHCHECK
    if spec.health_path and container_health_check:
        health = types.Healthcheck(test=health_command(spec.health_path, spec.container_port),
                                   interval=int(HEALTH_INTERVAL * NS), timeout=int(HEALTH_TIMEOUT * NS),
                                   retries=HEALTH_RETRIES, start_period=int(30 * NS))
    mounts = [types.Mount(target=path, source=vol, type="volume", labels={LABEL_STACK: stack})
              for vol, path in spec.volumes.items()]
    container = types.ContainerSpec(
        ref,
        env=dict(spec.environment),
        labels={**labels, LABEL_CONTAINER_PORT: str(spec.container_port), **image_labels,
                **({LABEL_HEALTH_PATH: spec.health_path} if spec.health_path else {})},
        mounts=mounts or None,
        stop_grace_period=int(spec.stop_grace * NS),
        healthcheck=health,
        # PID 1 of the image must react to SIGTERM (a Python app as PID 1 ignores it otherwise).
        init=True,
    )
    placement = types.Placement(constraints=list(spec.constraints) or None,
                                preferences=[("spread", label) for label in spec.preferences] or None)
    template = types.TaskTemplate(
        container_spec=container,
        restart_policy=types.RestartPolicy(condition="any", delay=int(RESTART_DELAY * NS), max_attempts=0),
        placement=placement,
        networks=[{"Target": network}],
    )
    update, rollback = update_configs(spec)
    return {
        "task_template": template,
        "name": service_name(stack, spec.service),
        "labels": labels,
        "mode": types.ServiceMode("replicated", replicas=replicas),
        "update_config": update,
        "rollback_config": rollback,
        "endpoint_spec": types.EndpointSpec(mode="dnsrr", ports=[
            {"Protocol": "tcp", "TargetPort": spec.container_port, "PublishMode": "host"}]),
    }


def ready_nodes(nodes: list[dict]) -> dict[str, tuple[str, str]]:
    """Node id -> (address, hostname) for the nodes Swarm reports `ready`."""
    out = {}
    for n in nodes:
        status = n.get("Status") or {}
        if status.get("State") != "ready":
            continue
        addr = status.get("Addr") or ""
        if addr in ("", "0.0.0.0"):
            # A manager may report 0.0.0.0 here; its advertised address is in ManagerStatus.
            addr = ((n.get("ManagerStatus") or {}).get("Addr") or "").rsplit(":", 1)[0]
        if addr:
            out[n["ID"]] = (addr, (n.get("Description") or {}).get("Hostname", ""))
    return out


def published_port(task: dict, container_port: int) -> int | None:
    for p in ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []:
        if p.get("TargetPort") == container_port and p.get("PublishMode") == "host" \
                and p.get("PublishedPort"):
            return int(p["PublishedPort"])
    return None


def replica_id(service: str, task: dict) -> str:
    """`acts.2.k3j4l5m6n7p8`: the service, Swarm's slot, the task: unique per incarnation."""
    return f"{service}.{task.get('Slot', 0)}.{str(task.get('ID', ''))[:12]}"


def tasks_to_replicas(stack: str, tasks: list[dict], nodes: list[dict], read_ports: dict[str, int] | None = None
                      ) -> list[ReplicaHandle]:
    """The running, reachable tasks of `stack` as replicas, sorted by id (those Swarm is shutting
    down marked `leaving`). A task's port is the one in its status, else the one read on its node
    (`read_ports`, task id -> host port: swarm_portless.py)."""
    where = ready_nodes(nodes)
    out = []
    for t in tasks:
        if t.get("DesiredState") not in ("running", "shutdown") \
                or (t.get("Status") or {}).get("State") not in SERVING_STATES:
            continue
        labels = ((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
        if labels.get(LABEL_STACK) != stack or LABEL_SERVICE not in labels:
            continue
        node = where.get(t.get("NodeID"))
        if node is None:
            continue
        try:
            container_port = int(labels.get(LABEL_CONTAINER_PORT, "0"))
        except ValueError:
            continue
        port = published_port(t, container_port) or (read_ports or {}).get(t.get("ID", ""))
        if port is None:
            continue
        service = labels[LABEL_SERVICE]
        addr, hostname = node
        out.append(ReplicaHandle(
            id=replica_id(service, t), service=service, port=port, host=addr,
            started_at=parse_timestamp((t.get("Status") or {}).get("Timestamp", "")),
            detail=f"task {str(t.get('ID', ''))[:12]} on {hostname or 'node'} {addr}:{port}",
            leaving=t.get("DesiredState") != "running",
        ))
    return sorted(out, key=lambda h: h.id)


@dataclass(frozen=True)
class TaskPlace:
    """Where one task's container is: what a node job needs to end it."""

    task: str
    node: str
    container: str
    image: str   # what the node job runs in (job_image): "" for the driver's helper image
    container_port: int = 0   # the port the container listens on (swarm_portless: to read its host port)


def task_places(tasks: list[dict], replicas: list[ReplicaHandle]) -> dict[str, TaskPlace]:
    """Replica id -> its task's place, for the replicas `tasks_to_replicas` made of `tasks`."""
    by_task = {str(t.get("ID", ""))[:12]: t for t in tasks}
    out = {}
    for h in replicas:
        t = by_task.get(h.id.rsplit(".", 1)[-1])
        if t is None:
            continue
        container = ((t.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if container:
            image = job_image((t.get("Spec") or {}).get("ContainerSpec") or {})
            out[h.id] = TaskPlace(task=t["ID"], node=t.get("NodeID", ""), container=container, image=image)
    return out


def job_image(container_spec: dict) -> str:
    """The image a node job about this task can run in: the task's own when the task is one of
    the stack's HTTP apps (it has a health path: built on the project's base image, with the
    python3 and the Docker SDK the jobs need, and present on the task's node), else "" (a
    dependency's image, MariaDB's, has neither: the job then runs in the driver's helper image)."""
    if LABEL_HEALTH_PATH in (container_spec.get("Labels") or {}):
        return container_spec.get("Image", "")
    return ""


def node_socket(node: dict) -> str:
    """The engine socket on `node` (a node record): its LABEL_NODE_SOCKET label, else the usual path."""
    return ((node.get("Spec") or {}).get("Labels") or {}).get(LABEL_NODE_SOCKET) or DEFAULT_SOCKET


# The node jobs' programs: python3 with the Docker SDK, run by a container of one of the stack's
# own images (every image of this project has both) with the node's engine socket mounted.
END_CONTAINER_CODE = """\
import sys, docker
c = docker.from_env().containers.get(sys.argv[1])
if c.status == "paused":
    c.unpause()   # a paused process cannot be signalled out of the freezer
c.kill()
print("killed", c.id[:12])
"""
REMOVE_VOLUMES_CODE = """\
import sys, time, docker
d = docker.from_env()
left = d.volumes.list(filters={"label": sys.argv[1]})
deadline = time.monotonic() + float(sys.argv[2])
while left:
    for v in list(left):
        try:
            v.remove(force=True)
            print("removed", v.name)
            left.remove(v)
        except docker.errors.NotFound:
            left.remove(v)
        except docker.errors.APIError:
            pass   # still in use by a container that is being removed
    if left and time.monotonic() > deadline:
        sys.exit("still in use: " + " ".join(v.name for v in left))
    time.sleep(0.5)
"""


def node_job_definition(stack: str, job: str, name: str, node_id: str, socket: str, image: str,
                        code: str, args: list[str]) -> dict[str, Any]:
    """Keyword arguments for `create_service`: a one-shot job running `python3 -c code args...`
    once, on node `node_id` only, as root (the socket is root's) with `socket` mounted."""
    from docker import types

    container = types.ContainerSpec(
        image, command=["python3", "-c", code, *args], user="0",
        labels={LABEL_STACK: stack, LABEL_JOB: job},
        mounts=[types.Mount(target=DEFAULT_SOCKET, source=socket, type="bind")], healthcheck=NO_HEALTHCHECK,
    )
    template = types.TaskTemplate(
        container_spec=container,
        restart_policy=types.RestartPolicy(condition="none"),
        placement=types.Placement(constraints=[f"node.id=={node_id}"]),
    )
    return {
        "task_template": template,
        "name": name,
        "labels": {LABEL_STACK: stack, LABEL_JOB: job},
        "mode": types.ServiceMode("replicated-job", replicas=1, concurrency=1),
    }


def job_outcome(tasks: list[dict]) -> tuple[bool, str] | None:
    """A node job's result from its task records: (succeeded, why), or None while it runs."""
    for t in tasks:
        status = t.get("Status") or {}
        state = status.get("State")
        if state == "complete":
            return True, "done"
        if state in ("failed", "rejected", "orphaned", "shutdown"):
            return False, f"{state}: {status.get('Err') or status.get('Message') or 'no detail'}"
    return None


def parse_timestamp(value: str) -> float:
    """Swarm's RFC 3339 time (nanoseconds, UTC) as wall-clock seconds; now when unreadable."""
    try:
        return float(calendar.timegm(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")))
    except (ValueError, TypeError):
        return time.time()
