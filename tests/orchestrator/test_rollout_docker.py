"""Rolling replacement, rollback and scale to zero with the docker driver: real acts containers
behind the real gateway, under a steady GET + POST load that must see no failure.

The new versions are tiny images built offline FROM the local acts:latest under a test tag (a
label, or a CMD that breaks it), so rebuilding that tag is exactly "a rebuilt acts:latest": same
name, new image id. Skipped (saying how to get them) without an engine or the images.
"""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import pytest

from selfieless.orchestrator.apply_exec import apply_stack
from selfieless.orchestrator.assemble import start_system
from selfieless.orchestrator.stack import parse_stack

from orch_helpers import kinds, wait_until
from support.loads import WriteLoad
from support.docker_engine import require_docker
from support.ports import free_port_range

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.timeout(600)]

BROKEN = {
    "exits": ["python3", "-c", "raise SystemExit(3)"],
    # Serves HTTP, but 404 on the health path.
    "unhealthy": ["python3", "-m", "http.server", "80"],
}


@pytest.fixture
def engine():
    require_docker("acts:latest", "selfieless/mariadb:latest")
    import docker

    client = docker.from_env(timeout=120)
    built: list[str] = []
    yield client, built
    for image_id in built:
        try:
            client.images.remove(image_id, force=True)
        except docker.errors.APIError:
            pass
    client.close()


def build_acts(engine, tag: str, version: str, cmd: list[str] | None = None) -> str:
    """`tag` rebuilt FROM acts:latest with a version label (and a CMD when given); its image id."""
    client, built = engine
    lines = ["FROM acts:latest", f"LABEL selfieless.test.version={version}"]
    if cmd:
        lines.append("CMD " + json.dumps(cmd))
    image, _ = client.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True,
                                   network_mode="none")
    built.append(image.id)
    return image.id


def docker_stack(name: str, image: str, *, mariadb: bool, **svc):
    ports = free_port_range(10)
    acts = {
        "image": image,
        "container_port": 80,
        "host_ports": f"{ports[0]}-{ports[-1]}",
        "routes": ["/api/v1"],
        "environment": {"SELFIELESS_DATABASE_URL": "sqlite:////tmp/acts.db"},
        "health": {"path": "/api/v1/_health", "interval": 0.5, "timeout": 1, "start_grace": 15},
        "replicas": {"initial": 3, "min": 3, "max": 10},
        "autoscale": {"policy": "none"},
        "drain_timeout": 5,
        "update": {"monitor": 1},
        **svc,
    }
    data = {"name": name, "driver": "docker", "network": name,
            "gateway": {"host": "127.0.0.1", "port": 0, "limits": {"no_replica_wait": 30}},
            "services": {"acts": acts}}
    if mariadb:
        # Every replica, old and new, writes to one database: what answered 201 must stay.
        data["dependencies"] = {"db": {
            "image": "selfieless/mariadb:latest", "container_port": 3306, "host_port": free_port_range(1)[0],
            "health": {"interval": 1, "timeout": 1, "failure_threshold": 3, "start_grace": 120},
            "stop_timeout": 10}}
        acts["depends_on"] = ["db"]
        acts["environment"] = {"SELFIELESS_DATABASE_URL": f"mysql://selfieless:selfieless@{name}-db:3306/acts"}
    return parse_stack(data)


def containers(engine, stack: str) -> dict[str, str]:
    """Running acts containers of `stack`: name -> the image id it was created from."""
    client, _ = engine
    found = client.api.containers(filters={"label": [f"selfieless.stack={stack}", "selfieless.service=acts"]})
    return {c["Names"][0].lstrip("/"): c["ImageID"] for c in found}


def event_tail(orch, n: int = 60) -> str:
    """The orchestrator's last `n` events, one per line: what a failed rollout assertion shows."""
    return "\n".join(f"{e.kind:10} {e.service or '-'}/{e.replica or '-'}: {e.reason}" for e in orch.events.since(0)[-n:])


def ready_names(orch) -> set[str]:
    return {r.id for r in orch.replicas_of("acts") if r.state.value == "ready"}


