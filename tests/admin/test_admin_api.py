"""The admin API over a real stack: bearer auth off loopback, scale validation, events, shutdown."""

import threading
import time

import httpx
import pytest

from admin_support import RunningStack
from selfieless.admin import AdminConfigError, AdminServer, check_exposure, is_loopback

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = RunningStack(tmp_path_factory.mktemp("admin"), admin_host="0.0.0.0", token=TOKEN)
    yield s
    s.close()


def test_exposed_admin_without_token_refuses_to_start(stack):
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(AdminConfigError, match=f"refusing to serve the admin API on {host} without a token"):
            AdminServer(stack.orch, stack.gw, host=host, port=0)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        check_exposure(host, None)  # loopback: no token needed


@pytest.mark.parametrize("path", ["/api/status", "/api/events", "/metrics", "/api/logs?service=acts",
                                  "/api/history"])
def test_token_required_on_every_api_route(stack, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
        r = httpx.get(stack.url + path, headers=headers, timeout=10)
        assert r.status_code == 401, (path, headers)
        assert r.json()["error"].startswith("missing or wrong bearer token")
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.post(stack.url + "/api/scale", json={"service": "acts", "replicas": 3}, timeout=10)
    assert r.status_code == 401
    assert httpx.post(stack.url + "/api/shutdown", timeout=10).status_code == 401
    assert stack.shutdown_calls == 0
    r = httpx.get(stack.url + path, headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text


def test_dashboard_shell_is_public_but_has_no_data(stack):
    r = httpx.get(stack.url + "/", timeout=10)
    assert r.status_code == 200 and "<canvas" in r.text and "token-form" in r.text
    assert stack.orch.stack.name not in r.text
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        assert httpx.get(stack.url + asset, timeout=10).status_code == 200
    assert "http" not in r.text.replace("http-equiv", "")  # no CDN, nothing external


def test_status(stack):
    st = httpx.get(stack.url + "/api/status", headers=AUTH, timeout=10).json()
    acts = st["services"]["acts"]
    assert st["driver"] == "process" and acts["desired"] == acts["actual"] == acts["ready"] == 1
    assert acts["replicas"][0]["state"] == "ready" and acts["replicas"][0]["health"] == "passing"


def test_status_lists_at_most_n_replicas_per_service(stack):
    st = httpx.get(stack.url + "/api/status", params={"list": 1}, headers=AUTH, timeout=10).json()
    acts = st["services"]["acts"]
    assert len(acts["replicas"]) == 1 and acts["not_listed"] == {}
    for bad in ("0", "-1", "x", "1.5", ""):
        r = httpx.get(stack.url + "/api/status", params={"list": bad}, headers=AUTH, timeout=10)
        assert r.status_code == 400 and "list must be a whole number >= 1" in r.json()["error"], bad


BAD = [
    ({"service": "acts", "replicas": -1}, "replicas must be between 1 and 4"),
    ({"service": "acts", "replicas": 5}, "replicas must be between 1 and 4"),
    ({"service": "nope", "replicas": 1}, "unknown service 'nope'; this stack has: acts"),
    ({"service": "acts", "replicas": "2"}, "replicas: Input should be a valid integer"),
    ({"service": "acts", "replicas": 2.0}, "replicas: Input should be a valid integer"),
    ({"service": "acts", "replicas": True}, "replicas: Input should be a valid integer"),
    ({"service": "acts"}, "replicas: required"),
    ({"replicas": 2}, "service: required"),
    ({"service": "acts", "replicas": 2, "force": True}, "force: unknown key"),
    ({"service": 7, "replicas": 2}, "service: Input should be a valid string"),
    ([], "body must be a JSON object"),
    ("not json", "body must be JSON"),
    (None, "body must be a JSON object"),
]


@pytest.mark.parametrize("body,message", BAD, ids=[m for _, m in BAD])
def test_scale_bad_input_is_400_and_changes_nothing(stack, body, message):
    last = stack.orch.events.last_id
    kw = {"content": body} if isinstance(body, str) else {"json": body}
    r = httpx.post(stack.url + "/api/scale", headers=AUTH, timeout=10, **kw)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"], r.json()
    st = httpx.get(stack.url + "/api/status", headers=AUTH, timeout=10).json()
    assert st["services"]["acts"]["desired"] == 1
    assert stack.orch.events.last_id == last


def test_scale_and_long_poll_events(stack):
    cursor = httpx.get(stack.url + "/api/events", headers=AUTH, timeout=10).json()["next"]
    # Nothing new: the long poll returns empty after `wait`.
    t0 = time.monotonic()
    r = httpx.get(stack.url + f"/api/events?after={cursor}&wait=0.5", headers=AUTH, timeout=10).json()
    assert r["events"] == [] and 0.4 < time.monotonic() - t0 < 3
    # A long poll in flight wakes up when the scale event is emitted.
    got = {}

    def poll():
        t = time.monotonic()
        got["r"] = httpx.get(stack.url + f"/api/events?after={cursor}&wait=20", headers=AUTH, timeout=30).json()
        got["t"] = time.monotonic() - t

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.5)
    r = httpx.post(stack.url + "/api/scale", headers=AUTH, json={"service": "acts", "replicas": 2}, timeout=10)
    assert r.status_code == 200 and r.json()["desired"] == 2
    th.join(30)
    assert got["t"] < 5
    first = got["r"]["events"][0]
    assert first["kind"] == "scaled" and first["reason"] == "scaled acts 1\u21922: manual scale (admin API)"
    stack.wait(lambda: stack.orch.converged() and len(stack.gw.pool("acts").replicas) == 2, 40, "2 ready")
    evs = httpx.get(stack.url + f"/api/events?after={cursor}&limit=2", headers=AUTH, timeout=10).json()
    assert len(evs["events"]) == 2 and evs["next"] == evs["events"][-1]["id"]
    assert httpx.get(stack.url + "/api/events?after=x", headers=AUTH, timeout=10).status_code == 400
    httpx.post(stack.url + "/api/scale", headers=AUTH, json={"service": "acts", "replicas": 1}, timeout=10)
    stack.wait(lambda: stack.orch.converged() and stack.orch.services["acts"].desired == 1, 40, "back to 1")


def test_history_has_the_request_rate_of_the_last_seconds(stack):
    with httpx.Client(base_url=stack.gateway_url, timeout=10) as client:
        t_end = time.monotonic() + 3.5
        while time.monotonic() < t_end:
            client.get("/api/v1/categories")
            time.sleep(0.02)
    deadline = time.monotonic() + 15
    while True:
        h = httpx.get(stack.url + "/api/history?seconds=60", headers=AUTH, timeout=10).json()
        points = h["services"]["acts"]
        if sum(1 for _, rate in points if rate > 5) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert h["interval"] == 1.0 and set(h["services"]) == {"acts"}
    assert sum(1 for _, rate in points if rate > 5) >= 2, points
    now = time.time()
    assert all(now - 61 < t <= now + 1 for t, _ in points)
    for bad in ("0", "-1", "601", "soon"):
        r = httpx.get(stack.url + "/api/history", params={"seconds": bad}, headers=AUTH, timeout=10)
        assert r.status_code == 400 and "seconds must be" in r.json()["error"]


def test_shutdown_route_calls_back(stack):
    r = httpx.post(stack.url + "/api/shutdown", headers=AUTH, timeout=10)
    assert r.status_code == 202 and r.json() == {"status": "shutting down"}
    deadline = time.monotonic() + 5
    while stack.shutdown_calls == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stack.shutdown_calls == 1


def test_unknown_routes_and_methods_are_json(stack):
    r = httpx.get(stack.url + "/api/nope", headers=AUTH, timeout=10)
    assert r.status_code == 404 and "no such route" in r.json()["error"]
    r = httpx.get(stack.url + "/api/scale", headers=AUTH, timeout=10)
    assert r.status_code == 405 and "not allowed" in r.json()["error"]


def test_keep_alive_answers_are_not_held_by_nagle(stack):
    """Accepted sockets get TCP_NODELAY: otherwise every answer on a reused connection waits ~40 ms
    (Nagle + delayed ACK), which a 1 s dashboard poll or a scraper would feel."""
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=10) as c:
        c.get("/api/status")
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            assert c.get("/api/status").status_code == 200
            times.append(time.perf_counter() - t0)
    assert min(times) < 0.030, times


def test_log_tail_reads_the_last_lines_as_written(tmp_path):
    from selfieless.admin.log_routes import read_tail

    log = tmp_path / "r.log"
    log.write_bytes(b"one\ntwo\nthree\nunfinished")
    end = log.stat().st_size
    assert read_tail(log, 0) == ("", end)  # -n 0: nothing of the past, only what comes next
    assert read_tail(log, 2) == ("three\nunfinished", end)  # the rest of the line comes later
    assert read_tail(log, 10) == ("one\ntwo\nthree\nunfinished", end)
    log.write_bytes(b"a\nb\n")
    assert read_tail(log, 1) == ("b\n", 4)
