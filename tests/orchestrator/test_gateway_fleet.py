"""The gateway on every node, without a swarm: two gateway processes with their control API on
TCP (127.0.0.1 and 127.0.0.2, the same ports, as two nodes would have), driven as one by a
GatewayFleet; one is killed (-9) and started again, as Swarm restarts a killed task. The swarm is
replaced only where the fleet reads which nodes run a gateway (a list here; the manager's task
list on the lab, tests/swarm). About 3 s."""

from __future__ import annotations

import httpx
import pytest

from selfieless.gateway.control_api import listen_problem, parse_listen
from selfieless.orchestrator.gateway_fleet import GatewayFleet
from support.fleet_nodes import NODES, ROUTES, TOKEN, NodeGateway, Places, backend as _backend, wait as _wait
from support.ports import free_port

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("listen, token, problem", [
    ("/run/x/gateway.sock", None, None),            # a unix socket: owner-only, no token needed
    ("127.0.0.1:9000", None, None),                 # loopback
    ("[::1]:9000", None, None),
    ("localhost:9000", None, None),
    ("0.0.0.0:9000", None, "reachable from other machines"),
    ("10.0.0.5:9000", None, "reachable from other machines"),
    ("gateway.example:9000", None, "reachable from other machines"),  # a name may resolve anywhere
    ("0.0.0.0:9000", "t", None),
    ("0.0.0.0:0", "t", "want HOST:PORT"),
    ("0.0.0.0:http", "t", "want HOST:PORT"),
])
def test_the_control_api_beyond_loopback_needs_a_token(listen, token, problem):
    got = listen_problem(listen, token)
    assert (got is None) if problem is None else (problem in got), got


def test_parse_listen():
    assert parse_listen("/a/b.sock") is None and parse_listen("gw.sock") is None
    assert parse_listen("10.0.0.1:81") == ("10.0.0.1", 81) and parse_listen("[::1]:81") == ("::1", 81)


async def test_a_fleet_drives_every_nodes_gateway_as_one_and_reattaches_a_replaced_one(tmp_path):
    backend, backend_port = await _backend()
    port, control_port = free_port(), free_port()
    nodes = {host: NodeGateway(host, port, control_port, tmp_path) for host in NODES}
    for node in nodes.values():
        await node.started()
    fleet = GatewayFleet(Places({h: f"node{i}" for i, h in enumerate(NODES, 1)}), port=port,
                         control_port=control_port, token=TOKEN, poll_wait=0.1)
    try:
        await fleet.start(timeout=20)
        assert sorted(fleet.members) == list(NODES)
        fleet.set_routes(ROUTES)
        fleet.add_backend("acts", "acts-1", "127.0.0.1", backend_port)
        await fleet.flush()
        async with httpx.AsyncClient(timeout=10) as c:
            for host in NODES:   # every node's gateway has the routes and the backend
                r = await c.get(f"http://{host}:{port}/api/v1/x")
                assert r.status_code == 200 and r.text == "ok", host

            async def counted(n):
                await fleet.refresh()
                st = fleet.counters("acts")
                return st is not None and st.api_requests == n
            await _wait(lambda: counted(2), what="counters summed over both gateways")
            assert [v.id for v in fleet.backends("acts")] == ["acts-1"]
            lines = fleet.lines()
            assert [(g.address, g.node, g.attached, g.answering) for g in lines] == \
                [("127.0.0.1", "node1", True, True), ("127.0.0.2", "node2", True, True)]

            # The gateway on 127.0.0.2 is killed and another starts there (Swarm's restart): the
            # fleet sends it the routes and the backend, and the count does not go back.
            before = fleet.members["127.0.0.2"].instance
            nodes["127.0.0.2"].kill()
            assert (await c.get(f"http://127.0.0.1:{port}/api/v1/x")).status_code == 200
            nodes["127.0.0.2"] = await NodeGateway("127.0.0.2", port, control_port, tmp_path).started()

            async def sent_again():
                return fleet.members["127.0.0.2"].instance != before
            await _wait(sent_again, what="the fleet finding the new gateway")
            await fleet.flush()
            r = await c.get(f"http://127.0.0.2:{port}/api/v1/x")
            assert r.status_code == 200 and r.text == "ok"
            await _wait(lambda: counted(4), what="counters kept over the replacement")

            # A node that leaves is let go (its gateway keeps serving what it had); a change
            # then reaches the others only.
            # A control plane that lost the stack's lease sends nothing (another one acts now).
            held = [True]
            fleet.acting = lambda: held[0]
            held[0] = False
            fleet.remove_backend("acts", "acts-1")
            await fleet.flush()
            assert (await c.get(f"http://127.0.0.1:{port}/api/v1/x")).status_code == 200
            held[0] = True
            fleet.edge.places.pop("127.0.0.2")
            await fleet.watch_once()
            assert list(fleet.members) == ["127.0.0.1"]
            fleet.remove_backend("acts", "acts-1")
            await fleet.flush()
            assert (await c.get(f"http://127.0.0.2:{port}/api/v1/x")).status_code == 200
            r = await c.get(f"http://127.0.0.1:{port}/api/v1/x", timeout=15)
            assert r.status_code == 503   # no backend left there (after no_replica_wait)
    finally:
        await fleet.stop()
        for node in nodes.values():
            node.kill()
        backend.close()
