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
