"""/metrics: valid Prometheus text, read at scrape time, numbers equal to the gateway's own counters."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from admin_support import RunningStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = RunningStack(tmp_path_factory.mktemp("metrics"))  # loopback, no token
    yield s
    s.close()


def scrape(stack) -> dict:
    r = httpx.get(stack.url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_request_numbers_match_the_gateway(stack):
    N = 25
    with httpx.Client(base_url=stack.gateway_url, timeout=10) as c:
        for i in range(N):
            assert c.get("/api/v1/categories").status_code in (200, 204)
        assert c.get("/api/v1/categories/none/acts").status_code in (400, 404, 204)  # a 4xx or empty
        for _ in range(3):
            assert c.get("/api/v1/_health").status_code == 200  # forwarded, not counted as API
    m = scrape(stack)
    st = stack.lt.call(lambda: stack.gw.stats("acts").snapshot())
    views = stack.lt.call(lambda: list(stack.gw.pool("acts").replicas))
    assert value(m, "selfieless_api_requests_total", service="acts") == st["api_requests"] == N + 1
    assert value(m, "selfieless_requests_total", service="acts") == st["requests"] >= N + 4
    for k in ("2xx", "4xx", "5xx"):
        assert value(m, "selfieless_responses_total", service="acts", code=k) == st["status"][k]
    assert value(m, "selfieless_responses_total", service="acts", code="2xx") >= N + 3
    # Latency histogram: cumulative buckets, +Inf bucket == count == observations.
    assert value(m, "selfieless_request_duration_seconds_count", service="acts") == st["latency"]["count"]
    assert value(m, "selfieless_request_duration_seconds_bucket", service="acts", le="+Inf") == st["latency"]["count"]
    assert value(m, "selfieless_request_duration_seconds_sum", service="acts") == pytest.approx(st["latency"]["sum"])
    les = [(le, n) for le, n in st["latency"]["buckets"]]
    for le, n in les[:-1]:
        assert value(m, "selfieless_request_duration_seconds_bucket", service="acts", le=repr(float(le))) == n
    # Per replica.
    assert len(views) == 1
    v = views[0]
    assert value(m, "selfieless_replica_requests_total", service="acts", replica=v.id, port=str(v.port)) == v.served
    assert value(m, "selfieless_replica_in_flight", service="acts", replica=v.id, port=str(v.port)) == 0
    # From the orchestrator's status.
    assert value(m, "selfieless_replicas_desired", service="acts") == 1
    assert value(m, "selfieless_replicas_actual", service="acts") == 1
    assert value(m, "selfieless_replicas_ready", service="acts") == 1
    assert value(m, "selfieless_replica_state", service="acts", replica=v.id, port=str(v.port), state="ready") == 1
    assert value(m, "selfieless_replica_state", service="acts", replica=v.id, port=str(v.port), state="exited") == 0
    assert value(m, "selfieless_replica_healthy", service="acts", replica=v.id, port=str(v.port)) == 1
    assert value(m, "selfieless_replica_restarts_total", service="acts", port=str(v.port)) == 0
    assert value(m, "selfieless_ejections_total", service="acts") == 0
    assert value(m, "selfieless_converged") == 1
    assert value(m, "selfieless_events_total") == stack.orch.events.last_id


def test_scrapes_follow_new_requests(stack):
    before = value(scrape(stack), "selfieless_api_requests_total", service="acts")
    with httpx.Client(base_url=stack.gateway_url, timeout=10) as c:
        for _ in range(7):
            c.get("/api/v1/acts/count")
    assert value(scrape(stack), "selfieless_api_requests_total", service="acts") == before + 7


def test_window_count_metric():
    """The window gauge comes from the snapshot's window count when the policy has one."""
    from selfieless.admin.metrics import StackCollector
    from selfieless.orchestrator.status import from_json

    class GW:
        pools, all_stats = {}, {}

    status = {"services": {"acts": {"desired": 2, "actual": 2, "ready": 1, "pending": [{"port": 1}],
                                    "window": {"count": 23, "ends_in": 40.5, "started": True}, "replicas": [],
                                    "crash_loops": {"8001": 3}}},
              "converged": False, "last_event_id": 9}
    fams = {f.name: f for f in StackCollector(GW(), status=lambda: from_json(status)).collect()}
    assert fams["selfieless_window_requests"].samples[0].value == 23
    assert fams["selfieless_window_ends_in_seconds"].samples[0].value == 40.5
    assert fams["selfieless_replicas_pending"].samples[0].value == 1
    assert fams["selfieless_crash_loop_failures"].samples[0].labels == {"service": "acts", "port": "8001"}
    assert fams["selfieless_converged"].samples[0].value == 0
