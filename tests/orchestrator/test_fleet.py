"""The decisions about a gateway on every node (orchestrator/fleet.py), as tables: whom to attach
and let go, counters summed (and kept monotonic when a gateway is replaced), views merged."""

import pytest

from selfieless.gateway.pool import ReplicaView
from selfieless.gateway.stats import ServiceStats
from selfieless.orchestrator.fleet import Ledger, add_stats, attachments, merge_views, sum_stats


@pytest.mark.parametrize("held, seen, attach, detach", [
    ([], [], [], []),
    ([], ["10.0.0.2", "10.0.0.1"], ["10.0.0.1", "10.0.0.2"], []),         # first look: every node
    (["10.0.0.1"], ["10.0.0.1", "10.0.0.3"], ["10.0.0.3"], []),           # a node joined
    (["10.0.0.1", "10.0.0.2"], ["10.0.0.1"], [], ["10.0.0.2"]),           # a node down or drained
    (["10.0.0.1", "10.0.0.2"], ["10.0.0.2", "10.0.0.3"], ["10.0.0.3"], ["10.0.0.1"]),
    (["10.0.0.1"], ["10.0.0.1"], [], []),                                 # a replaced task: same node
])
def test_attachments(held, seen, attach, detach):
    assert attachments(held, seen) == (attach, detach)


def _stats(name="acts", api=0, requests=0, first=None, s2=0, s5=0, lat=(), retries=0, withdrawals=0):
    st = ServiceStats(name)
    st.api_requests, st.requests, st.first_request_at, st.retries = api, requests, first, retries
    st.withdrawals = withdrawals
    st.status_classes = [0, 0, s2, 0, 0, s5]
    for seconds in lat:
        st.latency.observe(seconds)
    return st


def _key(st):
    return (st.service, st.api_requests, st.requests, st.first_request_at, st.status_classes, st.retries,
            st.withdrawals, st.latency.counts, round(st.latency.sum, 6), st.latency.count)


@pytest.mark.parametrize("a, b, want", [
    (None, None, None),
    (_stats(api=3, first=5.0), None, _stats(api=3, first=5.0)),
    (None, _stats(api=3, first=5.0), _stats(api=3, first=5.0)),
    (_stats(api=3, requests=4, first=5.0, s2=4, lat=(0.01,), retries=1),
     _stats(api=2, requests=2, first=2.0, s2=1, s5=1, lat=(0.3, 0.01), withdrawals=1),
     _stats(api=5, requests=6, first=2.0, s2=5, s5=1, lat=(0.01, 0.3, 0.01), retries=1, withdrawals=1)),
    (_stats(api=0), _stats(api=1, first=9.0), _stats(api=1, first=9.0)),   # the only first request
])
def test_add_stats(a, b, want):
    got = add_stats(a, b)
    assert (got is None) == (want is None)
    if want is not None:
        assert _key(got) == _key(want)
        assert got is not a and got is not b


def test_sum_stats_adds_per_service_and_keeps_services_only_one_gateway_saw():
    total = sum_stats([{"acts": _stats(api=2), "users": _stats("users", api=1)}, {"acts": _stats(api=5)}, {}])
    assert {name: st.api_requests for name, st in total.items()} == {"acts": 7, "users": 1}


def _view(rid, state="ready", in_flight=0, served=0):
    return ReplicaView(rid, "10.0.0.9", 30000, state, in_flight, served)


@pytest.mark.parametrize("per_gateway, want", [
    ([], []),
    ([[_view("a", in_flight=1, served=5)], [_view("a", in_flight=2, served=1)]], [_view("a", "ready", 3, 6)]),
    # one gateway ejected it: it is out of rotation as far as the control plane can tell
    ([[_view("a")], [_view("a", "ejected")]], [_view("a", "ejected")]),
    ([[_view("a", "withdrawn")], [_view("a", "draining")]], [_view("a", "withdrawn")]),
    ([[_view("a", "draining")], [_view("a", "removed")]], [_view("a", "removed")]),
    # a gateway attached a moment ago does not list it yet: the others' view stands
    ([[_view("a"), _view("b")], [_view("b", "ejected")]], [_view("a"), _view("b", "ejected")]),
    ([[_view("b")], [_view("a")]], [_view("b"), _view("a")]),           # first-seen order
])
def test_merge_views(per_gateway, want):
    assert merge_views(per_gateway) == want


def test_ledger_sums_gateways_and_never_goes_down_when_one_is_replaced():
    led = Ledger()
    led.observe("10.0.0.1", "i1", {"acts": _stats(api=10, first=123.0)}, now=50.0)
    led.observe("10.0.0.2", "j1", {"acts": _stats(api=4, first=999.0)}, now=51.0)
    assert led.totals()["acts"].api_requests == 14
    # first_request_at is ours: when a poll first showed a counted request (their clocks differ)
    assert led.totals()["acts"].first_request_at == 50.0
    led.observe("10.0.0.1", "i1", {"acts": _stats(api=12, first=123.0)}, now=52.0)
    assert led.totals()["acts"].api_requests == 16
    # the gateway on 10.0.0.1 was replaced: its new instance counts from 0, its old 12 stay
    led.observe("10.0.0.1", "i2", {}, now=53.0)
    assert led.totals()["acts"].api_requests == 16
    led.observe("10.0.0.1", "i2", {"acts": _stats(api=1, first=7.0)}, now=54.0)
    assert led.totals()["acts"].api_requests == 17
    assert led.totals()["acts"].first_request_at == 50.0
    # a gateway let go (its node left): what it counted stays counted
    led.forget("10.0.0.2")
    assert led.totals()["acts"].api_requests == 17
    led.forget("10.0.0.9")  # never seen: nothing changes
    assert led.totals()["acts"].api_requests == 17


def test_ledger_keeps_no_first_request_before_one_is_counted():
    led = Ledger()
    led.observe("10.0.0.1", "i1", {"acts": _stats(api=0)}, now=50.0)
    assert led.totals()["acts"].first_request_at is None
    led.observe("10.0.0.1", "i1", {"acts": _stats(api=1, first=1.0)}, now=51.0)
    assert led.totals()["acts"].first_request_at == 51.0
