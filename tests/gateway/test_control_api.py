"""The gateway's control API without sockets: the Starlette app over an unstarted Gateway.

Checks what the control plane relies on: ops applied in order, a bad batch refused whole with a
400 that says why, the token, the long poll's events and counters, and that the counters survive
the trip through JSON (the autoscaler and the metrics read them on the other side).
"""

import asyncio

import pytest
from starlette.testclient import TestClient

from selfieless.gateway import Gateway, GatewayConfig
from selfieless.gateway.control import GatewayControl
from selfieless.gateway.control_api import ControlServer, EventFeed, create_control_app
from selfieless.gateway.control_client import RemoteGateway, stats_from_snapshot


def app_for(gw: Gateway, token=None):
    server = ControlServer(gw, "/nonexistent/unused.sock", token=token)  # wires the callbacks; not started
    return server, TestClient(server.app)


def test_both_implementations_satisfy_the_protocol():
    assert isinstance(Gateway(GatewayConfig()), GatewayControl)
    assert isinstance(RemoteGateway("/nonexistent/unused.sock"), GatewayControl)


def test_ops_apply_in_order_and_a_bad_batch_changes_nothing():
    gw = Gateway(GatewayConfig(port=0))
    _, client = app_for(gw)
    r = client.post("/control/ops", json={"ops": [
        {"op": "routes", "routes": {"/api/v1": "echo"}},
        {"op": "add", "service": "echo", "id": "a", "host": "127.0.0.1", "port": 9001},
        {"op": "add", "service": "echo", "id": "b", "host": "127.0.0.1", "port": 9002},
        {"op": "remove", "service": "echo", "id": "a"},
        {"op": "limits", "balance": "least_outstanding", "limits": {"connect_timeout": 1.5}},
    ]})
    assert r.status_code == 200 and r.json() == {"applied": 5}
    assert [v.id for v in gw.backends("echo")] == ["b"]
    assert gw.routes.routes == {"/api/v1": "echo"}
    assert gw.config.balance == "least_outstanding" and gw.config.connect_timeout == 1.5

    for bad, why in [
        ({"op": "routes", "routes": {"/x": ""}}, "routes"),                      # a route with no service
        ({"op": "limits", "balance": "round_robin", "limits": {"nope": 1}}, "limits"),  # unknown setting
        ({"op": "add", "service": "echo", "id": "c", "host": "h", "port": 0}, "port"),  # out of range
        ({"op": "explode"}, "op"),
    ]:
        r = client.post("/control/ops", json={"ops": [{"op": "remove", "service": "echo", "id": "b"}, bad]})
        assert r.status_code == 400 and why in r.json()["error"], (bad, r.text)
        assert [v.id for v in gw.backends("echo")] == ["b"]  # the good op before it was not applied
    assert client.post("/control/ops", content=b"{not json").status_code == 400


