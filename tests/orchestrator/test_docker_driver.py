"""The docker driver: against a real engine with the project's own images (skipped, saying how to
get them, when there is no engine or no image), against a fake SDK client (what it asks the
engine for), and the stack's `dependencies` (the database of the Docker deployment) run by the
orchestrator."""

import asyncio
import sys
import time

import pytest

from selfieless.orchestrator.drivers import make_driver, resolve_driver_kind
from selfieless.orchestrator.drivers.base import LaunchSpec

from orch_helpers import echo_command, wait_until
from support.docker_engine import require_docker
from support.ports import free_port_range

needs_web_image = pytest.mark.usefixtures("web_image")


@pytest.fixture
def web_image():
    """Skip without an engine or the image (saying how to get them); fail if the engine is broken."""
    require_docker("web:latest")


def test_no_engine_reason_is_readable(tmp_path, monkeypatch):
    from selfieless.orchestrator.drivers.docker import docker_available

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert docker_available() == f"no Docker engine answers at unix://{tmp_path}/no-engine.sock " \
                                 f"(no such socket: is dockerd running?)"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert docker_available() == "no Docker engine answers at tcp://127.0.0.1:1 (connection refused: is dockerd running?)"


def test_auto_picks_process_without_an_engine(tmp_path, monkeypatch):
    # Pointed at a socket nobody serves, whether or not this machine runs an engine.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert resolve_driver_kind("auto") == "process"
    assert make_driver("t", "auto", tmp_path).name == "process"


