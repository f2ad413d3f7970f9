"""Whether the control plane counts a replica in rotation: its will (`joined`) and the gateway's
view of it (orchestrator/pool.py), as a table, then read through a real in-process gateway pool
that withdraws and reinstates a backend by itself."""

import pytest

from selfieless.gateway.config import GatewayConfig
from selfieless.gateway.gateway import Gateway
from selfieless.orchestrator.pool import Pool, in_rotation
from selfieless.orchestrator.replica import Replica


@pytest.mark.parametrize("joined, state, expected", [
    (True, "ready", True),
    (True, None, True),          # added, not in the (remote, one poll old) view yet: at our word
    (True, "withdrawn", False),  # the gateway took it out by itself
    (True, "ejected", False),
    (True, "draining", False),
    (True, "removed", False),
    (False, "ready", False),     # removed by us, still in a view one poll old
    (False, None, False),
    (False, "withdrawn", False),
])
def test_rotation_rule(joined, state, expected):
    assert in_rotation(joined, state) is expected


def test_pool_reads_rotation_from_the_gateway_view():
    gw = Gateway(GatewayConfig(port=0), routes={"/api/v1": "echo"})
    t = [0.0]
    pool = Pool(gw, lambda name: False, clock=lambda: t[0])
    a, b, c = (Replica(id=i, service="echo", port=p) for i, p in (("a", 1), ("b", 2), ("c", 3)))
    pool.join(a)
    pool.join(b)
    assert a.joined and b.joined and not c.joined
    assert pool.rotation("echo", [a, b, c]) == {"a", "b"}

    assert pool.in_rotation(a)
    backend = gw.pool("echo").get("a")
    assert gw.pool("echo").withdraw(backend, "stalled")
    assert pool.rotation("echo", [a, b, c]) == {"b"}
    assert pool.in_rotation(a)  # the read before the withdrawal answers for STATES_MAX_AGE
    pool.changed("echo")  # the gateway's on_withdraw: read again
    assert not pool.in_rotation(a) and pool.in_rotation(b) and not pool.in_rotation(c)

    assert gw.pool("echo").reinstate(backend)  # by itself: nobody tells the control plane
    t[0] += 1.0
    assert pool.in_rotation(a) and a.joined

    pool.leave(b)
    assert not b.joined and not pool.in_rotation(b)
    assert pool.rotation("echo", [a, b, c]) == {"a"}
