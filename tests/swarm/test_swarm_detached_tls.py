"""HTTPS with the control plane as a Swarm service (`up --driver swarm --detach`): certificates
read or issued once, by the control plane, and served by the gateway on every node.

The stack serves the web front end at two hosts: `files.test` from a certificate file on this
machine (which `up --detach` ships to the swarm as a secret of the control plane), `site.test`
from an ACME CA (pebble, on the host's lab address, its DNS answering node 2's address for every
name: the CA's HTTP-01 request reaches node 2's gateway, whichever node runs the control plane).
Every node's gateway serves both. The control plane's task is then replaced (a forced update: a
new task, without the old one's state directory): the new one takes the lease, restores the ACME
folder sealed in the swarm, and serves the same certificate without asking the CA again. `down
--swarm` leaves no secret or config of the stack. About 2 minutes.
"""

from __future__ import annotations

import json
import random
import socket
import ssl
import time
from pathlib import Path

import httpx
import trustme
import yaml

from detached_support import DetachedStack
from support.certs import write_pair
from support.pebble import run_pebble
from support.ports import free_port
from support.processes import wait_until

STACK = f"sltls{random.randrange(10**5)}"
FILES, SITE = "files.test", "site.test"


def _stack_file(path: Path, pair, tls_port: int, pebble: dict) -> Path:
    path.write_text(yaml.safe_dump({
        "name": STACK, "driver": "swarm", "network": STACK,
        "gateway": {"tls": {"port": tls_port, "certs": [{"cert": pair.cert, "key": pair.key}],
                            "acme": {"directory": pebble["directory"], "email": "ops@site.test",
                                     "ca_bundle": pebble["ca_bundle"]}}},
        "services": {"web": {
            "image": "web:latest", "container_port": 80, "routes": ["/ui"], "hosts": [SITE, FILES],
            "health": {"path": "/ui/_health", "interval": "1s", "timeout": "1s", "failure_threshold": 1},
            "replicas": {"initial": 1, "min": 1, "max": 1}, "autoscale": {"policy": "none"},
        }},
    }, sort_keys=False))
    return path


def serial(address: str, port: int, host: str, ctx: ssl.SSLContext) -> str | None:
    try:
        with socket.create_connection((address, port), 2) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
            return s.getpeercert()["serialNumber"]
    except (OSError, ssl.SSLError):
        return None


def issued(pebble: dict) -> int:
    """Certificates pebble issued so far (its log says each)."""
    return Path(pebble["log"]).read_text(errors="replace").count("Issued certificate serial")


def test_detached_control_plane_ships_files_issues_once_and_keeps_what_it_issued(lab, tmp_path):
    ca = trustme.CA()
    files_ctx = ssl.create_default_context()
    ca.configure_trust(files_ctx)
    pair = write_pair(ca, tmp_path, "files", FILES)
    host_address = lab.env["SWARM_LAB_HOST_ADDRESS"]
    stack = DetachedStack(lab, tmp_path / "stack.yaml", STACK)
    tls_port = free_port(avoid=range(min(stack.gateway_port, stack.admin_port) - 1, 32768))
    with run_pebble(tmp_path, http_port=stack.gateway_port, address=lab.address(2), listen=host_address) as pebble:
        _stack_file(stack.stack_path, pair, tls_port, pebble)
        with httpx.Client(verify=ssl.create_default_context(cafile=pebble["ca_bundle"]), timeout=10) as c:
            root = c.get(f"{pebble['mgmt']}/roots/0").text
        acme_ctx = ssl.create_default_context(cadata=root)
        addresses = [lab.address(n) for n in lab.nodes]
        stack.deploy()
        try:
            def served() -> dict | None:
                got = {(a, h): serial(a, tls_port, h, ctx) for a in addresses
                       for h, ctx in ((FILES, files_ctx), (SITE, acme_ctx))}
                return got if None not in got.values() else None
            try:
                first = wait_until(served, 240, 1.0, what="every node's gateway serving both hosts over HTTPS")
            except TimeoutError as e:
                got = {(a, h): serial(a, tls_port, h, ctx) for a in addresses
                       for h, ctx in ((FILES, files_ctx), (SITE, acme_ctx))}
                node = stack.control_node(1)
                raise AssertionError(f"{e}: served {got}; the control plane (node {node}) wrote:\n"
                                     + "\n".join(stack.control_logs(node) if node else [])[-6000:]
                                     + "\npebble:\n" + Path(pebble["log"]).read_text()[-3000:]) from None
            for host in (FILES, SITE):   # one certificate per host, the same on every node
                assert len({s for (_, h), s in first.items() if h == host}) == 1, first
            assert issued(pebble) == 1, "the CA was asked more than once"

            # A new control-plane task (no state directory of the old one's): it takes the lease,
            # restores the sealed ACME folder and asks the CA nothing.
            client = stack.client(1)
            try:
                old = stack.lease_holder(1)
                client.services.get(f"{STACK}-control").force_update()
            finally:
                client.close()
            wait_until(lambda: stack.lease_holder(1) not in (None, "", old), 180, 1.0,
                       what="the new control plane holding the lease")
            node = wait_until(lambda: stack.control_node(1), 60, 0.5, what="the new control plane's task running")
            wait_until(lambda: (stack.status(node) or {}).get("converged"), 120, 1.0,
                       what="the new control plane converged")
            time.sleep(5.0)   # a control plane without the folder would have asked by now (due at once)
            assert issued(pebble) == 1, "the new control plane asked the CA again"
            assert served() == first
            certs = {tuple(c["hosts"]): c["source"] for c in (stack.status(node) or {}).get("certs", [])}
            assert certs == {(SITE,): "acme", (FILES,): "file"}, certs
            # The CLI on this host finds the moved control plane through the swarm, with the token only.
            r = stack.cli_status(manager=1)
            assert r.returncode == 0, r.stdout + r.stderr
            assert {tuple(c["hosts"]) for c in json.loads(r.stdout)["certs"]} == {(SITE,), (FILES,)}
            r = stack.cli_status(manager=1, token=False)
            assert r.returncode == 1 and "token" in r.stderr, r.stdout + r.stderr
            r = stack.down(manager=1)
            assert r.returncode == 0, r.stdout + r.stderr
        finally:
            stack.cleanup()
        client = stack.client(1)
        try:
            left = [x["Spec"]["Name"] for x in client.api.secrets() + client.api.configs()
                    if x["Spec"]["Name"].startswith(f"{STACK}-")]
        finally:
            client.close()
        assert left == [], left
