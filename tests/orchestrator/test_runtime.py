"""The runtime with the process driver and real echo-app processes, behind a fake gateway pool.

These check the control plane itself (probes, exits, replacement, scaling, adoption, backoff);
test_end_to_end.py runs the same things through the real gateway with client traffic.
"""

import os
import signal
import sys
import time

import pytest

from selfieless.orchestrator.backoff import BackoffPolicy
from selfieless.orchestrator.controller import Orchestrator
from selfieless.orchestrator.drivers.process import ProcessDriver

from orch_helpers import FakeGateway, echo_stack, get_json, kinds, pids_by_port, wait_until

pytestmark = pytest.mark.anyio


async def launch(tmp_path, stack, **kw):
    gw = FakeGateway()
    orch = Orchestrator(stack, ProcessDriver(stack.name, tmp_path), gw, state_dir=str(tmp_path), **kw)
    await orch.start()
    return orch, gw


async def test_start_status_replace_after_sigkill(tmp_path, ports):
    stack = echo_stack(ports, replicas={"initial": 2})
    orch, gw = await launch(tmp_path, stack)
    try:
        await orch.wait_ready(15)
        assert gw.pool("echo").ready_ports() == [ports[0], ports[1]]
        assert gw.routes == {"/api/v1": "echo"} and gw.status_provider is not None
        st = orch.status()
        svc = st["services"]["echo"]
        assert (svc["desired"], svc["actual"], svc["ready"]) == (2, 2, 2)
        r0 = svc["replicas"][0]
        assert set(r0) >= {"id", "port", "state", "health", "in_flight", "requests", "restarts", "pid"}
        assert r0["state"] == "ready" and r0["health"] == "passing" and r0["restarts"] == 0

        old = pids_by_port(orch)[ports[0]]
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = await wait_until(lambda: (p := pids_by_port(orch).get(ports[0])) and p != old and p, 10,
                               what="replacement on the same port")
        elapsed = time.monotonic() - t0
        body = await get_json(ports[0])
        assert body["pid"] == new
        print(f"\nreplacement after SIGKILL ready in {elapsed:.3f} s")
        assert elapsed < 3.0
        ev = kinds(orch)
        assert "exited" in ev and "replaced" in ev
        assert orch.status()["services"]["echo"]["replicas"][0]["restarts"] == 1
        assert gw.pool("echo").ready_ports() == [ports[0], ports[1]]
    finally:
        await orch.stop()
    assert gw.pool("echo").replicas == []
    assert await ProcessDriver(stack.name, tmp_path).list() == []


class ReadyRecordingDriver(ProcessDriver):
    def __init__(self, *a):
        super().__init__(*a)
        self.ready_ids: list[str] = []

    async def ready(self, handle):
        self.ready_ids.append(handle.id)


async def test_driver_is_told_once_when_each_replica_becomes_ready(tmp_path, ports):
    """What lets the docker driver take back a starting container's CPU boost."""
    stack = echo_stack(ports, replicas={"initial": 2})
    driver = ReadyRecordingDriver(stack.name, tmp_path)
    orch = Orchestrator(stack, driver, FakeGateway(), state_dir=str(tmp_path))
    await orch.start()
    try:
        await orch.wait_ready(15)
        first = sorted(r["id"] for r in orch.status()["services"]["echo"]["replicas"])
        await wait_until(lambda: sorted(driver.ready_ids) == first, 5, what="ready() for both replicas")
        os.kill(pids_by_port(orch)[ports[0]], signal.SIGKILL)
        new = await wait_until(lambda: (r := orch.status()["services"]["echo"]["replicas"][0])["id"] not in first
                               and r["state"] == "ready" and r["id"], 10, what="replacement ready")
        await wait_until(lambda: driver.ready_ids[-1:] == [new], 5, what="ready() for the replacement")
        assert len(driver.ready_ids) == 3
    finally:
        await orch.stop()


async def test_crash_endpoint_makes_it_unhealthy_and_replaced_on_same_port(tmp_path, ports):
    orch, gw = await launch(tmp_path, echo_stack(ports))
    try:
        await orch.wait_ready(15)
        old = pids_by_port(orch)[ports[0]]
        import httpx

        async with httpx.AsyncClient() as c:
            await c.post(f"http://127.0.0.1:{ports[0]}/api/v1/_crash")
        t0 = time.monotonic()
        new = await wait_until(lambda: (p := pids_by_port(orch).get(ports[0])) and p != old and p, 10,
                               what="replacement after _crash")
        print(f"\n_crash -> new replica ready in {time.monotonic() - t0:.3f} s")
        assert (await get_json(ports[0]))["pid"] == new
        unhealthy = [e for e in orch.events.since(0) if e.kind == "unhealthy"]
        assert unhealthy and "status 500" in unhealthy[0].reason
    finally:
        await orch.stop()


