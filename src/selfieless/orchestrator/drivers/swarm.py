"""The swarm driver: each service is a Docker Swarm service, through the manager's Engine API.

Swarm places, runs and restarts the tasks across the nodes (restart policy, the container health
check, rescheduling when a node goes down); this driver owns the replica count
(`owns_replica_count`): the control plane sets it with `set_replicas()` and learns from
`snapshots()` which tasks run and at which `node address : host port` (swarm_spec.py maps Swarm's
records). Probing, the gateway pool, passive ejection and autoscaling stay in the control plane.

- Services are named `<stack>-<service>` and labelled with the stack and the service; a
  restarted orchestrator finds them by label (`replica_counts()`) and carries on with their count.
- All services join one attachable overlay network (the stack's `network`, default its name), so
  tasks reach each other by service name across nodes; it is created on first use with the
  stack's label, and `cleanup()` removes the services and then the network.
- `stop()` of one replica does nothing: Swarm decides which task ends when the count goes down,
  and replaces a broken one by itself.
- The task list is read every SNAPSHOT_INTERVAL seconds (three cheap API calls).
- A rolling update (new image, command, environment, rebuilt image, restart) is Swarm's own:
  `update_service()` sends the new task spec with the service's UpdateConfig, `rollback_service()`
  asks for Swarm's rollback to the previous spec, and `update_status()` reads how it went; the
  control plane follows the tasks (orchestrator/rollout_owned.py).
All blocking SDK calls run in worker threads so the event loop never stalls on the engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any, AsyncIterator

from .base import Driver, DriverError, LaunchSpec, ReplicaHandle
from .swarm_spec import (LABEL_IMAGE_ID, LABEL_SERVICE, LABEL_STACK, pinned_image, service_definition,
                         service_name, tasks_to_replicas)

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL = 0.25


def swarm_available(manager: str | None = None, timeout: float = 3.0) -> str | None:
    """None when `manager` (else DOCKER_HOST) is a swarm manager that answers; otherwise why not."""
    try:
        import docker
    except ImportError:
        return "the docker SDK is not installed (pip install docker)"
    where = manager or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=where, timeout=timeout)
        try:
            info = client.info()
        finally:
            client.close()
    except Exception as e:  # the SDK raises many kinds
        from .docker import engine_problem

        return f"no Docker engine answers at {where} ({engine_problem(e)})"
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        return f"the engine at {where} is not part of a swarm (docker swarm init)"
    if not swarm.get("ControlAvailable"):
        return f"the engine at {where} is a swarm worker, not a manager"
    return None


class SwarmDriver(Driver):
    name = "swarm"
    owns_replica_count = True

    def __init__(self, stack: str, manager: str | None = None, network: str | None = None, client: Any = None):
        super().__init__()
        import docker

        self.stack = stack
        self.network = network or stack
        self.manager = manager or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.client = client or docker.DockerClient(base_url=self.manager, timeout=30)
        self._network_ready = False
        self._lock = threading.Lock()   # network creation and service creation run in threads

    # --- the count -------------------------------------------------------------------------------

    async def set_replicas(self, spec: LaunchSpec, count: int) -> None:
        if not spec.image:
            raise DriverError(f"service {spec.service!r} has no image for the swarm driver")
        try:
            await asyncio.to_thread(self._set_replicas, spec, count)
        except DriverError:
            raise
        except Exception as e:
            raise DriverError(f"cannot set {service_name(self.stack, spec.service)} to {count} "
                              f"replica(s) on {self.manager}: {e}") from e

    def _set_replicas(self, spec: LaunchSpec, count: int) -> None:
        name = service_name(self.stack, spec.service)
        with self._lock:
            found = self._service(name)
            if found is None:
                self._ensure_network()
                self.client.api.create_service(**service_definition(self.stack, spec, count, self.network,
                                                                     image=self._pin(spec.image)))
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
        try:
            await asyncio.to_thread(self._update_service, spec, force)
        except DriverError:
            raise
        except Exception as e:
            raise DriverError(f"cannot update {service_name(self.stack, spec.service)} on {self.manager}: {e}") from e

    def _update_service(self, spec: LaunchSpec, force: bool) -> None:
        name = service_name(self.stack, spec.service)
        with self._lock:
            found = self._service(name)
            if found is None:
                raise DriverError(f"no service {name} on {self.manager}")
            current = self.client.api.inspect_service(found.id)
            old = current["Spec"]
            new = service_definition(self.stack, spec, 0, self.network, image=self._pin(spec.image))
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
        try:
            await asyncio.to_thread(self._rollback_service, service)
        except DriverError:
            raise
        except Exception as e:
            raise DriverError(f"cannot roll {service_name(self.stack, service)} back on {self.manager}: {e}") from e

    def _rollback_service(self, service: str) -> None:
        name = service_name(self.stack, service)
        with self._lock:
            found = self._service(name)
            if found is None:
                raise DriverError(f"no service {name} on {self.manager}")
            current = self.client.api.inspect_service(found.id)
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
        return tasks_to_replicas(self.stack, tasks, api.nodes())

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
            yield handles
            await asyncio.sleep(SNAPSHOT_INTERVAL)

    # --- the Driver interface for drivers that start replicas one by one ---------------------------

    async def start(self, spec: LaunchSpec) -> ReplicaHandle:
        raise DriverError("the swarm driver starts no single replica: Swarm runs the tasks (set_replicas)")

    async def stop(self, handle: ReplicaHandle, grace: float = 5.0) -> None:
        """Nothing to do: Swarm ends tasks when the count goes down and replaces broken ones."""

    async def list(self) -> list[ReplicaHandle]:
        return await asyncio.to_thread(self.running)

    async def cleanup(self) -> None:
        def remove() -> None:
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
        await asyncio.to_thread(self.client.close)
