"""`selfieless status` at a thousand replicas: the table lists a few per service and counts the rest
(issue 28). Rendered from a wire document, no server."""

from rich.console import Console

from selfieless.cli.main import LISTED, status_tables
from selfieless.orchestrator.status import ReplicaStatus, ServiceStatus, StackStatus, summarise, to_json


def rep(port: int, state: str = "ready") -> ReplicaStatus:
    return ReplicaStatus(id=f"echo-{port}-7", port=port, state=state, health="passing", in_pool=state == "ready",
                         in_flight=0, requests=0, restarts=0, adopted=False, pid=7, detail="", started_at=None,
                         uptime=1.0, last_error=None)


def rendered(st: StackStatus) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    for t in status_tables(to_json(st)):
        console.print(t)
    return console.export_text()


def stack(n: int) -> StackStatus:
    reps = tuple(rep(p, "exited" if p == 10500 else "ready") for p in range(10000, 10000 + n))
    svc = ServiceStatus(name="echo", kind="service", desired=n, actual=n - 1, ready=n - 1, min=1, max=1000,
                        host_ports="10000-10999", routes=("/echo",), policy="none", api_requests=0, window=None,
                        last_decision=None, replicas=reps, pending=(), crash_loops={}, waiting_for=None)
    return StackStatus(stack="scale", driver="process", converged=False, last_event_id=0, services={"echo": svc})


def test_a_thousand_replicas_are_listed_a_few_and_counted():
    text = rendered(summarise(stack(1000), LISTED))
    assert text.count("echo-1") == LISTED          # ids of listed replicas (all on ports 10000..)
    assert "echo-10500-7" in text                   # the one in trouble is among them
    assert f"and {1000 - LISTED} more: {1000 - LISTED} ready (--all lists them)" in text


def test_everything_listed_says_nothing_more():
    text = rendered(stack(5))
    assert text.count("echo-1") == 5 and "more:" not in text
