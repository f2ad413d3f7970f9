"""The typed status snapshot (status.py): its wire form keeps every key, and reads back the same."""

from dataclasses import replace

import pytest

from selfieless.orchestrator.status import (
    GatewayStatus,
    PendingStart,
    ReplicaStatus,
    ServiceStatus,
    StackStatus,
    WindowStatus,
    from_json,
    gateway_line,
    listed,
    summarise,
    to_json,
)

REPLICA = ReplicaStatus(id="r1", port=8000, state="ready", health="passing", in_pool=True, in_flight=2,
                        requests=40, restarts=1, adopted=False, pid=123, detail="", started_at=1700000000.5,
                        uptime=12.25, last_error=None)
SERVICE = ServiceStatus(name="acts", kind="service", desired=2, actual=1, ready=1, min=1, max=4,
                        host_ports="8000-8003", routes=("/api/v1",), policy="window", api_requests=41,
                        window=WindowStatus(seconds=120, requests_per_replica=20, count=7, started=True, ends_in=33.5),
                        last_decision="scaled acts 1\u21922: 41 requests", replicas=(REPLICA,),
                        pending=(PendingStart(port=8001, due_in=0.5, reason="replacing r0 (exited)"),),
                        crash_loops={8001: 2}, waiting_for=None)
STACK = StackStatus(stack="selfieless", driver="process", converged=False, last_event_id=9,
                    services={"acts": SERVICE})


def test_the_wire_form_has_every_key_the_admin_api_always_sent():
    wire = to_json(STACK)
    assert list(wire) == ["stack", "driver", "converged", "last_event_id", "services", "certs", "gateways"]
    svc = wire["services"]["acts"]
    assert list(svc) == ["desired", "actual", "ready", "min", "max", "host_ports", "routes", "policy", "api_requests",
                         "window", "last_decision", "replicas", "pending", "crash_loops", "kind", "waiting_for",
                         "no_port"]
    assert svc["window"] == {"seconds": 120, "requests_per_replica": 20, "count": 7, "started": True, "ends_in": 33.5}
    assert svc["pending"] == [{"port": 8001, "in": 0.5, "reason": "replacing r0 (exited)"}]
    assert svc["crash_loops"] == {"8001": 2}  # JSON object keys are strings
    assert svc["routes"] == ["/api/v1"]
    assert list(svc["replicas"][0]) == ["id", "port", "state", "health", "in_pool", "in_flight", "requests",
                                        "restarts", "adopted", "pid", "detail", "host", "started_at", "uptime", "last_error",
                                        "db_connections"]


def test_the_wire_form_reads_back_to_the_same_snapshot():
    assert from_json(to_json(STACK)) == STACK
    no_window = StackStatus("s", "docker", True, 0, {"db": ServiceStatus(
        "db", "dependency", 1, 1, 1, 1, 1, "3306", (), "none", 0, None, None, (), (), {}, None)})
    assert from_json(to_json(no_window)) == no_window
    fleet = replace(no_window, gateways=(GatewayStatus("10.0.0.1", "n1", True, True, 12),
                                         GatewayStatus("10.0.0.2", "n2", True, False, 0)))
    assert from_json(to_json(fleet)) == fleet


@pytest.mark.parametrize("g, line", [
    (GatewayStatus("10.0.0.1", "n1", True, True, 12), "n1 10.0.0.1: serving, attached, 12 requests"),
    (GatewayStatus("10.0.0.2", "n2", True, False, 3), "n2 10.0.0.2: attached, not answering, 3 requests"),
    (GatewayStatus("10.0.0.3", "", False, False, 0), "- 10.0.0.3: starting (not attached yet), 0 requests"),
])
def test_one_line_per_gateway(g, line):
    assert gateway_line(g) == line


# --- summarised status (issue 28: a thousand rows help nobody) ------------------------------------

def _rep(port, state="ready", in_pool=True, health="passing"):
    return ReplicaStatus(id=f"s-{port}", port=port, state=state, health=health, in_pool=in_pool, in_flight=0,
                         requests=0, restarts=0, adopted=False, pid=None, detail="", started_at=None, uptime=0.0,
                         last_error=None)


@pytest.mark.parametrize("name, replicas, limit, ports", [
    ("under the limit: all", [_rep(1), _rep(2, "starting")], 5, [1, 2]),
    ("at the limit: all", [_rep(p) for p in range(1, 4)], 3, [1, 2, 3]),
    ("all fine: the lowest ports", [_rep(p) for p in range(1, 11)], 3, [1, 2, 3]),
    ("trouble first, then the lowest", [_rep(p) for p in range(1, 9)] + [_rep(9, "exited")], 3, [1, 2, 9]),
    ("out of the pool is trouble", [_rep(p) for p in range(1, 9)] + [_rep(9, in_pool=False)], 2, [1, 9]),
    ("failing probe is trouble", [_rep(p) for p in range(1, 9)] + [_rep(9, health="failing")], 2, [1, 9]),
    ("more trouble than room: the lowest", [_rep(p, "starting") for p in range(1, 9)], 3, [1, 2, 3]),
])
def test_listed(name, replicas, limit, ports):
    assert [r.port for r in listed(tuple(replicas), limit)] == ports


def test_summarise_counts_what_it_leaves_out_and_round_trips():
    reps = tuple([_rep(p) for p in range(100, 190)] + [_rep(p, "starting") for p in range(190, 200)])
    svc = ServiceStatus(name="s", kind="service", desired=100, actual=100, ready=90, min=1, max=1000,
                        host_ports="100-1099", routes=("/s",), policy="none", api_requests=0, window=None,
                        last_decision=None, replicas=reps, pending=tuple(PendingStart(p, 0.0, "x") for p in range(7)),
                        crash_loops={}, waiting_for=None)
    st = StackStatus(stack="x", driver="process", converged=False, last_event_id=0, services={"s": svc})
    small = summarise(st, 12).services["s"]
    assert [r.port for r in small.replicas] == [100, 101] + list(range(190, 200))
    assert small.not_listed == {"ready": 88}
    assert len(small.pending) == 7
    assert summarise(st, 5).services["s"].not_listed == {"pending": 2, "ready": 90, "starting": 5}
    assert summarise(st, 500).services["s"].not_listed == {}
    assert st.services["s"].not_listed is None and "not_listed" not in to_json(st)["services"]["s"]
    assert from_json(to_json(summarise(st, 12))).services["s"].not_listed == {"ready": 88}
