"""A replica that falls silent under load (SIGSTOP: what a cut node looks like from the gateway),
through the real control plane and gateway: it leaves the rotation as soon as the gateway sees it
stall, its probe then makes it unhealthy, no GET fails, and no POST hangs or is replayed.

The course's probe settings are used (1 s interval, 1 s timeout, failure threshold 1).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from selfieless.orchestrator.assemble import start_system

from orch_helpers import Load, echo_stack
from support.ports import free_port_range

pytestmark = pytest.mark.anyio

COURSE_HEALTH = {"interval": 1.0, "timeout": 1.0, "failure_threshold": 1}


async def test_a_silent_replica_fails_no_get_and_no_post_hangs(tmp_path):
    ports = free_port_range(6)
    stack = echo_stack(ports, health=COURSE_HEALTH, replicas={"initial": 3, "min": 1, "max": 6})
    system = await start_system(stack, tmp_path)
    orch = system.orchestrator
    base = f"http://127.0.0.1:{system.gateway.port}/api/v1"
    load = None
    victim = None
    try:
        await orch.wait_converged(30)
        load = Load(f"{base}/echo", concurrency=4, pause=0.001).start()
        await asyncio.sleep(1.0)
        reps = orch.status()["services"]["echo"]["replicas"]
        victim = next(r for r in reps if r["state"] == "ready")
        since = orch.events.last_id
        os.kill(victim["pid"], signal.SIGSTOP)
        t0 = time.monotonic()
        posts: list[tuple[int, float, str]] = []

        async def post_until_unhealthy():
            async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
                while not any(e.kind == "unhealthy" and e.replica == victim["id"] for e in orch.events.since(since)):
                    p0 = time.monotonic()
                    r = await c.post(f"{base}/upload", content=b"x" * 100)
                    posts.append((r.status_code, time.monotonic() - p0, r.text))

        await asyncio.wait_for(post_until_unhealthy(), 30)
        events = [e for e in orch.events.since(since) if e.replica == victim["id"]]
        withdrawn = next(e for e in events if e.kind == "withdrawn")
        unhealthy = next(e for e in events if e.kind == "unhealthy")
        await asyncio.sleep(1.0)
        await load.stop()
        print(f"\nsilent replica: withdrawn after {withdrawn.ts - (time.time() - (time.monotonic() - t0)):.2f} s, "
              f"unhealthy after {unhealthy.ts - (time.time() - (time.monotonic() - t0)):.2f} s; "
              f"GETs {load.ok} ok, {len(load.failures)} failed; POSTs {[s for s, _, _ in posts]}")
        assert load.failures == [], load.failures[:5]
        assert "stalled" in withdrawn.reason and withdrawn.id < unhealthy.id
        # A POST that reached the silent replica got a 502 once its probe failed (its removal as
        # failed, before the replacement kills it), never a hang to the client's timeout, nor a
        # replay (the echo app answers 200 to a POST it got).
        assert all(s == 200 or (s == 502 and "health check" in text) for s, _, text in posts), posts
        assert max(t for _, t, _ in posts) < 10, posts
    finally:
        if load is not None and not load._stop.is_set():
            await load.stop()
        if victim is not None:
            try:
                os.kill(victim["pid"], signal.SIGCONT)
            except ProcessLookupError:
                pass  # replaced (killed) already
        await system.stop()
