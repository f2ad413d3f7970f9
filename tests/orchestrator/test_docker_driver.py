"""The docker driver against a real engine; skipped when none answers (as on CI without docker)."""

import asyncio

import pytest

from selfieless.orchestrator.drivers import make_driver, resolve_driver_kind
from selfieless.orchestrator.drivers.base import LaunchSpec
from selfieless.orchestrator.drivers.docker import docker_available

from orch_helpers import free_port_range, wait_until

WHY = docker_available()
needs_docker = pytest.mark.skipif(
    WHY is not None,
    reason=f"{WHY}; to run: `apt-get install docker.io` and start dockerd (e.g. `dockerd &`), "
           f"then pull a small HTTP image (nginx:alpine)",
)


def test_auto_picks_process_without_an_engine(tmp_path):
    if WHY is None:
        pytest.skip("an engine is running here; auto picks docker")
    assert resolve_driver_kind("auto") == "process"
    assert make_driver("t", "auto", tmp_path).name == "process"


@pytest.mark.docker
@needs_docker
@pytest.mark.anyio
async def test_container_lifecycle_labels_and_die_events():
    from selfieless.orchestrator.drivers.docker import DockerDriver, LABEL_PORT, LABEL_SERVICE

    import httpx

    port = free_port_range(1)[0]
    d = DockerDriver("selfieless-test")
    h = await d.start(LaunchSpec(stack="selfieless-test", service="web", host_port=port, image="nginx:alpine",
                                 container_port=80))
    try:
        assert "web" in h.id and h.port == port
        c = d.client.containers.get(h.id)
        assert c.labels[LABEL_SERVICE] == "web" and c.labels[LABEL_PORT] == str(port)

        async def up():
            try:
                async with httpx.AsyncClient() as cl:
                    return (await cl.get(f"http://127.0.0.1:{port}/")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(up, 30, what="nginx container")
        assert [x.id for x in await d.list()] == [h.id]
        exits = d.exits()
        await asyncio.to_thread(c.kill)
        ev = await asyncio.wait_for(exits.__anext__(), 10)
        assert ev.replica_id == h.id and ev.service == "web"
    finally:
        await d.stop(h, grace=1)
        await d.close()
    assert await d.list() == []


# --- the docker driver against a fake SDK client (what it asks the engine for) ----------------

import queue  # noqa: E402


class FakeContainer:
    def __init__(self, client, name, image, labels, ports, environment):
        self.client, self.name, self.image, self.labels = client, name, image, labels
        self.ports, self.environment = ports, environment
        self.id = f"{abs(hash(name)):x}" * 4
        self.status = "running"
        self.attrs = {"Created": "2026-01-01T00:00:00.123456789Z"}

    def stop(self, timeout=10):
        self.client.calls.append(("stop", self.name, timeout))
        self.status = "exited"

    def kill(self):
        self.status = "exited"
        self.client.events_q.put({"Actor": {"Attributes": {"name": self.name, "exitCode": "137", **self.labels}}})

    def remove(self, force=False):
        self.client.calls.append(("remove", self.name))
        self.client.by_name.pop(self.name, None)


class FakeContainers:
    def __init__(self, client):
        self.client = client

    def run(self, image, name, detach, labels, ports, environment, **kw):
        assert detach and "command" not in kw
        c = FakeContainer(self.client, name, image, labels, ports, environment)
        self.client.by_name[name] = c
        return c

    def get(self, name):
        import docker.errors

        try:
            return self.client.by_name[name]
        except KeyError:
            raise docker.errors.NotFound(name) from None

    def list(self, all=False, filters=None):
        key, value = filters["label"].split("=")
        return [c for c in self.client.by_name.values() if c.labels.get(key) == value]


class FakeEvents:
    def __init__(self, q):
        self.q = q

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            yield item

    def close(self):
        self.q.put(None)


class FakeDockerClient:
    def __init__(self):
        self.by_name, self.calls, self.events_q = {}, [], queue.Queue()
        self.containers = FakeContainers(self)
        self.event_filters = None

    def events(self, decode, filters):
        self.event_filters = filters
        return FakeEvents(self.events_q)


@pytest.mark.anyio
async def test_docker_driver_labels_ports_names_and_die_events():
    from selfieless.orchestrator.drivers.docker import LABEL_PORT, LABEL_SERVICE, LABEL_STACK, DockerDriver

    client = FakeDockerClient()
    d = DockerDriver("selfieless", client=client)
    h = await d.start(LaunchSpec(stack="selfieless", service="acts", host_port=8003, image="acts:latest",
                                 container_port=80, command=["ignored"], environment={"A": "1"}))
    c = client.by_name[h.id]
    assert h.id.startswith("selfieless-acts-8003-") and h.port == 8003 and h.service == "acts"
    assert c.labels == {LABEL_STACK: "selfieless", LABEL_SERVICE: "acts", LABEL_PORT: "8003"}
    assert c.ports == {"80/tcp": ("0.0.0.0", 8003)} and c.environment == {"A": "1"} and c.image == "acts:latest"
    assert client.event_filters["event"] == "die" and client.event_filters["label"] == f"{LABEL_STACK}=selfieless"
    # A second driver (restarted orchestrator) finds it by label.
    assert [x.id for x in await DockerDriver("selfieless", client=client).list()] == [h.id]
    exits = d.exits()
    c.kill()
    ev = await asyncio.wait_for(exits.__anext__(), 5)
    assert (ev.replica_id, ev.service, ev.port, ev.exit_code) == (h.id, "acts", 8003, 137)
    await d.stop(h, grace=2)
    assert ("stop", h.id, 2) in client.calls and ("remove", h.id) in client.calls
    assert await d.list() == []
    await d.close()


@pytest.mark.anyio
async def test_docker_driver_removes_dead_containers_on_list():
    from selfieless.orchestrator.drivers.docker import DockerDriver

    client = FakeDockerClient()
    d = DockerDriver("s", client=client)
    h = await d.start(LaunchSpec(stack="s", service="users", host_port=8100, image="users:latest"))
    client.by_name[h.id].status = "exited"
    assert await d.list() == [] and h.id not in client.by_name
    await d.close()
