"""Probe scheduling (orchestrator/probing.py): the shared ticks ready replicas are probed on, and the
probe loops that keep to them. The loops run against a probe that answers at once (no sockets)."""

from __future__ import annotations

import asyncio
import math

import pytest

from selfieless.orchestrator.probing import Probing, next_tick
from selfieless.orchestrator.replica import Replica, ReplicaState as S
from selfieless.orchestrator.service import ServiceRuntime
from selfieless.orchestrator.stack import parse_stack




@pytest.mark.parametrize("tick, now, interval, expected", [
    (None, 100.3, 1.0, 101.0),     # just ready: the next grid point
    (None, 100.0, 1.0, 101.0),     # on a grid point: the following one, not the same
    (101.0, 101.002, 1.0, 102.0),  # sent a little after its tick: the next tick
    (101.0, 100.9995, 1.0, 102.0),  # a timer fired a hair early: still the next tick, no second probe
    (101.0, 104.6, 1.0, 105.0),    # a slow loop missed ticks: the first one ahead
    (101.0, 101.1, 2.0, 102.0),    # the interval was changed: onto the new grid at once
    (None, 7.0, 0.25, 7.25),
])
def test_next_tick(tick, now, interval, expected):
    assert next_tick(tick, now, interval) == pytest.approx(expected)


@pytest.mark.parametrize("interval", [0.1, 0.25, 1.0, 1.5, 2.0, 30.0])
def test_ticks_never_come_later_than_the_interval_and_stay_on_the_grid(interval):
    now, tick = 12_345.678, None
    for step in range(1000):
        nxt = next_tick(tick, now, interval)
        assert now < nxt <= now + interval + 1e-9
        assert abs(nxt / interval - round(nxt / interval)) < 1e-6
        tick, now = nxt, nxt + (step % 7) * 1e-4  # the probe is sent at or a little after its tick


def _stack(interval: str):
    return parse_stack({
        "name": "demo", "driver": "process",
        "services": {"acts": {
            "command": ["python", "-m", "acts", "--port", "{port}"], "host_ports": "8000-8003", "routes": ["/api/v1"],
            "replicas": {"initial": 1, "min": 1, "max": 4},
            "health": {"path": "/api/v1/_health", "interval": interval, "timeout": "1s"},
        }},
    })


def _loops(n: int, interval: str = "0.2s"):
    """Probing of `n` ready replicas with a probe that records when each replica was probed."""
    svc = ServiceRuntime("acts", _stack(interval).services["acts"], desired=n)
    probed: dict[str, list[float]] = {}

    async def probe(host, port, path, timeout):
        probed.setdefault(f"r{port - 8000}", []).append(asyncio.get_running_loop().time())
        return True, "200"

    probing = Probing(lambda svc, rep, ok: None, lambda: asyncio.get_running_loop().time(), probe)
    for i in range(n):
        svc.replicas[f"r{i}"] = Replica(id=f"r{i}", service="acts", port=8000 + i, state=S.READY)
    return svc, probing, probed


@pytest.mark.anyio
async def test_replicas_started_apart_are_probed_at_the_same_ticks():
    svc, probing, probed = _loops(3)
    for rep in svc.replicas.values():
        probing.start(svc, rep)
        await asyncio.sleep(0.07)  # each on its own phase
    await asyncio.sleep(1.0)
    for t in probing.tasks.values():
        t.cancel()
    # After each one's first probe, every probe of one replica falls on a tick of the others: the
    # timers of one tick fire in one pass of the loop (however late, on a busy machine).
    last_start = max(times[0] for times in probed.values())
    later = {rid: [t for t in times if t > last_start] for rid, times in probed.items()}
    assert all(len(times) >= 2 for times in later.values()), probed
    for t in later["r0"]:
        for rid in ("r1", "r2"):
            assert min(abs(t - u) for u in later[rid]) < 0.02, probed
    for times in later.values():  # once a tick: never two probes in one 0.2 s slot of the grid
        # (late is allowed, a busy machine fires timers late; 10 ms early for the clock's resolution)
        slots = [math.floor((t + 0.01) / 0.2) for t in times]
        assert slots == sorted(set(slots)), times


@pytest.mark.anyio
async def test_a_hint_brings_a_probe_at_once_and_the_tick_stays():
    svc, probing, probed = _loops(1, "5s")
    rep = svc.replicas["r0"]
    probing.start(svc, rep)
    deadline = asyncio.get_running_loop().time() + 10
    while not probed.get("r0"):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    probing.hint("r0")
    while len(probed["r0"]) < 2:
        assert asyncio.get_running_loop().time() < deadline, "the hint brought no probe"
        await asyncio.sleep(0.01)
    first, hinted = probed["r0"]
    assert hinted - first < 4.0  # long before the next tick 5 s on
    probing.hint("r0")  # a second hint: again a probe, but never within HINTED_PROBE_GAP of the last
    while len(probed["r0"]) < 3:
        assert asyncio.get_running_loop().time() < deadline, "the second hint brought no probe"
        await asyncio.sleep(0.01)
    assert probed["r0"][2] - hinted >= 0.05 - 1e-3
    probing.stop(rep)