async def test_sigstop_is_taken_out_and_replaced(tmp_path, ports):
    orch, gw = await launch(tmp_path, echo_stack(ports, health={"interval": 0.2, "timeout": 0.3}))
    try:
        await orch.wait_ready(15)
        old = pids_by_port(orch)[ports[0]]
        os.kill(old, signal.SIGSTOP)
        t0 = time.monotonic()
        await wait_until(lambda: gw.pool("echo").ready_ports() == [], 5, what="out of rotation")
        t_out = time.monotonic() - t0
        await wait_until(lambda: (p := pids_by_port(orch).get(ports[0])) and p != old, 10, what="replacement")
        print(f"\nSIGSTOP: out of rotation after {t_out:.3f} s, replaced after {time.monotonic() - t0:.3f} s")
        with pytest.raises(ProcessLookupError):
            os.kill(old, 0)
    finally:
        await orch.stop()


async def test_manual_scale_out_and_in_highest_first_with_drain(tmp_path, ports):
    orch, gw = await launch(tmp_path, echo_stack(ports))
    try:
        await orch.wait_ready(15)
        await orch.scale("echo", 4)
        await orch.wait_ready(15)
        assert gw.pool("echo").ready_ports() == list(ports[:4])
        await orch.scale("echo", 2)
        await orch.wait_ready(15)
        assert gw.pool("echo").ready_ports() == list(ports[:2])
        drained = [e.replica for e in orch.events.since(0) if e.kind == "drained"]
        assert [d.split("-")[1] for d in drained] == [str(ports[3]), str(ports[2])]
        for rid in drained:  # out of rotation (drain) before being removed and stopped
            ops = [op for op, r in gw.pool("echo").log if r == rid]
            assert ops.index("drain") < ops.index("remove")
        scaled = [e.reason for e in orch.events.since(0) if e.kind == "scaled"]
        assert scaled == ["scaled echo 1\u21924: manual scale", "scaled echo 4\u21922: manual scale"]
        with pytest.raises(ValueError, match=r"echo: replicas must be between 1 and 10 \(replicas.min"):
            await orch.scale("echo", 11)
        with pytest.raises(ValueError, match="between 1 and 10"):  # the stack's min is 1
            await orch.scale("echo", 0)
    finally:
        await orch.stop()


async def test_restart_adopts_same_replicas_without_duplicates(tmp_path, ports):
    stack = echo_stack(ports, replicas={"initial": 2})
    orch, gw = await launch(tmp_path, stack)
    await orch.wait_ready(15)
    before = pids_by_port(orch)
    await orch.stop(stop_replicas=False)  # the orchestrator goes away, the replicas do not

    orch2, gw2 = await launch(tmp_path, stack)
    try:
        await orch2.wait_ready(10)
        assert pids_by_port(orch2) == before
        assert kinds(orch2).count("adopted") == 2 and "start" not in kinds(orch2)
        assert gw2.pool("echo").ready_ports() == [ports[0], ports[1]]
        assert len(await orch2.driver.list()) == 2
        # Adopted replicas are still watched: a kill is noticed and replaced.
        os.kill(before[ports[1]], signal.SIGKILL)
        await wait_until(lambda: (p := pids_by_port(orch2).get(ports[1])) and p != before[ports[1]], 10,
                         what="replacement of an adopted replica")
    finally:
        await orch2.stop()
    assert await ProcessDriver(stack.name, tmp_path).list() == []


async def test_adoption_replaces_broken_and_stops_strays(tmp_path, ports):
    stack = echo_stack(ports, replicas={"initial": 2})
    orch, _ = await launch(tmp_path, stack)
    await orch.wait_ready(15)
    before = pids_by_port(orch)
    await orch.stop(stop_replicas=False)
    import httpx

    async with httpx.AsyncClient() as c:
        await c.post(f"http://127.0.0.1:{ports[1]}/api/v1/_crash")
    # A smaller stack now: port ports[1] is still in range, but a third stray beyond it is not.
    orch2, gw2 = await launch(tmp_path, stack)
    try:
        await orch2.wait_ready(15)
        after = pids_by_port(orch2)
        assert after[ports[0]] == before[ports[0]] and after[ports[1]] != before[ports[1]]
        assert "unhealthy" in kinds(orch2)
    finally:
        await orch2.stop()


