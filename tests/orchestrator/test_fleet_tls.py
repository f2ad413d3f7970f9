"""HTTPS on the gateways on every node, without a swarm (support/fleet_nodes.py: two gateway
processes on 127.0.0.1 and 127.0.0.2, the same ports): the certificates read or issued once by
the control plane (orchestrator/fleet_tls.py) and served by every gateway.

- From files: both gateways serve the file's certificate; the file replaced, both serve the new
  one; a gateway killed and started again is sent it at once; a pair that cannot be served is
  refused by a gateway's control API with a 400 saying why, and changes nothing.
- From an ACME CA (pebble, its DNS answering 127.0.0.2 for every name): one control plane asks,
  and only while it holds the stack's lease; the CA's HTTP-01 request reaches the gateway on the
  other "node", which serves the challenge answer the control plane sent every gateway; both
  gateways then serve the one certificate issued. About 8 s.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time

import httpx
import pytest
import trustme

from selfieless.gateway.routing import host_key
from selfieless.gateway.tls import TlsSettings
from selfieless.orchestrator.fleet_tls import FleetCertificates, fleet_tls_settings
from selfieless.orchestrator.gateway_fleet import GatewayFleet
from support.certs import write_pair
from support.fleet_nodes import NODES, TOKEN, NodeGateway, Places, backend, wait
from support.pebble import run_pebble
from support.ports import free_port

pytestmark = pytest.mark.anyio
HOST = "api.test"


def _serial(address: str, port: int, ctx: ssl.SSLContext) -> str:
    with socket.create_connection((address, port), 10) as raw, ctx.wrap_socket(raw, server_hostname=HOST) as s:
        return s.getpeercert()["serialNumber"]


async def _serials(port: int, ctx: ssl.SSLContext) -> dict[str, str | None]:
    """The certificate each node's gateway shows for HOST (None: refused or not listening yet)."""
    out = {}
    for address in NODES:
        try:
            out[address] = await asyncio.to_thread(_serial, address, port, ctx)
        except (OSError, ssl.SSLError):
            out[address] = None
    return out


class Fleet:
    """Both nodes' gateways with HTTPS on `tls.port`, and the fleet driving them."""

    def __init__(self, tmp_path, tls: TlsSettings, port: int, control_port: int, acting=None) -> None:
        self.tmp_path, self.tls, self.port, self.control_port = tmp_path, tls, port, control_port
        self.nodes = {h: NodeGateway(h, port, control_port, tmp_path, tls=fleet_tls_settings(tls)) for h in NODES}
        self.fleet = GatewayFleet(Places({h: f"node{i}" for i, h in enumerate(NODES, 1)}), port=port,
                                  control_port=control_port, token=TOKEN, poll_wait=0.1, acting=acting)

    async def __aenter__(self) -> GatewayFleet:
        for node in self.nodes.values():
            await node.started()
        await self.fleet.start(timeout=20)
        self.fleet.certificates = FleetCertificates(self.tls, self.fleet, self.fleet.acting)
        await self.fleet.certificates.start()
        return self.fleet

    async def __aexit__(self, *exc) -> None:
        await self.fleet.stop()
        for node in self.nodes.values():
            node.kill()

    async def restart(self, address: str) -> None:
        self.nodes[address].kill()
        self.nodes[address] = await NodeGateway(address, self.port, self.control_port, self.tmp_path,
                                                tls=fleet_tls_settings(self.tls)).started()


