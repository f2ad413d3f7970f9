"""The typed status snapshot (status.py): its wire form keeps every key, and reads back the same."""

from selfieless.orchestrator.status import (
    PendingStart,
    ReplicaStatus,
    ServiceStatus,
    StackStatus,
    WindowStatus,
    from_json,
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
    assert list(wire) == ["stack", "driver", "converged", "last_event_id", "services"]
    svc = wire["services"]["acts"]
    assert list(svc) == ["desired", "actual", "ready", "min", "max", "host_ports", "routes", "policy", "api_requests",
                         "window", "last_decision", "replicas", "pending", "crash_loops", "kind", "waiting_for",
                         "no_port"]
    assert svc["window"] == {"seconds": 120, "requests_per_replica": 20, "count": 7, "started": True, "ends_in": 33.5}
    assert svc["pending"] == [{"port": 8001, "in": 0.5, "reason": "replacing r0 (exited)"}]
    assert svc["crash_loops"] == {"8001": 2}  # JSON object keys are strings
    assert svc["routes"] == ["/api/v1"]
    assert list(svc["replicas"][0]) == ["id", "port", "state", "health", "in_pool", "in_flight", "requests",
                                        "restarts", "adopted", "pid", "detail", "host", "started_at", "uptime", "last_error"]


def test_the_wire_form_reads_back_to_the_same_snapshot():
    assert from_json(to_json(STACK)) == STACK
    no_window = StackStatus("s", "docker", True, 0, {"db": ServiceStatus(
        "db", "dependency", 1, 1, 1, 1, 1, "3306", (), "none", 0, None, None, (), (), {}, None)})
    assert from_json(to_json(no_window)) == no_window