async def test_a_rebuilt_image_with_the_same_tag_rolls_every_replica_under_writes(tmp_path, engine):
    name = f"rollw{free_port_range(1)[0]}"
    tag = f"selfieless-test/acts-{name}:latest"
    v1 = build_acts(engine, tag, "1")
    stack = docker_stack(name, tag, mariadb=True)
    system = await start_system(stack, tmp_path)
    orch = system.orchestrator
    load = None
    try:
        await orch.wait_converged(240)
        assert set(containers(engine, stack.name).values()) == {v1}
        before = ready_names(orch)
        load = WriteLoad(f"http://127.0.0.1:{system.gateway.port}").start()
        await wait_until(lambda: len(load.created) >= 20, 60, what="writes before the rollout")
        # Built off the event loop: the orchestrator, the gateway and the load share it.
        v2 = await asyncio.to_thread(build_acts, engine, tag, "2")
        assert v2 != v1
        # The rollout's own deadline ends before the test's, so a stuck one fails with its events.
        result = await apply_stack(orch, stack, timeout=300)
        await load.stop()
        assert result.ok, (result, event_tail(orch))
        assert [r["outcome"] for r in result.rollouts] == ["complete"]
        assert any("new content" in line for line in result.actions), result.actions
        assert load.failures == [] and load.ok > 0
        assert await load.missing() == [] and len(load.created) > 20
        now = containers(engine, stack.name)
        assert len(now) == 3 and set(now.values()) == {v2}
        assert not set(now) & before
        assert sorted(r.port for r in orch.replicas_of("acts")) == list(stack.services["acts"].host_ports.ports[:3])
        # An old replica was only ever drained after a new one had joined the rotation.
        events = [e for e in orch.events.since(0) if e.service == "acts"]
        first_drain = next(i for i, e in enumerate(events) if e.kind == "drained")
        assert sum(1 for e in events[:first_drain] if e.kind == "ready") >= 4
        # Nothing rebuilt since: applying the same file again changes nothing.
        again = await apply_stack(orch, stack, timeout=60)
        assert again.ok and again.actions == [], again
    finally:
        if load is not None:
            await load.stop()
        await system.stop()


@pytest.mark.parametrize("broken", ["exits", "unhealthy"])
async def test_a_broken_rebuild_is_rolled_back_to_the_old_image_and_no_old_replica_stops(tmp_path, engine, broken):
    name = f"rollb{free_port_range(1)[0]}"
    tag = f"selfieless-test/acts-{name}:latest"
    v1 = build_acts(engine, tag, "1")
    stack = docker_stack(name, tag, mariadb=False)
    system = await start_system(stack, tmp_path)
    orch = system.orchestrator
    load = None
    try:
        await orch.wait_converged(180)
        before = containers(engine, stack.name)
        assert set(before.values()) == {v1} and set(before) == ready_names(orch)
        load = WriteLoad(f"http://127.0.0.1:{system.gateway.port}").start()
        await wait_until(lambda: load.ok >= 20, 60, what="answers before the rollout")
        await asyncio.to_thread(build_acts, engine, tag, "2-" + broken, BROKEN[broken])
        result = await apply_stack(orch, stack, timeout=300)
        await asyncio.sleep(1)
        await load.stop()
        assert not result.ok and [r["outcome"] for r in result.rollouts] == ["rolled_back"], result
        assert "rolled back" in result.reason
        assert load.failures == [] and load.ok > 0
        # The old containers served throughout and still do; none was drained or stopped.
        assert containers(engine, stack.name) == before
        assert ready_names(orch) == set(before)
        assert "drained" not in kinds(orch, "acts")
        assert "rollback" in kinds(orch, "acts")
        # From now on the service runs (and would restart) the old content by its id, not the tag.
        assert orch.services["acts"].spec.image == v1
    finally:
        if load is not None:
            await load.stop()
        await system.stop()


async def test_scale_to_zero_then_a_burst_of_20_is_all_answered(tmp_path, engine):
    stack = docker_stack(f"rollz{free_port_range(1)[0]}", "acts:latest", mariadb=False,
                         replicas={"initial": 1, "min": 0, "max": 3},
                         autoscale={"policy": "rate", "target_rps_per_replica": 1000, "window_seconds": 0.5,
                                    "scale_in_delay": 0.5, "scale_to_zero_after": 1.0})
    system = await start_system(stack, tmp_path)
    orch = system.orchestrator
    try:
        await orch.wait_converged(180)
        await wait_until(lambda: orch.services["acts"].desired == 0 and not orch.services["acts"].replicas,
                         60, what="scale to zero")
        assert containers(engine, stack.name) == {}
        url = f"http://127.0.0.1:{system.gateway.port}/api/v1/acts/count"
        async with httpx.AsyncClient(trust_env=False, timeout=60) as c:
            answers = await asyncio.gather(*(c.get(url) for _ in range(20)))
        assert [r.status_code for r in answers] == [200] * 20
        assert len(containers(engine, stack.name)) == 1
        assert any("scale from zero" in e.reason for e in orch.events.since(0) if e.kind == "scaled")
    finally:
        await system.stop()


async def test_a_spare_replica_starts_without_the_cpu_boost(engine):
    """A rollout's start-first replica (start_boost off) gets the normal CPU weight from the start."""
    from selfieless.orchestrator.drivers.base import LaunchSpec
    from selfieless.orchestrator.drivers.docker import CPU_SHARES, START_CPU_BOOST, DockerDriver

    port, other = free_port_range(2)
    stack = f"rolls{port}"
    d = DockerDriver(stack)
    handles = []
    try:
        for p, boost in ((port, False), (other, True)):
            handles.append(await d.start(LaunchSpec(stack=stack, service="acts", host_port=p, image="acts:latest",
                                                    start_boost=boost)))
        shares = [d.client.api.inspect_container(h.id)["HostConfig"]["CpuShares"] for h in handles]
        assert shares == [CPU_SHARES, CPU_SHARES * START_CPU_BOOST]
    finally:
        for h in handles:
            await d.stop(h, grace=0)
        await d.cleanup()
        await d.close()