async def test_every_gateway_serves_the_certificate_files_the_control_plane_reads(tmp_path):
    ca = trustme.CA()
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    pair = write_pair(ca, tmp_path, "site", HOST)
    port, control_port, tls_port = free_port(), free_port(), free_port()
    server, backend_port = await backend()
    tls = TlsSettings(port=tls_port, default=pair, reload_interval=0.2)
    nodes = Fleet(tmp_path, tls, port, control_port)
    try:
        async with nodes as fleet:
            fleet.set_routes({"/api/v1": "acts"})
            fleet.add_backend("acts", "acts-1", "127.0.0.1", backend_port)
            await fleet.flush()
            first = await _serials(tls_port, ctx)
            assert None not in first.values() and len(set(first.values())) == 1, first
            async with httpx.AsyncClient(verify=ctx, timeout=10) as c:
                for address in NODES:
                    r = await c.get(f"https://{address}:{tls_port}/api/v1/x", headers={"Host": HOST},
                                    extensions={"sni_hostname": HOST})
                    assert r.status_code == 200 and r.text == "ok", address
            assert [c["hosts"] for c in fleet.tls_certs] == [[HOST]]

            # The file replaced (a renewal by hand): every gateway serves the new one.
            write_pair(ca, tmp_path, "site", HOST)

            async def renewed():
                now = await _serials(tls_port, ctx)
                return None not in now.values() and set(now.values()).isdisjoint(first.values()) \
                    and len(set(now.values())) == 1
            await wait(renewed, what="both gateways serving the replaced certificate")
            second = (await _serials(tls_port, ctx))[NODES[0]]

            # A gateway started again (Swarm replacing a killed task) is sent it as it attaches.
            await nodes.restart(NODES[1])

            async def sent_again():
                return (await _serials(tls_port, ctx))[NODES[1]] == second
            await wait(sent_again, what="the restarted gateway serving the certificate")

            # A pair that cannot be served (the key of another certificate): 400, nothing changes.
            other = write_pair(ca, tmp_path, "other", HOST)
            bad = {"cert": open(pair.cert).read(), "key": open(other.key).read(), "hosts": [HOST], "default": True}
            async with httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {TOKEN}"}) as c:
                r = await c.post(f"http://{NODES[0]}:{control_port}/control/ops",
                                 content=json.dumps({"ops": [{"op": "certs", "pairs": [bad]}]}))
            assert r.status_code == 400 and "does not match" in r.json()["error"], r.text
            assert (await _serials(tls_port, ctx))[NODES[0]] == second
    finally:
        server.close()


async def test_one_control_plane_gets_the_certificate_from_an_acme_ca_for_every_gateway(tmp_path):
    port, control_port, tls_port = free_port(), free_port(), free_port()
    # The CA's DNS answers the second "node" for every name: its HTTP-01 request reaches that
    # gateway, not one beside the issuer.
    with run_pebble(tmp_path, http_port=port, address=NODES[1]) as pebble:
        state = tmp_path / "control-plane"
        tls = TlsSettings(port=tls_port, acme={"directory": pebble["directory"], "email": "ops@api.test",
                                               "ca_bundle": pebble["ca_bundle"], "state_dir": str(state)})
        holds_lease = [False]
        async with Fleet(tmp_path, tls, port, control_port, acting=lambda: holds_lease[0]) as fleet:
            # Not holding the lease: it sends nothing, and asks the CA for nothing.
            fleet.set_routes({host_key(HOST, "/api/v1"): "acts"})
            await asyncio.sleep(2.0)
            assert not list(state.glob("acme/*/*/cert.pem"))
            holds_lease[0] = True
            fleet.set_routes({host_key(HOST, "/api/v1"): "acts"})
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=pebble["ca_bundle"])) as c:
                root = (await c.get(f"{pebble['mgmt']}/roots/0")).text
            ctx = ssl.create_default_context(cadata=root)
            t0 = time.monotonic()

            async def served_everywhere():
                now = await _serials(tls_port, ctx)
                return None not in now.values() and len(set(now.values())) == 1
            await wait(served_everywhere, timeout=90, what="both gateways serving the ACME certificate")
            print(f"\nACME through the fleet: both gateways serving in {time.monotonic() - t0:.1f} s")
            assert len(list(state.glob(f"acme/*/{HOST}/cert.pem"))) == 1   # issued once, by the control plane
            assert [(c["hosts"], c["acme"]) for c in fleet.tls_certs] == [([HOST], True)]
