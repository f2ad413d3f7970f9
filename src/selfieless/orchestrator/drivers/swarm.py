"""The swarm driver: each service is a Docker Swarm service, through the manager's Engine API.

Swarm places, runs and restarts the tasks across the nodes (restart policy, the container health
check, rescheduling when a node goes down); this driver is an `EngineDriver` (base.py): the
control plane sets the count with `set_replicas()` and learns from `snapshots()` which tasks run
and at which `node address : host port` (swarm_spec.py maps Swarm's records). Probing, the gateway pool, passive ejection and autoscaling stay in the control plane.

- Services are named `<stack>-<service>` and labelled with the stack and the service; a
  restarted orchestrator finds them by label (`replica_counts()`) and carries on with their count.
- All services join one attachable overlay network (the stack's `network`, default its name), so
  tasks reach each other by service name across nodes; it is created on first use with the
  stack's label, and `cleanup()` removes the services and then the network.
- There is no start or stop of one replica: Swarm decides which task ends when the count goes
  down, and replaces a broken one by itself.
- The task list is read every SNAPSHOT_INTERVAL seconds (three cheap API calls).
- `end(handle)` ends one task that is alive but silent (paused, hung), which Swarm does not
  replace by itself when its container health check cannot run (a paused container's); and
  `remove_volumes()` removes the stack's volumes on every node. Both run a one-shot job on the
  node concerned (swarm_spec.node_job_definition): the manager cannot reach a worker's engine.
- A rolling update (new image, command, environment, rebuilt image, restart) is Swarm's own:
  `update_service()` sends the new task spec with the service's UpdateConfig, `rollback_service()`
  asks for Swarm's rollback to the previous spec, and `update_status()` reads how it went; the
  control plane follows the tasks (orchestrator/rollout_owned.py).
- The stack's own global services, the gateway on every node and the floating IP, are the
  driver's `edge` (swarm_edge.EdgeServices): same client, lock, network and lease check.
All blocking SDK calls run in worker threads so the event loop never stalls on the engine.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable

from .base import DriverError, EngineDriver, LaunchSpec, ReplicaHandle, engine_address
from .swarm_portless import LOOK_UP_PORTS_CODE, PortlessTasks, look_up_args, portless_places, read_looked_up
from .swarm_edge import EdgeServices
from .swarm_spec import (END_CONTAINER_CODE, LABEL_HEALTH_PATH, LABEL_IMAGE_ID, LABEL_SERVICE, LABEL_STACK,
                         REMOVE_VOLUMES_CODE, TaskPlace, job_outcome, node_job_definition, node_socket, pinned_image,
                         ready_nodes, service_definition, service_name, task_places, tasks_to_replicas)

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL = 0.25
# How long a node job (ending a task, removing volumes) may take, placement and image included.
JOB_TIMEOUT = 60.0
# How long the volume job waits for the containers that use a volume to be removed.
VOLUME_WAIT = 30.0


class SwarmDriver(EngineDriver):
    name = "swarm"

    def __init__(self, stack: str, manager: str | None = None, network: str | None = None, client: Any = None,
                 helper_image: str | None = None, container_health_check: bool = False,
                 acting: Callable[[], bool] | None = None):
        super().__init__()
        import docker

        self.stack = stack
        self.network = network or stack
        self.manager = engine_address(manager)
        self.client = client or docker.DockerClient(base_url=self.manager, timeout=30)
        self._network_ready = False
        self._lock = threading.Lock()   # network creation and service creation run in threads
        self._places: dict[str, TaskPlace] = {}   # replica id -> its task's node and container
        self._portless_places: dict[str, TaskPlace] = {}   # task id -> place (swarm_portless.py)
        self._portless = PortlessTasks()
        self._jobs: set[asyncio.Task] = set()     # node jobs running in the background
        self._helper: str | None = helper_image   # the node jobs' image (see _helper_image)
        self.container_health_check = container_health_check
        # Whether this control plane holds the stack's lease now (lease_keeper.LeaseKeeper.acting):
        # checked before every write, so one that lost it writes nothing. None: no lease kept.
        self.acting = acting
        self.edge = EdgeServices(self.stack, self.network, self.client, self._lock, find=self._service,
                                 pin=self._pin, ensure_network=self._ensure_network, engine=self._engine,
                                 check_acting=self._check_acting)

    def _check_acting(self, what: str) -> None:
        if self.acting is not None and not self.acting():
            raise DriverError(f"cannot {what}: this control plane does not hold the stack's lease "
                              f"(another one acts, or it could not renew)")

    # --- the count -------------------------------------------------------------------------------

    async def set_replicas(self, spec: LaunchSpec, count: int) -> None:
        if not spec.image:
            raise DriverError(f"service {spec.service!r} has no image for the swarm driver")
        await self._engine(f"set {service_name(self.stack, spec.service)} to {count} replica(s)",
                           self._set_replicas, spec, count)

    async def _engine(self, what: str, fn, *args) -> Any:
        """Run a blocking SDK call in a worker thread, once this control plane is found to hold the
        lease; returns its result. Any failure becomes a DriverError saying `what`."""
        self._check_acting(what)
        try:
            return await asyncio.to_thread(fn, *args)
        except DriverError:
            raise
        except Exception as e:
            raise DriverError(f"cannot {what} on {self.manager}: {e}") from e

    def _set_replicas(self, spec: LaunchSpec, count: int) -> None:
        name = service_name(self.stack, spec.service)
        if spec.health_path and self._helper is None:
            self._helper = spec.image
        with self._lock:
            found = self._service(name)
            if found is None:
                self._ensure_network()
                self.client.api.create_service(**service_definition(self.stack, spec, count, self.network,
                                                                   image=self._pin(spec.image),
                                                                   container_health_check=self.container_health_check))
                return
        mode = (found.attrs.get("Spec") or {}).get("Mode") or {}
        if (mode.get("Replicated") or {}).get("Replicas") != count:
            self._scale(found.id, count)

    def _scale(self, service_id: str, count: int) -> None:
        """Send the service's stored spec back with only the count changed, as `docker service
        scale` does. (The SDK's Service.scale() re-reads the spec with Swarm's defaults filled in,
        which Swarm takes for a changed spec: it replaces every running task, on other nodes.)"""
        from docker import types

        current = self.client.api.inspect_service(service_id)
        spec = current["Spec"]
        self.client.api.update_service(
            service_id, current["Version"]["Index"], task_template=spec["TaskTemplate"], name=spec["Name"],
            labels=spec.get("Labels"), mode=types.ServiceMode("replicated", replicas=count),
            update_config=spec.get("UpdateConfig"), rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"), fetch_current_spec=False,
        )

    # --- rolling updates (Swarm's own; orchestrator/rollout_owned.py follows them) ----------------

    def _pin(self, image: str | None) -> tuple[str, str | None] | None:
        """The image pinned to what its name resolves to on the manager now (pinned_image)."""
        import docker.errors

        if not image:
            return None
        try:
            return pinned_image(image, self.client.api.inspect_image(image))
        except docker.errors.ImageNotFound:
            return image, None

    async def update_service(self, spec: LaunchSpec, force: bool = False) -> None:
        await self._engine(f"update {service_name(self.stack, spec.service)}", self._update_service, spec, force)

    def _update_service(self, spec: LaunchSpec, force: bool) -> None:
        with self._lock:
            found, current = self._inspect(spec.service)
            old = current["Spec"]
            # A rolling update keeps Swarm's container health check: start-first then stops an
            # old task only once its replacement passed the check, so a version that exits at
            # start is rolled back with every serving task untouched. (Tasks created or scaled
            # without an update get none: their port comes sooner, see swarm_spec.)
            new = service_definition(self.stack, spec, 0, self.network, image=self._pin(spec.image),
                                     container_health_check=True)
            template = new["task_template"]
            # ForceUpdate is a counter: a bump replaces every task even when nothing else changed.
            template["ForceUpdate"] = int(old["TaskTemplate"].get("ForceUpdate", 0)) + (1 if force else 0)
            self.client.api.update_service(
                found.id, current["Version"]["Index"], task_template=template, name=old["Name"],
                labels=old.get("Labels"), mode=old["Mode"],   # the count stays the control plane's
                update_config=new["update_config"], rollback_config=new["rollback_config"],
                endpoint_spec=old.get("EndpointSpec"), fetch_current_spec=False,
            )

    async def rollback_service(self, service: str) -> None:
        await self._engine(f"roll {service_name(self.stack, service)} back", self._rollback_service, service)

    def _rollback_service(self, service: str) -> None:
        with self._lock:
            found, current = self._inspect(service)
            api = self.client.api
            # `docker service rollback`: the Engine API's update with rollback=previous, which the
            # SDK has no parameter for (the body is the current spec; Swarm takes PreviousSpec).
            resp = api._post_json(api._url("/services/{0}/update", found.id), data=current["Spec"],
                                  params={"version": current["Version"]["Index"], "rollback": "previous"})
            api._raise_for_status(resp)

    async def update_status(self, service: str) -> dict:
        """The manager's record of the service: `UpdateStatus`, `Spec`, `PreviousSpec` ({} when none)."""
        def read() -> dict:
            found = self._service(service_name(self.stack, service))
            return self.client.api.inspect_service(found.id) if found is not None else {}

        return await asyncio.to_thread(read)

    async def image_ids(self, images: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, str | None]]:
        """The image id each service was pinned to (its spec's label) against what the image name
        resolves to on the manager now: a rebuilt tag loaded on the nodes is a change."""
        def look() -> tuple[dict[str, list[str]], dict[str, str | None]]:
            running: dict[str, list[str]] = {}
            for s in self.client.api.services(filters={"label": f"{LABEL_STACK}={self.stack}"}):
                spec = s.get("Spec") or {}
                service = (spec.get("Labels") or {}).get(LABEL_SERVICE)
                labels = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Labels") or {}
                if service in images and labels.get(LABEL_IMAGE_ID):
                    running[service] = [labels[LABEL_IMAGE_ID]]
            current = {service: (self._pin(image) or (image, None))[1] for service, image in images.items()}
            return running, current

        return await asyncio.to_thread(look)

    def _inspect(self, service: str) -> tuple[Any, dict]:
        """The stack's Swarm service for `service` and the manager's record of it (refused if none)."""
        name = service_name(self.stack, service)
        found = self._service(name)
        if found is None:
            raise DriverError(f"no service {name} on {self.manager}")
        return found, self.client.api.inspect_service(found.id)

    def _service(self, name: str) -> Any:
        for s in self.client.services.list(filters={"name": name, "label": f"{LABEL_STACK}={self.stack}"}):
            if s.name == name:  # the name filter matches prefixes
                return s
        return None

    def _ensure_network(self) -> None:
        if self._network_ready:
            return
        if not self.client.networks.list(names=[self.network], filters={"driver": "overlay"}):
            self.client.networks.create(self.network, driver="overlay", attachable=True,
                                        labels={LABEL_STACK: self.stack})
        self._network_ready = True

    async def replica_counts(self) -> dict[str, int]:
        def read() -> dict[str, int]:
            out = {}
            for s in self.client.services.list(filters={"label": f"{LABEL_STACK}={self.stack}"}):
                spec = s.attrs.get("Spec") or {}
                service = (spec.get("Labels") or {}).get(LABEL_SERVICE)
                replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas")
                if service and replicas is not None:
                    out[service] = int(replicas)
            return out

        return await asyncio.to_thread(read)

    # --- what runs -------------------------------------------------------------------------------

    def running(self) -> list[ReplicaHandle]:
        """The stack's running tasks now (blocking)."""
        api = self.client.api
        ids = [s["ID"] for s in api.services(filters={"label": f"{LABEL_STACK}={self.stack}"})]
        if not ids:
            return []
        # Tasks being shut down too: the old side of an update leaves the pool (drained) then.
        tasks = api.tasks(filters={"service": ids, "desired-state": ["running", "shutdown"]})
        nodes = api.nodes()
        self._portless.keep_listed({t["ID"] for t in tasks})
        replicas = tasks_to_replicas(self.stack, tasks, nodes, self._portless.ports)
        self._places = task_places(tasks, replicas)
        self._portless_places = portless_places(self.stack, tasks, nodes, self._portless.ports)
        return replicas

    async def snapshots(self) -> AsyncIterator[list[ReplicaHandle]]:
        failing = False
        while True:
            try:
                handles = await asyncio.to_thread(self.running)
                failing = False
            except Exception as e:
                # The manager did not answer: keep the last picture (the probes still judge each
                # replica) and say so once.
                if not failing:
                    log.warning("swarm driver: cannot list tasks on %s: %s", self.manager, e)
                failing = True
                await asyncio.sleep(1.0)
                continue
            asking = self._portless.to_ask(self._portless_places, time.monotonic())
            for node in sorted({p.node for p in asking}):
                self._ask_ports(node, [p for p in asking if p.node == node])
            yield handles
            await asyncio.sleep(SNAPSHOT_INTERVAL)

    # --- work on one node ---------------------------------------------------------------------------

    async def end(self, handle: ReplicaHandle) -> str:
        """Kill the container of a task that is alive but silent, on its node; Swarm's restart
        policy then replaces the task. Returns what happened."""
        place = self._places.get(handle.id)
        if place is None:
            return "its task is no longer listed"
        return await self._end_place(place)

    def _ask_ports(self, node: str, places: list[TaskPlace]) -> None:
        """Read on their node which host ports the containers of tasks listed running without one
        publish (drivers/swarm_portless.py), in the background: a node job takes seconds, and the
        listing goes on meanwhile. A container that publishes none is ended."""
        async def run() -> None:
            tasks = " ".join(p.task[:12] for p in places)
            try:
                self._check_acting(f"read the ports of tasks {tasks}")
                image = next((p.image for p in places if p.image), None) or await asyncio.to_thread(self._helper_image)
                if not image:
                    raise DriverError("no image of the stack's apps to run the job in")
                ok, out = await asyncio.to_thread(self._node_job, "read-ports", node, image, LOOK_UP_PORTS_CODE,
                                                  look_up_args(places))
                if not ok:
                    raise DriverError(out)
            except Exception as e:
                log.warning("swarm driver: cannot read the ports of tasks %s on their node: %s", tasks, e)
                return
            ports, none = read_looked_up(out, places)
            self._portless.learn(ports)
            for task, port in ports.items():
                log.warning("swarm driver: task %s is listed with no published port in its status; its node's "
                            "engine says it publishes %d: using that", task[:12], port)
            for place in none:
                log.warning("swarm driver: task %s publishes no port on its node (unreachable): ending it there so "
                            "Swarm replaces it", place.task[:12])
                try:
                    await self._end_place(place)
                except Exception as e:
                    log.warning("swarm driver: cannot end task %s: %s", place.task[:12], e)

        job = asyncio.create_task(run(), name=f"read-ports-{node[:12]}")
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _end_place(self, place: TaskPlace) -> str:
        self._check_acting(f"end task {place.task[:12]}")
        # A dependency's task (the database) has no python3 in its image: the job runs in an app's.
        image = place.image or await asyncio.to_thread(self._helper_image)
        if not image:
            raise DriverError(f"cannot end task {place.task[:12]}: no image of the stack's apps to run the job in")
        ok, why = await asyncio.to_thread(self._node_job, "end-task", place.node, image,
                                          END_CONTAINER_CODE, [place.container])
        if not ok:
            raise DriverError(f"cannot end task {place.task[:12]}: {why}")
        return why

    async def remove_volumes(self) -> list[str]:
        """Remove the stack's named volumes on every node that is up (after cleanup(): the
        services are gone); returns `node: volume` for each removed. Nodes that are down keep
        theirs."""
        self._check_acting("remove the volumes")

        def run() -> list[str]:
            image = self._helper_image()
            if image is None:
                return []
            nodes = ready_nodes(self.client.api.nodes())
            out: list[str] = []
            for node_id, (_addr, hostname) in nodes.items():
                ok, why = self._node_job("remove-volumes", node_id, image, REMOVE_VOLUMES_CODE,
                                         [f"{LABEL_STACK}={self.stack}", f"{VOLUME_WAIT:g}"])
                if not ok:
                    raise DriverError(f"removing the volumes on node {hostname or node_id}: {why}")
                out += [f"{hostname or node_id[:12]}: {line.split(None, 1)[1]}"
                        for line in why.splitlines() if line.startswith("removed ")]
            return out

        return await asyncio.to_thread(run)

    def _helper_image(self) -> str | None:
        """An image of one of the stack's services (an HTTP app, not a dependency), for the node
        jobs; remembered at set_replicas() or read from the services."""
        if self._helper is None:
            for s in self.client.services.list(filters={"label": f"{LABEL_STACK}={self.stack}"}):
                tmpl = (s.attrs.get("Spec") or {}).get("TaskTemplate") or {}
                cs = tmpl.get("ContainerSpec") or {}
                if LABEL_HEALTH_PATH in (cs.get("Labels") or {}):
                    self._helper = cs.get("Image")
                    break
        return self._helper

    def _node_job(self, job: str, node_id: str, image: str, code: str, args: list[str]) -> tuple[bool, str]:
        """Run `code` once on node `node_id` as a Swarm job; (succeeded, its output or why not)."""
        api = self.client.api
        node = api.inspect_node(node_id)
        name = f"{self.stack}-{job}-{node_id[:10]}-{int(time.time() * 1000) % 10**8}"
        created = api.create_service(**node_job_definition(self.stack, job, name, node_id, node_socket(node), image,
                                                           code, args))
        job_id = created["ID"]
        try:
            deadline = time.monotonic() + JOB_TIMEOUT
            while True:
                outcome = job_outcome(api.tasks(filters={"service": job_id}))
                if outcome is not None:
                    break
                if time.monotonic() > deadline:
                    return False, f"the job did not finish within {JOB_TIMEOUT:g} s"
                time.sleep(0.1)
            ok, why = outcome
            try:
                logs = b"".join(api.service_logs(job_id, stdout=True, stderr=True, follow=False))
                text = logs.decode(errors="replace").strip()
            except Exception:  # the output is only for the message
                text = ""
            return ok, (text or why) if ok else f"{why} {text}".strip()
        finally:
            try:
                api.remove_service(job_id)
            except Exception:
                log.warning("swarm driver: cannot remove the job service %s", name)

    # --- the Driver interface for drivers that start replicas one by one ---------------------------

    async def cleanup(self) -> None:
        self._check_acting("remove the services")

        def remove() -> None:
            self._helper_image()   # read while the services exist: remove_volumes() may need it
            for s in self.client.services.list(filters={"label": f"{LABEL_STACK}={self.stack}"}):
                s.remove()
            # The overlay network stays in use on a node until that node's tasks are gone.
            for _ in range(60):
                nets = self.client.networks.list(filters={"label": f"{LABEL_STACK}={self.stack}"})
                if not nets:
                    break
                for net in nets:
                    try:
                        net.remove()
                    except Exception:
                        pass
                time.sleep(0.5)
            self._network_ready = False

        await asyncio.to_thread(remove)

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.to_thread(self.client.close)
