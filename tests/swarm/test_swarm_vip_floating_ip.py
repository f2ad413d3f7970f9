"""The floating IP as part of the product (`swarm: {floating_ip: ...}`): `selfieless up` runs
keepalived on every node as the stack's global service `<stack>-vip`, following each node's own
gateway; `down` removes it and the address with it.

A stack of one small service (the web front end: the floating IP follows gateways, not replicas),
with HTTPS from a certificate file (the control plane reads it and sends it to every node's
gateway: issue "lose any node", shared certificates) and a floating IP of its own, 10.211.0.101 with router id 52: the lab's own `vip start` (which
test_swarm_vip.py and the manager-loss test use) is .100 with id 51, so the two never meet. The
address answers the gateway's `/`; cut off the node that holds it and it answers from another
node, and serves the same certificate there; `down` leaves no `<stack>-vip` service and no node holding the address (keepalived gives it
up on Swarm's SIGTERM). First, a node joins the swarm (the lab grows by one: left so, for the
manager-loss module builds its own): the control plane tells every keepalived (the service
updated), the new node runs one and a gateway, and it takes the address when every other node is
cut off. About 80 s with the lab's bring-up and the join.
"""

from __future__ import annotations

import random
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import trustme
import yaml

from support.certs import write_pair
from support.ports import free_port
from support.processes import wait_until
from swarm_support import SwarmUp, gateway_answers, remove_stack

STACK = f"slfip{random.randrange(10**5)}"
ROUTER_ID = 52
HOST = 101   # the floating IP is the lab's subnet's .101
SITE = "site.test"


def _stack_file(path: Path, name: str, address: str, tls: dict) -> Path:
    path.write_text(yaml.safe_dump({
        "name": name, "driver": "swarm", "network": name,
        "gateway": {"tls": tls},
        "swarm": {"floating_ip": {"address": address, "router_id": ROUTER_ID, "advert": 0.5}},
        "services": {"web": {
            "image": "web:latest", "container_port": 80, "routes": ["/ui"],
            "health": {"path": "/ui/_health", "interval": "1s", "timeout": "1s", "failure_threshold": 1},
            "replicas": {"initial": 1, "min": 1, "max": 1}, "autoscale": {"policy": "none"},
        }},
    }, sort_keys=False))
    return path


def serial(address: str, port: int, ctx: ssl.SSLContext) -> str | None:
    """The certificate the gateway at `address` shows for SITE (None: no handshake)."""
    try:
        with socket.create_connection((address, port), 2) as raw, ctx.wrap_socket(raw, server_hostname=SITE) as s:
            return s.getpeercert()["serialNumber"]
    except (OSError, ssl.SSLError):
        return None


def holders(lab, vip: str) -> list[int]:
    """The nodes whose namespace holds `vip` now (`ip -n sllab-nN addr`), cut off or not."""
    out = []
    for n in lab.nodes:
        r = subprocess.run(["ip", "-n", f"sllab-n{n}", "-4", "-o", "addr", "show"], capture_output=True,
                           text=True, timeout=10)
        if f" {vip}/" in r.stdout:
            out.append(n)
    return out


