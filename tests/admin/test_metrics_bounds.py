"""/metrics at a thousand replicas: per-replica series stay bounded (issue 28). No sockets: a real
gateway pool and a status snapshot go through the real collector."""

from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from selfieless.admin.metrics import PER_REPLICA_SERIES, itemised, make_registry
from selfieless.gateway.pool import ReplicaPool
from selfieless.orchestrator.status import ReplicaStatus, ServiceStatus, StackStatus


@pytest.mark.parametrize("ports, limit, expected", [
    ([], 3, set()),
    ([9002, 9000, 9001], 3, {9000, 9001, 9002}),
    ([9005, 9001, 9003, 9000], 2, {9000, 9001}),      # the lowest, whatever the order
    ([9000, 9000, 9001], 1, {9000}),                   # a port listed twice counts once
    (list(range(9999, 8999, -1)), 50, set(range(9000, 9050))),
])
def test_itemised_ports(ports, limit, expected):
    assert itemised(ports, limit) == expected


def replica(port: int, state: str = "ready") -> ReplicaStatus:
    return ReplicaStatus(id=f"echo-{port}-1", port=port, state=state, health="passing", in_pool=state == "ready",
                         in_flight=0, requests=0, restarts=0, adopted=False, pid=1, detail="", started_at=0.0,
                         uptime=1.0, last_error=None)


def scrape(n: int) -> dict:
    pool = ReplicaPool("echo")
    for port in range(9000, 9000 + n):
        pool.add(f"echo-{port}-1", "127.0.0.1", port)
    reps = tuple(replica(p, "ready" if p % 10 else "starting") for p in range(9000 + n - 1, 8999, -1))
    svc = ServiceStatus(name="echo", kind="service", desired=n, actual=n, ready=sum(r.state == "ready" for r in reps),
                        min=1, max=1000, host_ports="9000-9999", routes=("/echo",), policy="none", api_requests=0,
                        window=None, last_decision=None, replicas=reps, pending=(), crash_loops={}, waiting_for=None)
    status = StackStatus(stack="scale", driver="process", converged=False, last_event_id=0, services={"echo": svc})
    gateway = SimpleNamespace(all_stats={}, pools={"echo": pool})
    registry = make_registry(gateway, SimpleNamespace(snapshot=lambda: status))
    out: dict = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append({**s.labels, "value": s.value})
    return out


def test_per_replica_series_are_bounded_and_the_counts_cover_every_replica():
    m = scrape(1000)
    for name, per in [("selfieless_replica_requests_total", 1), ("selfieless_replica_in_flight", 1),
                      ("selfieless_replica_state", 6), ("selfieless_replica_healthy", 1),
                      ("selfieless_replica_restarts_total", 1)]:
        assert len(m[name]) == PER_REPLICA_SERIES * per, name
        assert {int(lab["port"]) for lab in m[name]} == set(range(9000, 9000 + PER_REPLICA_SERIES)), name
    counts = {lab["state"]: lab for lab in m["selfieless_replicas"]}
    assert set(counts) == {"starting", "ready", "unhealthy", "exited", "stopping", "stopped"}


def test_counts_per_state_are_exact():
    m = scrape(120)  # ports 9000..9119; those on a multiple of 10 are starting
    counts = {lab["state"]: lab["value"] for lab in m["selfieless_replicas"]}
    assert counts == {"ready": 108, "starting": 12, "unhealthy": 0, "exited": 0, "stopping": 0, "stopped": 0}


def test_a_small_service_keeps_every_replica_series():
    m = scrape(7)
    assert {int(lab["port"]) for lab in m["selfieless_replica_requests_total"]} == set(range(9000, 9007))
