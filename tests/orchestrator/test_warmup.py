"""Warm-up (health.warmup): a new replica that joins while others serve first gets a few GETs of
the warm-up path after its first passing probe, before it counts as ready; a lone replica gets
none. The decision is pure; the loop is driven with a recording probe (the Probe seam)."""

from __future__ import annotations

import asyncio

import pytest

from selfieless.orchestrator.probing import WARMUP_CONCURRENCY, Probing, warmup_requests
from selfieless.orchestrator.replica import Replica, ReplicaState as S
from selfieless.orchestrator.service import ServiceRuntime
from selfieless.orchestrator.stack import StackError, parse_stack

pytestmark = pytest.mark.anyio


def _spec(**health):
    data = {"name": "w", "services": {"acts": {
        "command": ["x"], "host_ports": "9000-9003", "routes": ["/api/v1"], "replicas": {"max": 4},
        "health": {"interval": 0.05, **health}}}}
    return parse_stack(data).services["acts"]


def test_warmup_only_for_a_first_probe_while_another_replica_serves():
    assert warmup_requests(8, S.STARTING, siblings_ready=2) == 8
    assert warmup_requests(8, S.STARTING, siblings_ready=0) == 0     # nothing serves: no delay
    assert warmup_requests(8, S.READY, siblings_ready=2) == 0        # only before it joins
    assert warmup_requests(0, S.STARTING, siblings_ready=2) == 0     # off by default


def test_the_warmup_path_must_be_a_path():
    assert _spec(warmup=8, warmup_path="/api/v1/categories").health.warmup_path == "/api/v1/categories"
    with pytest.raises(StackError):
        _spec(warmup=8, warmup_path="api")


async def test_a_new_replica_is_warmed_up_before_its_first_passing_probe_counts():
    spec = _spec(warmup=10, warmup_path="/warm")
    svc = ServiceRuntime("acts", spec, 2)
    old = Replica(id="old", service="acts", port=9000, state=S.READY)
    new = Replica(id="new", service="acts", port=9001)
    svc.replicas.update({"old": old, "new": new})
    calls: list[str] = []
    in_flight, most = 0, 0

    async def probe(host, port, path, timeout):
        nonlocal in_flight, most
        calls.append(path)
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return True, "200"

    results: list[tuple[int, bool]] = []

    def on_result(svc_, rep, ok):
        results.append((len(calls), ok))
        rep.transition(S.READY, "probe passed")

    probing = Probing(on_result, asyncio.get_running_loop().time, probe)
    probing.start(svc, new)
    for _ in range(200):
        if results:
            break
        await asyncio.sleep(0.01)
    probing.stop(new)
    # The first probe, then 10 warm-up GETs of /warm, at most WARMUP_CONCURRENCY at once, and only
    # then the result that makes it ready.
    assert calls[:11] == ["/api/v1/_health"] + ["/warm"] * 10
    assert results[0] == (11, True)
    assert most == WARMUP_CONCURRENCY