def test_token_is_required_when_set():
    gw = Gateway(GatewayConfig(port=0))
    _, client = app_for(gw, token="s3cret")
    assert client.get("/control/info").status_code == 401
    assert client.get("/control/info", headers={"authorization": "Bearer wrong"}).status_code == 401
    r = client.get("/control/info", headers={"authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.json()["pid"] > 0


def test_poll_reports_events_after_a_cursor_with_the_counters():
    gw = Gateway(GatewayConfig(port=0))
    server, client = app_for(gw)
    gw.add_backend("echo", "a", "127.0.0.1", 9001)
    st = gw.stats("echo")
    st.api_requests, st.requests = 7, 9
    st.latency.observe(0.003)
    st.latency.observe(20.0)  # the +Inf bucket
    gw._ejected("echo", "a", "connection refused")      # what the pool calls on a passive ejection
    gw.backend_error("echo", "a", 500)
    gw.wait_for_backend("echo")
    first = client.get("/control/poll", params={"after": 0, "wait": 0}).json()
    assert [(e["kind"], e["id"], e["detail"]) for e in first["events"]] == [
        ("eject", "a", "connection refused"), ("replica_error", "a", 500), ("no_replica", None, None)]
    assert first["next"] == 3 and first["instance"] == server.instance
    assert first["pools"]["echo"][0]["id"] == "a"
    rebuilt = stats_from_snapshot(first["stats"]["echo"])
    assert rebuilt.snapshot() == st.snapshot()  # the cumulative buckets (with +Inf) come back equal
    assert client.get("/control/poll", params={"after": 3, "wait": 0}).json()["events"] == []
    assert client.get("/control/poll", params={"after": "x"}).status_code == 400


def test_event_feed_long_poll_wakes_on_a_new_event():
    async def scenario():
        feed = EventFeed(maxlen=2)
        waiter = asyncio.create_task(feed.wait_after(0, 30))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        feed.add("eject", "echo", "a", "reset")
        assert [e["seq"] for e in await asyncio.wait_for(waiter, 5)] == [1]
        for i in range(3):
            feed.add("replica_error", "echo", "a", 500)
        assert [e["seq"] for e in feed.after(0)] == [3, 4]  # bounded: the oldest are dropped
        assert await feed.wait_after(4, 0.01) == []

    asyncio.run(scenario())


@pytest.mark.parametrize("body", [{"service": "echo", "id": "a"}, {"service": "echo", "id": "a", "timeout": -1}])
def test_drain_needs_a_valid_timeout(body):
    gw = Gateway(GatewayConfig(port=0))
    _, client = app_for(gw)
    assert client.post("/control/drain", json=body).status_code == 400


def test_create_control_app_is_usable_alone():
    gw = Gateway(GatewayConfig(port=0))
    client = TestClient(create_control_app(gw, EventFeed(), instance="i"))
    assert client.get("/control/info").json()["instance"] == "i"


def test_a_poll_with_a_revision_gets_only_what_changed():
    gw = Gateway(GatewayConfig(port=0))
    server, client = app_for(gw)
    with client:  # one event loop for all the requests (the feed's waits are bound to it)
        _revision_polls(gw, server, client)


def _revision_polls(gw, server, client):
    gw.add_backend("echo", "a", "127.0.0.1", 9001)
    gw.add_backend("other", "b", "127.0.0.1", 9002)
    gw.stats("echo")
    gw.stats("other")
    first = client.get("/control/poll", params={"after": 0, "wait": 0, "rev": 0}).json()  # holds nothing
    assert set(first["stats"]) == {"echo", "other"} and set(first["pools"]) == {"echo", "other"}
    held = {"after": first["next"], "instance": server.instance, "rev": first["rev"], "every": 0.05}

    # Nothing changes: the long poll ends after `wait`, with nothing in it.
    idle = client.get("/control/poll", params={**held, "wait": 0.3}).json()
    assert (idle["stats"], idle["pools"], idle["events"], idle["rev"]) == ({}, {}, [], first["rev"])

    # One service's counters change: the poll answers with those alone, long before `wait`.
    gw.stats("echo").requests += 1
    changed = client.get("/control/poll", params={**held, "wait": 20}).json()
    assert list(changed["stats"]) == ["echo"] and changed["stats"]["echo"]["requests"] == 1
    assert changed["pools"] == {} and changed["rev"] > first["rev"]

    # An event is answered at once, with the counters as they are.
    gw.backend_error("other", "b", 502)
    held = {**held, "rev": changed["rev"]}
    ev = client.get("/control/poll", params={**held, "wait": 20}).json()
    assert [e["kind"] for e in ev["events"]] == ["replica_error"] and ev["stats"] == {}

    # A reader holding another gateway instance's revision gets everything, at once.
    other = client.get("/control/poll", params={**held, "instance": "old", "wait": 20}).json()
    assert set(other["stats"]) == {"echo", "other"} and set(other["pools"]) == {"echo", "other"}
    assert client.get("/control/poll", params={**held, "rev": "x"}).status_code == 400


def test_a_failed_remove_and_a_withdrawal_cross_the_control_api():
    """`remove` carries `failed` (the gateway then gives up what waits on the backend), and a
    withdrawn backend is reported as a `withdraw` event that reaches `on_withdraw` on the other side."""
    gw = Gateway(GatewayConfig(port=0))
    _, client = app_for(gw)
    gw.add_backend("echo", "a", "127.0.0.1", 9001)
    gw.add_backend("echo", "b", "127.0.0.1", 9002)
    r = client.post("/control/ops", json={"ops": [{"op": "remove", "service": "echo", "id": "a", "failed": True}]})
    assert r.status_code == 200 and [v.id for v in gw.backends("echo")] == ["b"]
    r = client.post("/control/ops", json={"ops": [{"op": "remove", "service": "echo", "id": "b", "failed": "x"}]})
    assert r.status_code == 400 and "failed" in r.json()["error"]

    remote = RemoteGateway("/nonexistent/unused.sock")
    remote.remove_backend("echo", "a", failed=True)
    remote.remove_backend("echo", "b")
    assert remote._ops == [{"op": "remove", "service": "echo", "id": "a", "failed": True},
                           {"op": "remove", "service": "echo", "id": "b"}]

    gw.on_withdraw("echo", "b", "stalled: no response byte for 0.61 s")  # what the sweep calls
    events = client.get("/control/poll", params={"after": 0, "wait": 0}).json()["events"]
    assert [(e["kind"], e["id"]) for e in events] == [("withdraw", "b")]
    heard = []
    remote.on_withdraw = lambda *a: heard.append(a)
    remote._dispatch(events[0])
    assert heard == [("echo", "b", "stalled: no response byte for 0.61 s")]

    gw.on_stalled_together("echo", "every replica in rotation (2) has held reads for 2.0 s")
    [event] = client.get("/control/poll", params={"after": events[0]["seq"], "wait": 0}).json()["events"]
    assert (event["kind"], event["service"], event["id"]) == ("stalled_together", "echo", None)
    remote.on_stalled_together = lambda *a: heard.append(a)
    remote._dispatch(event)
    assert heard[-1] == ("echo", "every replica in rotation (2) has held reads for 2.0 s")