@pytest.fixture(scope="module")
def deployment(lab, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fip")
    prefix = lab.env["SWARM_LAB_HOST_ADDRESS"].rsplit(".", 1)[0]
    vip = f"{prefix}.{HOST}"
    ca = trustme.CA()
    pair = write_pair(ca, tmp, "site", SITE)
    tls_port = free_port(avoid=range(29999, 32768))   # published on every node, as the gateway's port
    tls = {"port": tls_port, "cert": pair.cert, "key": pair.key}
    up = SwarmUp(_stack_file(tmp / "stack.yaml", STACK, f"{vip}/24", tls), tmp / "state", lab.manager).start()
    up.vip, up.tls_port = vip, tls_port
    up.tls_ctx = ssl.create_default_context()
    ca.configure_trust(up.tls_ctx)
    client = lab.client()
    try:
        up.wait_converged(300)
        yield up
    finally:
        for n in lab.nodes:
            lab.heal(n)
        up.stop_quietly()
        remove_stack(client, STACK)
        client.close()


def test_a_node_that_joins_gets_a_gateway_and_joins_the_floating_ip(deployment, lab):
    """The control plane checks the floating IP's service against the swarm's nodes every 5 s: a
    node that joins is told to every keepalived, runs one and a gateway, and can hold the address
    (shown by cutting every other node: only the new one is left to take it)."""
    up = deployment
    url = f"http://{up.vip}:{up.gateway_port}/"
    wait_until(lambda: gateway_answers(url, 1.0) and holders(lab, up.vip), 120, 0.2,
               what=f"the floating IP {up.vip} answering the gateway's /:\n{up.log()}")
    new = len(lab.nodes) + 1
    lab.grow(new)
    t0 = time.monotonic()
    address = lab.address(new)
    client = lab.client()
    try:
        seen: list = []

        def told_and_running() -> bool:
            svc = client.api.inspect_service(f"{STACK}-vip")
            command = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Command"]
            peers = command[command.index("--nodes") + 1].split(",")
            tasks = client.api.tasks(filters={"service": f"{STACK}-vip", "desired-state": "running"})
            update = (svc.get("UpdateStatus") or {}).get("State")
            states = sorted((t["NodeID"][:6], t["Status"]["State"], t["Status"].get("Err", "")) for t in tasks)
            seen[:] = [peers, update, states]
            return (set(peers) == {lab.address(n) for n in lab.nodes} and update in (None, "completed")
                    and len([t for t in tasks if t["Status"]["State"] == "running"]) == len(lab.nodes))
        try:
            wait_until(told_and_running, 180, 0.5, what=f"{STACK}-vip updated to {len(lab.nodes)} nodes, running on each")
        except TimeoutError as e:
            raise AssertionError(f"{e}: peers, update, tasks {seen}\n{up.log()[-3000:]}") from None
    finally:
        client.close()
    wait_until(lambda: gateway_answers(f"http://{address}:{up.gateway_port}/", 1.0), 120, 0.5,
               what=f"a gateway answering on the new node {new}")
    wait_until(lambda: gateway_answers(url, 1.0) and len(holders(lab, up.vip)) == 1, 60, 0.2,
               what=f"one node holding {up.vip} after the update")
    joined = time.monotonic() - t0
    others = [n for n in lab.nodes if n != new]
    for n in others:
        lab.cut(n)
    t1 = time.monotonic()
    try:
        wait_until(lambda: gateway_answers(url, 1.0) and new in holders(lab, up.vip), 30, 0.1,
                   what=f"the floating IP answering from node {new}, the only node left")
        print(f"\nfloating IP (product): node {new} joined; every keepalived told and running, and its gateway "
              f"answering, {joined:.1f} s later; the others cut, it held the address after "
              f"{time.monotonic() - t1:.2f} s")
    finally:
        for n in others:
            lab.heal(n)
    lab.wait_all_ready(via=1)
    wait_until(lambda: gateway_answers(url, 1.0) and len(holders(lab, up.vip)) == 1, 60, 0.2,
               what=f"one node holding {up.vip} after the heal")


def test_the_floating_ip_moves_off_a_cut_node_and_down_removes_it_everywhere(deployment, lab):
    up = deployment
    url = f"http://{up.vip}:{up.gateway_port}/"
    first = wait_until(lambda: gateway_answers(url, 1.0) and holders(lab, up.vip), 120, 0.2,
                       what=f"the floating IP {up.vip} answering the gateway's /:\n{up.log()}")
    assert len(first) == 1, f"more than one node holds {up.vip}: {first}"
    victim = first[0]
    # Every node's gateway serves the one certificate the control plane read (and sent them).
    served = wait_until(lambda: (lambda s: s if None not in s.values() else None)(
        {lab.address(n): serial(lab.address(n), up.tls_port, up.tls_ctx) for n in lab.nodes}), 60, 0.5,
        what=f"every node's gateway serving HTTPS for {SITE}")
    assert len(set(served.values())) == 1, served
    assert serial(up.vip, up.tls_port, up.tls_ctx) in served.values()

    lab.cut(victim)
    t0 = time.monotonic()
    try:
        moved = wait_until(lambda: gateway_answers(url, 1.0) and [n for n in holders(lab, up.vip) if n != victim],
                           60, 0.1, what=f"the floating IP answering from a node other than {victim}")
        took = time.monotonic() - t0
        print(f"\nfloating IP (product, {STACK}-vip): node {victim} cut, {up.vip} answered from node {moved[0]} "
              f"after {took:.2f} s")
        assert took <= 30.0
        assert serial(up.vip, up.tls_port, up.tls_ctx) in served.values()   # the same certificate there
    finally:
        lab.heal(victim)

    client = lab.client()
    try:
        assert [s.name for s in client.services.list(filters={"name": f"{STACK}-vip"})] == [f"{STACK}-vip"]
        r = up.down()
        assert r.returncode == 0, r.stdout + r.stderr
        left = [s.name for s in client.services.list() if s.name.startswith(f"{STACK}-")]
        assert left == [], left
    finally:
        client.close()
    # Every keepalived was stopped by Swarm's SIGTERM, and gave the address up as it exited.
    t1 = time.monotonic()
    wait_until(lambda: holders(lab, up.vip) == [], 60, 0.2, what=f"no node holding {up.vip} after down")
    print(f"floating IP: after down, no node holds {up.vip} ({time.monotonic() - t1:.1f} s after `down` returned)")