async def test_crash_loop_backs_off_and_reports(tmp_path, ports):
    stack = echo_stack(ports, command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    policy = BackoffPolicy(initial=0.2, factor=2, maximum=0.8)
    orch, _ = await launch(tmp_path, stack, backoff=policy)
    try:
        await wait_until(lambda: kinds(orch).count("backoff") >= 4, 15, what="backoff events")
        backoffs = [e.reason for e in orch.events.since(0) if e.kind == "backoff"]
        assert "next start in 0.2 s" in backoffs[0] and "next start in 0.4 s" in backoffs[1]
        assert "next start in 0.8 s" in backoffs[2] and "next start in 0.8 s" in backoffs[3]
        exits = [e.reason for e in orch.events.since(0) if e.kind == "exited"]
        assert "exited with code 3" in exits[0]
        st = orch.status()["services"]["echo"]
        assert st["crash_loops"] == {str(ports[0]): st["crash_loops"][str(ports[0])]}
        # Starts are spaced out: fewer than 8 starts in the time this took.
        assert kinds(orch).count("start") + kinds(orch).count("replaced") < 8
    finally:
        await orch.stop()


async def test_window_autoscale_from_gateway_counters(tmp_path, ports):
    stack = echo_stack(ports, autoscale={"policy": "window", "window_seconds": 3.0, "requests_per_replica": 20})
    orch, gw = await launch(tmp_path, stack)
    try:
        await orch.wait_ready(15)
        gw.stats("echo").hit(45)  # first counted request starts the window
        await wait_until(lambda: orch.status()["services"]["echo"]["desired"] == 3, 5, what="scale to 3")
        await orch.wait_ready(15)
        assert gw.pool("echo").ready_ports() == list(ports[:3])
        scaled = [e.reason for e in orch.events.since(0) if e.kind == "scaled"]
        assert scaled[0].startswith("scaled echo 1\u21923: 45 requests in the window ending")
        # Next window idle: back to min.
        await wait_until(lambda: orch.status()["services"]["echo"]["desired"] == 1, 5, what="scale in")
        await orch.wait_ready(15)
        assert gw.pool("echo").ready_ports() == [ports[0]]
        w = orch.status()["services"]["echo"]["window"]
        assert w["started"] and w["count"] == 0 and w["seconds"] == 3.0
    finally:
        await orch.stop()


async def test_passive_ejection_confirmed_by_a_probe(tmp_path, ports):
    # Slow probes and a high threshold: only the ejection path can react quickly here.
    stack = echo_stack(ports, replicas={"initial": 2}, health={"interval": 5, "timeout": 0.3, "failure_threshold": 5})
    orch, gw = await launch(tmp_path, stack)
    try:
        await orch.wait_ready(15)
        pids = pids_by_port(orch)
        ids = {r["port"]: r["id"] for r in orch.status()["services"]["echo"]["replicas"]}
        # A false alarm: the replica is fine, so it goes back into rotation.
        gw.pool("echo").remove(ids[ports[0]])
        gw.on_eject("echo", ids[ports[0]], "connection reset")
        await wait_until(lambda: gw.pool("echo").ready_ports() == [ports[0], ports[1]], 3, what="back in rotation")
        assert pids_by_port(orch) == pids
        # A real failure (stopped process): the confirming probe fails, it is replaced at once.
        os.kill(pids[ports[1]], signal.SIGSTOP)
        t0 = time.monotonic()
        gw.pool("echo").remove(ids[ports[1]])
        gw.on_eject("echo", ids[ports[1]], "connection refused")
        await wait_until(lambda: (p := pids_by_port(orch).get(ports[1])) and p != pids[ports[1]], 5,
                         what="replacement after a confirmed ejection")
        assert time.monotonic() - t0 < 4  # well before 5 failed probes at 5 s intervals
        ev = [e.kind for e in orch.events.since(0)]
        assert ev.count("ejected") == 2 and "unhealthy" in ev
    finally:
        await orch.stop()


async def test_unknown_service_scale_and_status_without_traffic(tmp_path, ports):
    orch, gw = await launch(tmp_path, echo_stack(ports, replicas={"min": 0}))
    try:
        with pytest.raises(KeyError):
            await orch.scale("nope", 1)
        await orch.wait_ready(15)
        st = orch.status()
        assert st["stack"] == "t" and st["driver"] == "process" and st["converged"]
        assert st["services"]["echo"]["window"] is None and st["services"]["echo"]["api_requests"] == 0
        await orch.scale("echo", 0)
        await orch.wait_ready(10)
        assert gw.pool("echo").ready_ports() == [] and orch.status()["services"]["echo"]["actual"] == 0
    finally:
        await orch.stop()


async def test_port_taken_by_a_stranger_is_not_probed_and_retried(tmp_path, ports):
    import socket

    stranger = socket.socket()
    stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    stranger.bind(("127.0.0.1", ports[0]))
    stranger.listen()
    policy = BackoffPolicy(initial=0.2, maximum=0.4)
    orch, gw = await launch(tmp_path, echo_stack(ports), backoff=policy)
    try:
        await wait_until(lambda: "backoff" in kinds(orch), 5, what="a backoff event")
        assert "already in use" in next(e.reason for e in orch.events.since(0) if e.kind == "backoff")
        assert gw.pool("echo").ready_ports() == [] and "ready" not in kinds(orch)
        stranger.close()
        await orch.wait_ready(15)
        assert gw.pool("echo").ready_ports() == [ports[0]]
        assert (await get_json(ports[0]))["pid"] == pids_by_port(orch)[ports[0]]
    finally:
        stranger.close()
        await orch.stop()
