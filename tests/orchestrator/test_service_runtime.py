"""What the runtime keeps per service (service.py): convergence, the budget's counts, launch specs
and the status it reports. No driver, no gateway, no event loop."""

import pytest

from selfieless.orchestrator import autoscale as auto
from selfieless.orchestrator.backoff import BackoffState
from selfieless.orchestrator.replica import Replica, ReplicaState as S
from selfieless.orchestrator.service import ScheduledStart, ServiceRuntime
from selfieless.orchestrator.stack import parse_stack

STACK = parse_stack({
    "name": "demo", "driver": "process", "network": "demo-net",
    "variables": {"database_url": "sqlite:///{state_dir}/acts.db"},
    "dependencies": {"db": {"command": ["db-server", "--port", "{port}"], "container_port": 3306,
                            "host_port": 13306, "volumes": {"demo-data": "/var/lib/db"}}},
    "services": {"acts": {
        "command": ["python", "-m", "acts", "--port", "{port}", "--database-url", "{database_url}",
                    "--users-url", "{gateway_url}"],
        "environment": {"WHO": "{service}@{host}:{port}"},
        "host_ports": "8000-8003", "routes": ["/api/v1"],
        "replicas": {"initial": 2, "min": 1, "max": 4},
        "autoscale": {"policy": "window", "window_seconds": 60, "requests_per_replica": 10},
    }},
})


def runtime(*states, pending=()):
    svc = ServiceRuntime("acts", STACK.services["acts"], desired=2)
    for i, st in enumerate(states):
        r = Replica(id=f"r{i}", service="acts", port=8000 + i, state=st, started_at=0.0)
        svc.replicas[r.id] = r
    for port in pending:
        svc.pending[port] = ScheduledStart(task=None, due=5.0, reason="replacing r9 (exited)")
    return svc


@pytest.mark.parametrize("states, pending, converged", [
    ((S.READY, S.READY), (), True),
    ((S.READY,), (), False),
    ((S.READY, S.READY, S.READY), (), False),
    ((S.READY, S.STARTING), (), False),
    ((S.READY, S.STOPPING), (), False),
    ((S.READY,), (8001,), False),
])
def test_converged(states, pending, converged):
    assert runtime(*states, pending=pending).converged() is converged


def test_siblings_count_the_others_for_the_budget():
    svc = runtime(S.READY, S.READY, S.STARTING, S.UNHEALTHY, S.STOPPING, pending=(8009,))
    svc.replicas["r1"].consecutive_failures = 2
    sib = svc.siblings(svc.replicas["r0"])
    assert (sib.ready, sib.failing_ready, sib.unavailable) == (1, 1, 3)
    svc.spared.add("r0")
    f = svc.facts(svc.replicas["r0"])
    assert f.spared and f.state == S.READY and not f.dependency


def test_launch_spec_fills_in_the_placeholders():
    spec = runtime().launch_spec(STACK, 8001, 9999, "/state/demo", "127.0.0.1")
    assert spec.command == ["python", "-m", "acts", "--port", "8001", "--database-url",
                            "sqlite:////state/demo/acts.db", "--users-url", "http://127.0.0.1:9999"]
    assert spec.environment == {"WHO": "acts@127.0.0.1:8001"}
    assert (spec.stack, spec.service, spec.host_port, spec.network, spec.name) == ("demo", "acts", 8001, "demo-net", None)


def test_a_dependency_gets_its_fixed_container_name_and_volumes():
    db = ServiceRuntime("db", STACK.dependencies["db"].as_service(), 1, dependency=True)
    spec = db.launch_spec(STACK, 13306, 9999, "/state/demo", "127.0.0.1")
    assert spec.command == ["db-server", "--port", "13306"]
    assert (spec.name, spec.host_ip, spec.volumes) == ("demo-db", "127.0.0.1", {"demo-data": "/var/lib/db"})


def test_status_reports_replicas_by_port_with_the_gateway_view():
    svc = runtime(S.READY, S.STARTING, pending=(8003,))
    svc.backoff[8003] = BackoffState(failures=2)
    svc.backoff[8001] = BackoffState(failures=1)

    class View:
        in_flight, served = 3, 17

    st = svc.status({"r0": View()}, {"r0"}, auto.Sample(4, first_request_at=None), now=2.5)
    assert (st.desired, st.actual, st.ready, st.kind) == (2, 2, 1, "service")
    assert [(r.port, r.state, r.in_pool, r.in_flight, r.requests, r.uptime) for r in st.replicas] == [
        (8000, "ready", True, 3, 17, 2.5), (8001, "starting", False, 0, 0, 2.5)]
    assert [(p.port, p.due_in) for p in st.pending] == [(8003, 2.5)]
    assert st.crash_loops == {8003: 2}   # one failure is not a crash loop yet
    assert st.window is not None and st.window.started is False and st.window.ends_in is None
