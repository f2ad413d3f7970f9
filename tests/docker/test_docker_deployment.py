"""The whole Docker deployment through `selfieless up --driver docker` (a renamed copy of the bundled
docker stack on free ports, so it never touches a real `selfieless` stack or its data): MariaDB
shared by every acts container, replacement of a killed container on the same port, adoption by a
restarted orchestrator, and `down` leaving nothing behind."""

from __future__ import annotations

import random
import subprocess
import time

import httpx
import pytest

from docker_stack_support import Up, http_ok, inspect, stack_containers, make_stack_file
from support.processes import wait_until as wait_for

STACK = f"sltest{random.randrange(10**6)}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docker-deployment")
    up = Up(make_stack_file(tmp, STACK), tmp / "state").start()
    try:
        up.converge_time = up.wait_converged(180)
        yield up
    finally:
        up.stop_quietly()
        # Whatever a failed test left behind: containers, network, the test's data volume.
        for c in stack_containers(STACK):
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
        subprocess.run(["docker", "network", "rm", STACK], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", f"{STACK}-db-data"], capture_output=True)


def _container(up: Up, service: str, port: int) -> str:
    [rep] = [r for r in up.replicas(service) if r["port"] == port]
    return rep["id"]


def test_up_brings_the_course_deployment_up(deployment):
    up = deployment
    print(f"\nselfieless up --driver docker converged in {up.converge_time:.1f} s")
    st = up.status()
    assert st["driver"] == "docker" and st["converged"]
    assert {n: s["ready"] for n, s in st["services"].items()} == {"db": 1, "users": 1, "acts": 1, "web": 1}
    names = {inspect(c)["Name"].lstrip("/"): inspect(c) for c in stack_containers(STACK)}
    assert f"{STACK}-db" in names and not [n for n in names if "acts" in n and n.startswith(f"{STACK}-db")]
    acts = [n for n in names if "-acts-" in n]
    assert len(acts) == 1
    a = names[acts[0]]
    port = st["services"]["acts"]["replicas"][0]["port"]
    # The driver's labels, beside those the image itself carries (the base image's package list).
    image_labels = inspect(a["Image"])["Config"]["Labels"] or {}
    assert {k: v for k, v in a["Config"]["Labels"].items() if k not in image_labels} == {
        "selfieless.stack": STACK, "selfieless.service": "acts", "selfieless.port": str(port)}
    assert a["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
    assert set(a["NetworkSettings"]["Networks"]) == {STACK}
    db = names[f"{STACK}-db"]
    assert db["HostConfig"]["PortBindings"]["3306/tcp"][0]["HostIp"] == "127.0.0.1"
    assert db["Config"]["User"] == "mysql"
    for svc in ("users", "acts", "web"):
        [c] = [v for n, v in names.items() if f"-{svc}-" in n]
        assert c["Config"]["User"] == "app"
        wait_for(lambda c=c: inspect(c["Id"])["State"]["Health"]["Status"] == "healthy", 30,
                 what=f"{svc} healthy in docker")
    # The gateway serves the web page and the API.
    assert http_ok(f"{up.gateway}/ui/_health")
    assert httpx.get(f"{up.gateway}/api/v1/categories", timeout=5).status_code < 300


def test_an_act_posted_through_the_gateway_is_served_by_every_acts_container(deployment):
    up = deployment
    _scale(up, 3)
    wait_for(lambda: len(up.ready_ports("acts")) == 3, 60, what="3 acts replicas")
    gw = up.gateway
    user, category, act_id = f"u{random.randrange(10**9)}", f"c{random.randrange(10**9)}", random.randrange(10**12)
    with httpx.Client(timeout=10) as c:
        # The acts container checks the username with the users service, through the gateway on the host.
        assert c.post(f"{gw}/api/v1/users", json={"username": user, "password": "a" * 40}).status_code == 201
        assert c.post(f"{gw}/api/v1/categories", json=[category]).status_code == 201
        act = {"actId": act_id, "username": user, "timestamp": "24-11-2026:00-00-00", "caption": "docker",
               "categoryName": category, "imgB64": "aGVsbG8="}
        assert c.post(f"{gw}/api/v1/acts", json=act).status_code == 201
        ports = up.ready_ports("acts")
        for port in ports:  # each container's own published port
            r = c.get(f"http://127.0.0.1:{port}/api/v1/categories/{category}/acts")
            assert r.status_code == 200, (port, r.status_code)
            assert [a["actId"] for a in r.json()] == [act_id]
    _scale(up, 1)
    wait_for(lambda: len(up.replicas("acts")) == 1 and up.status()["converged"], 60, what="scale-in to 1")


def test_docker_kill_is_replaced_on_the_same_port_quickly(deployment):
    """Each acts container killed once (one per port: a second kill on the same port within a minute
    is a crash loop and backs off on purpose); timed from the kill to the new container answering
    its health check on the same host port."""
    import docker

    up = deployment
    _scale(up, 3)
    wait_for(lambda: len(up.ready_ports("acts")) == 3 and up.status()["converged"], 60, what="3 acts replicas")
    client = docker.from_env()
    timings = {}
    seen = max((e["id"] for e in up.events()), default=0)
    for port in up.ready_ports("acts"):
        old = _container(up, "acts", port)
        container = client.containers.get(old)
        t0 = time.monotonic()
        container.kill()
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/api/v1/_health", 0.5), 30, 0.01, what="replacement")
        timings[port] = time.monotonic() - t0
        wait_for(lambda: port in up.ready_ports("acts") and _container(up, "acts", port) != old, 10,
                 what="the replacement in the status")
        assert client.containers.get(_container(up, "acts", port)).attrs["HostConfig"]["PortBindings"] == \
            {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
        time.sleep(0.5)
    client.close()
    print("\ndocker kill -> replacement serving on the same port: " +
          ", ".join(f"{p}: {t:.2f} s" for p, t in timings.items()))
    kinds = [e["kind"] for e in up.events() if e.get("service") == "acts" and e["id"] > seen]
    # Each kill is seen either by the engine's die event ("exited") or, first, by the kept-alive
    # health probe's connection being reset ("unhealthy"); whichever comes first wins the race.
    detected = kinds.count("exited") + kinds.count("unhealthy")
    assert detected >= 3 and kinds.count("replaced") >= 3, \
        [(e["kind"], e.get("reason")) for e in up.events() if e.get("service") == "acts"]
    # A first death is replaced at once, not after a crash-loop delay: no backoff for any of them.
    # How fast is a benchmark's bar (benchmarks/failover.py --driver docker: median <= 1.5 s); here
    # a deadline only, generous for a loaded 2-core machine.
    assert "backoff" not in kinds, [(e["kind"], e.get("reason")) for e in up.events() if e.get("service") == "acts"]
    assert max(timings.values()) <= 15.0, timings
    _scale(up, 1)
    wait_for(lambda: len(up.replicas("acts")) == 1 and up.status()["converged"], 60, what="scale-in to 1")


def test_restarted_orchestrator_adopts_containers_without_duplicates(deployment):
    up = deployment
    before = sorted(stack_containers(STACK, all=False))
    assert len(before) == 4  # db, users, acts, web
    up.kill9()  # the orchestrator dies; its containers keep running
    assert sorted(stack_containers(STACK, all=False)) == before
    new = Up(up.stack_path, up.state_dir, gateway_port=up.gateway_port)
    new.admin_port = up.admin_port
    new.start()
    deployment.proc = new.proc  # the module fixture stops whichever is current
    new.wait_converged(60)
    assert sorted(stack_containers(STACK, all=False)) == before
    adopted = [e for e in new.events() if e["kind"] == "adopted"]
    assert len(adopted) == 4 and not [e for e in new.events() if e["kind"] in ("start", "replaced")]
    assert httpx.get(f"{new.gateway}/api/v1/acts/count", timeout=5).status_code == 200


def test_down_leaves_no_container_or_network_and_keeps_data_unless_asked(deployment, tmp_path):
    up = deployment
    r = up.down()
    assert r.returncode == 0, r.stderr
    assert stack_containers(STACK) == []
    nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"name=^{STACK}$"],
                          capture_output=True, text=True).stdout.split()
    assert nets == []
    vols = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=selfieless.stack={STACK}"],
                          capture_output=True, text=True).stdout.split()
    assert vols == [f"{STACK}-db-data"]  # the database's data survives a plain `down`
    # Up again on the same data, then `down --volumes` removes it too.
    again = Up(up.stack_path, tmp_path / "state2").start()
    deployment.proc = again.proc
    again.wait_converged(120)
    r = again.down("--volumes")
    assert r.returncode == 0 and f"{STACK}-db-data" in r.stdout, r.stdout + r.stderr
    assert stack_containers(STACK) == []
    vols = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=selfieless.stack={STACK}"],
                          capture_output=True, text=True).stdout.split()
    assert vols == []


def _scale(up: Up, n: int) -> None:
    import sys

    r = subprocess.run([sys.executable, "-m", "selfieless", "scale", "acts", str(n), "--state-dir", str(up.state_dir)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
