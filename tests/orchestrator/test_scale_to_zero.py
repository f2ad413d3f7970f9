"""Scale to zero (rate policy, replicas.min 0): idle -> no replica; a burst of held requests is
answered by the replica started for them. Process driver, real gateway, echo-app replicas."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from selfieless.orchestrator.assemble import start_system

from orch_helpers import echo_stack, kinds, wait_until

pytestmark = pytest.mark.anyio


async def test_idle_goes_to_zero_and_a_burst_of_20_is_all_answered(tmp_path, ports):
    stack = echo_stack(ports, replicas={"initial": 1, "min": 0, "max": 3},
                       autoscale={"policy": "rate", "target_rps_per_replica": 1000, "window_seconds": 0.5,
                                  "scale_in_delay": 0.5, "scale_to_zero_after": 1.0})
    system = await start_system(stack, tmp_path, gateway_overrides={"host": "127.0.0.1"})
    orch = system.orchestrator
    try:
        await orch.wait_converged(20)
        await wait_until(lambda: orch.services["echo"].desired == 0 and not orch.services["echo"].replicas,
                         30, what="scale to zero")
        url = f"http://127.0.0.1:{system.gateway.port}/api/v1/who"
        async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
            answers = await asyncio.gather(*(c.get(url) for _ in range(20)))
        assert [r.status_code for r in answers] == [200] * 20
        assert len({r.json()["pid"] for r in answers}) == 1
        assert any("scale from zero" in e.reason for e in orch.events.since(0) if e.kind == "scaled")
        assert "ready" in kinds(orch)
    finally:
        await system.stop()


async def test_a_replica_slower_to_boot_than_the_idle_period_still_answers_the_requests_that_woke_it(
        tmp_path, ports):
    # The replica needs 2.5 s to listen; the service may go back to zero after 0.5 s idle. The held
    # requests count as activity until the gateway's hold for them ends, so the replica woken for
    # them is not stopped again while they wait (before: desired went 0->1->0 and all 20 got 503).
    stack = echo_stack(ports, replicas={"initial": 1, "min": 0, "max": 3},
                       environment={"ECHO_START_DELAY": "2.5"},
                       health={"start_grace": 30},
                       autoscale={"policy": "rate", "target_rps_per_replica": 1000, "window_seconds": 0.5,
                                  "scale_in_delay": 0.5, "scale_to_zero_after": 0.5})
    system = await start_system(stack, tmp_path, gateway_overrides={"host": "127.0.0.1"})  # holds up to 10 s
    orch = system.orchestrator
    try:
        await orch.wait_converged(30)
        await wait_until(lambda: orch.services["echo"].desired == 0 and not orch.services["echo"].replicas,
                         30, what="scale to zero")
        url = f"http://127.0.0.1:{system.gateway.port}/api/v1/who"
        async with httpx.AsyncClient(trust_env=False, timeout=60) as c:
            answers = await asyncio.gather(*(c.get(url) for _ in range(20)))
        assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers[:1]]
        scaled = [e.reason for e in orch.events.since(0) if e.kind == "scaled"]
        assert sum("scale from zero" in r for r in scaled) == 1, scaled
    finally:
        await system.stop()


async def test_window_policy_cannot_scale_to_zero(ports):
    from selfieless.orchestrator.stack import StackError

    with pytest.raises(StackError, match="rate"):
        echo_stack(ports, replicas={"initial": 1, "min": 0, "max": 3}, autoscale={"policy": "window"})