@pytest.mark.docker
@needs_web_image
@pytest.mark.anyio
async def test_container_lifecycle_labels_and_die_events():
    """The real engine: start our web image, labels and published port, list, die event, stop."""
    from selfieless.orchestrator.drivers.docker import (CPU_SHARES, LABEL_PORT, LABEL_SERVICE, LABEL_STACK,
                                                        START_CPU_BOOST, DockerDriver)

    import httpx

    port = free_port_range(1)[0]
    stack = f"selfieless-test-{port}"
    d = DockerDriver(stack)
    h = await d.start(LaunchSpec(stack=stack, service="web", host_port=port, image="web:latest",
                                 container_port=80))
    try:
        assert "web" in h.id and h.port == port
        c = d.client.containers.get(h.id)
        # The driver's labels, beside those the image itself carries (the base image's package list).
        image_labels = d.client.images.get("web:latest").labels or {}
        ours = {k: v for k, v in c.labels.items() if k not in image_labels}
        assert ours == {LABEL_STACK: stack, LABEL_SERVICE: "web", LABEL_PORT: str(port)}
        assert c.attrs["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
        assert c.attrs["Config"]["User"] == "app"  # the image runs as a non-root user
        assert c.attrs["HostConfig"]["CpuShares"] == CPU_SHARES * START_CPU_BOOST
        await d.ready(h)
        assert d.client.api.inspect_container(h.id)["HostConfig"]["CpuShares"] == CPU_SHARES

        async def up():
            try:
                async with httpx.AsyncClient() as cl:
                    return (await cl.get(f"http://127.0.0.1:{port}/ui/_health")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(up, 30, what="web container")
        assert [x.id for x in await d.list()] == [h.id]
        exits = d.exits()
        t0 = time.monotonic()
        await asyncio.to_thread(c.kill)
        ev = await asyncio.wait_for(exits.__anext__(), 10)
        assert ev.replica_id == h.id and ev.service == "web" and ev.port == port and ev.exit_code == 137
        assert time.monotonic() - t0 < 2  # from the event stream, not a poll
        assert h.detail in d._dead  # the engine's event names it by the id the handle carries
    finally:
        await d.stop(h, grace=1)
        await d.close()
    assert await d.list() == []


@pytest.mark.docker
@needs_web_image
@pytest.mark.anyio
async def test_network_fixed_name_loopback_publish_and_cleanup():
    """What a dependency gets: a fixed name, its port on 127.0.0.1 only, the stack network (made
    once even when starts race), and cleanup() removing the network."""
    from selfieless.orchestrator.drivers.docker import DockerDriver

    ports = free_port_range(3)
    stack = f"selfieless-test-{ports[0]}"
    d = DockerDriver(stack)
    specs = [LaunchSpec(stack=stack, service=f"s{i}", host_port=p, image="web:latest", network=stack,
                        extra_hosts={"host.docker.internal": "host-gateway"}) for i, p in enumerate(ports[:2])]
    specs.append(LaunchSpec(stack=stack, service="dep", host_port=ports[2], image="web:latest", network=stack,
                            name=f"{stack}-dep", host_ip="127.0.0.1"))
    handles = await asyncio.gather(*(d.start(s) for s in specs))
    try:
        assert len(d.client.networks.list(names=[stack])) == 1
        dep = d.client.containers.get(f"{stack}-dep")
        assert dep.attrs["HostConfig"]["PortBindings"]["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(ports[2])}]
        s0 = d.client.containers.get(handles[0].id)
        assert "host.docker.internal:host-gateway" in s0.attrs["HostConfig"]["ExtraHosts"]
        assert stack in s0.attrs["NetworkSettings"]["Networks"]
    finally:
        for h in handles:
            await d.stop(h, grace=0)
        await d.cleanup()
        await d.close()
    assert d.client.networks.list(names=[stack]) == []
    assert await d.list() == []


# --- the docker driver against a fake SDK client (what it asks the engine for) ----------------

import queue  # noqa: E402


class FakeContainer:
    def __init__(self, client, name, image, labels, ports, environment, options):
        self.client, self.name, self.image, self.labels = client, name, image, labels
        self.ports, self.environment, self.options = ports, environment, options
        self.id = f"{abs(hash(name)):x}" * 4
        self.status = "running"
        self.attrs = {"Created": "2026-01-01T00:00:00.123456789Z"}

    def stop(self, timeout=10):
        self.client.calls.append(("stop", self.name, timeout))
        self.status = "exited"

    def kill(self):
        self.status = "exited"
        self.client.events_q.put({"id": self.id, "Actor": {"Attributes": {"name": self.name, "exitCode": "137",
                                                                           **self.labels}}})

    def remove(self, force=False):
        self.client.calls.append(("remove", self.name))
        self.client.by_name.pop(self.name, None)


class FakeContainers:
    def __init__(self, client):
        self.client = client

    def run(self, image, name, detach, labels, ports, environment, **kw):
        assert detach and "command" not in kw
        c = FakeContainer(self.client, name, image, labels, ports, environment, kw)
        self.client.by_name[name] = c
        return c

    def get(self, name):
        import docker.errors

        self.client.engine_free.wait()
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


class FakeApi:
    def __init__(self, client):
        self.client = client

    def update_container(self, name, cpu_shares):
        import docker.errors

        self.client.calls.append(("update", name, cpu_shares))
        if name not in self.client.by_name:
            raise docker.errors.NotFound(name)
        self.client.by_name[name].options["cpu_shares"] = cpu_shares


class FakeDockerClient:
    def __init__(self):
        import threading

        self.by_name, self.calls, self.events_q = {}, [], queue.Queue()
        self.containers = FakeContainers(self)
        self.api = FakeApi(self)
        self.event_filters = None
        self.engine_free = threading.Event()  # cleared: inspecting a container blocks (a busy engine)
        self.engine_free.set()

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
    # Reported dead: its port is free, so stop() returns at once, without asking the engine (which
    # is still busy with the exit), and the removal (no `docker stop` timeout) finishes in the
    # background; close() waits for it.
    client.engine_free.clear()
    await asyncio.wait_for(d.stop(h, grace=2), 1)
    assert ("remove", h.id) not in client.calls
    client.engine_free.set()
    await asyncio.wait_for(asyncio.gather(*d._removals), 5)
    assert ("remove", h.id) in client.calls and not [x for x in client.calls if x[0] == "stop"]
    assert await d.list() == []
    # A running one gets `docker stop` with the grace period, then removal; grace 0 only removes
    # with force (a kill).
    h2 = await d.start(LaunchSpec(stack="selfieless", service="acts", host_port=8004, image="acts:latest"))
    await d.stop(h2, grace=2)
    assert client.calls[-2:] == [("stop", h2.id, 2), ("remove", h2.id)]
    h3 = await d.start(LaunchSpec(stack="selfieless", service="acts", host_port=8005, image="acts:latest"))
    await d.stop(h3, grace=0)
    assert client.calls[-1] == ("remove", h3.id) and ("stop", h3.id, 0) not in client.calls
    await d.close()


@pytest.mark.anyio
async def test_docker_driver_boosts_cpu_until_ready():
    from selfieless.orchestrator.drivers.docker import CPU_SHARES, START_CPU_BOOST, DockerDriver

    assert START_CPU_BOOST > 1
    client = FakeDockerClient()
    d = DockerDriver("s", client=client)
    h = await d.start(LaunchSpec(stack="s", service="acts", host_port=8000, image="acts:latest"))
    options = client.by_name[h.id].options
    assert options["cpu_shares"] == CPU_SHARES * START_CPU_BOOST
    await d.ready(h)
    assert client.calls[-1] == ("update", h.id, CPU_SHARES) and options["cpu_shares"] == CPU_SHARES
    await d.stop(h, grace=0)
    await d.ready(h)  # gone meanwhile: nothing to take back, and no error
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


# --- dependencies: the stack model, and the orchestrator running one ---------------------------

def _dep_stack(ports, **dep_overrides):
    from selfieless.orchestrator.stack import parse_stack

    tcp_server = [sys.executable, "-c",
                  "import socket, sys, time; time.sleep(float(sys.argv[2])); s = socket.create_server(('127.0.0.1', "
                  "int(sys.argv[1]))); [s.accept() for _ in iter(int, 1)]", "{port}", "0.6"]
    dep = {"command": tcp_server, "container_port": 3306, "host_port": ports[-1],
           "health": {"interval": 0.1, "timeout": 0.5}, "stop_timeout": 1, **dep_overrides}
    svc = {"command": echo_command(), "host_ports": f"{ports[0]}-{ports[1]}", "routes": ["/api/v1"],
           "health": {"interval": 0.2, "timeout": 0.5}, "replicas": {"initial": 1, "min": 1, "max": 2},
           "depends_on": ["db"], "drain_timeout": 1}
    return parse_stack({"name": f"dep-{ports[0]}", "driver": "process", "gateway": {"port": 0},
                        "dependencies": {"db": dep}, "services": {"echo": svc}})


def test_stack_dependencies_are_validated():
    from selfieless.orchestrator.stack import BUNDLED_DOCKER_STACK, StackError, load_stack, parse_stack

    s = load_stack(BUNDLED_DOCKER_STACK)
    assert s.driver == "docker" and s.network == "selfieless" and list(s.dependencies) == ["db"]
    db = s.dependencies["db"]
    assert db.image == "selfieless/mariadb:latest" and db.volumes == {"selfieless-db-data": "/var/lib/mysql"}
    assert s.services["acts"].depends_on == ["db"] and s.services["acts"].host_ports.ports == range(8000, 8010)
    assert s.services["acts"].extra_hosts == {"host.docker.internal": "host-gateway"}
    assert "{gateway_port}" in s.variables["users_url"]
    assert s.gateway.host == "0.0.0.0" and "/api/v1" in s.routes() and "db" not in s.routes().values()
    bad = {"name": "x", "driver": "docker",
           "dependencies": {"db": {"container_port": 3306, "host_port": 8000},
                            "echo": {"image": "m", "container_port": 1, "host_port": 9999}},
           "services": {"echo": {"image": "a", "host_ports": "8000-8009", "depends_on": ["nope"]}}}
    with pytest.raises(StackError) as e:
        parse_stack(bad)
    text = str(e.value)
    for problem in ("dependencies.db.image: a dependency needs an `image`",):
        assert problem in text, text
    del bad["dependencies"]["db"]
    with pytest.raises(StackError) as e:
        parse_stack(bad)
    assert "dependencies.echo: also the name of a service" in str(e.value)
    assert "services.echo.depends_on: no dependency 'nope' (known: echo)" in str(e.value)


@pytest.mark.anyio
async def test_dependency_starts_first_stops_last_and_is_not_routed(tmp_path):
    """A dependency (here a bare TCP server that takes 0.6 s to listen) is ready before the service
    that depends on it starts; it never joins a gateway pool; it cannot be scaled; shutdown stops
    the service first."""
    from selfieless.orchestrator.assemble import start_system

    ports = free_port_range(3)
    stack = _dep_stack(ports)
    system = await start_system(stack, tmp_path, gateway_overrides={"host": "127.0.0.1"})
    orch, gw = system.orchestrator, system.gateway
    try:
        await orch.wait_converged(20)
        evs = [(e.kind, e.service) for e in orch.events.since(0)]
        assert evs.index(("ready", "db")) < evs.index(("start", "echo"))
        assert ("waiting", "echo") in evs
        st = orch.status()["services"]
        assert st["db"]["kind"] == "dependency" and st["echo"]["kind"] == "service"
        assert st["db"]["replicas"][0]["port"] == ports[-1] and st["db"]["replicas"][0]["in_pool"] is False
        assert "db" not in gw.pools and [v.port for v in gw.pool("echo").replicas] == [ports[0]]
        with pytest.raises(ValueError, match="dependency"):
            await orch.scale("db", 2)
        await orch.scale("echo", 2)
        await orch.wait_converged(20)
    finally:
        await system.stop()
    stops = [e.service for e in orch.events.since(0) if e.kind == "stopped"]
    assert stops == ["echo", "echo", "db"]


@pytest.mark.anyio
async def test_tcp_check_fails_when_a_proxy_accepts_and_closes():
    """Docker's port proxy accepts while nothing listens in the container, then closes: not ready."""
    from selfieless.orchestrator.health import tcp_probe

    async def close_at_once(reader, writer):
        writer.close()

    async def greet(reader, writer):
        writer.write(b"hello")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    s1 = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    s2 = await asyncio.start_server(greet, "127.0.0.1", 0)
    try:
        p1, p2 = s1.sockets[0].getsockname()[1], s2.sockets[0].getsockname()[1]
        assert (await tcp_probe("127.0.0.1", p1, 1.0))[0] is False
        assert await tcp_probe("127.0.0.1", p2, 1.0) == (True, "open")
        ok, detail = await tcp_probe("127.0.0.1", free_port_range(1)[0], 1.0)
        assert not ok and "connection failed" in detail
    finally:
        s1.close()
        s2.close()
