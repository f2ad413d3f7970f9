"""The runtime with the process driver and real echo-app processes behind the real gateway,
in-process, assembled as `selfieless up` assembles them.

These check the control plane itself (probes, exits, replacement, scaling, adoption, backoff), and
what the gateway's pool and clients see of it; test_end_to_end.py runs the real acts app.
"""

import asyncio
import collections
import os
import signal
import sys
import time

import httpx
import pytest

from selfieless.orchestrator import assemble
from selfieless.orchestrator.assemble import start_system
from selfieless.orchestrator.backoff import BackoffPolicy
from selfieless.orchestrator.drivers.base import LaunchSpec
from selfieless.orchestrator.drivers.process import ProcessDriver
from selfieless.orchestrator.stack import parse_stack

from orch_helpers import echo_command, echo_stack, get_json, kinds, pids_by_port, wait_until

pytestmark = pytest.mark.anyio


async def launch(tmp_path, stack, **kw):
    """The gateway on a free loopback port, the process driver and the orchestrator."""
    system = await start_system(stack, tmp_path, gateway_overrides={"host": "127.0.0.1"}, **kw)
    return system.orchestrator, system


def ready_ports(system, service="echo"):
    """Ports of the replicas the gateway would send a request to now."""
    return sorted(v.port for v in system.gateway.pool(service).replicas if v.state == "ready")


def pool_states(system, service="echo"):
    return {v.port: v.state for v in system.gateway.pool(service).replicas}


async def through_gateway(system, n=1, path="/api/v1/who", timeout=30.0):
    """n GETs through the gateway, one after the other: [(status, json)]."""
    out = []
    async with httpx.AsyncClient(trust_env=False, timeout=timeout) as c:
        for _ in range(n):
            r = await c.get(f"http://127.0.0.1:{system.gateway.port}{path}")
            out.append((r.status_code, r.json()))
    return out


def process_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A child of this test process that was killed stays a zombie until reaped: gone as well.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def test_start_status_replace_after_sigkill(tmp_path, ports):
    stack = echo_stack(ports, replicas={"initial": 2})
    orch, system = await launch(tmp_path, stack)
    try:
        await orch.wait_ready(15)
        assert ready_ports(system) == [ports[0], ports[1]]
        # Routed and balanced by the gateway: four requests, two to each replica.
        answers = await through_gateway(system, 4)
        assert all(st == 200 for st, _ in answers)
        assert collections.Counter(b["pid"] for _, b in answers) == {p: 2 for p in pids_by_port(orch).values()}
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
        assert ready_ports(system) == [ports[0], ports[1]]
        answers = await through_gateway(system, 4)
        assert {b["pid"] for _, b in answers} == set(pids_by_port(orch).values()) and new in pids_by_port(orch).values()
    finally:
        await system.stop()
    assert system.gateway.pool("echo").replicas == []
    assert await ProcessDriver(stack.name, tmp_path).list() == []


class ReadyRecordingDriver(ProcessDriver):
    def __init__(self, *a):
        super().__init__(*a)
        self.ready_ids: list[str] = []

    async def ready(self, handle):
        self.ready_ids.append(handle.id)


async def test_driver_is_told_once_when_each_replica_becomes_ready(tmp_path, ports, monkeypatch):
    """What lets the docker driver take back a starting container's CPU boost."""
    stack = echo_stack(ports, replicas={"initial": 2})
    driver = ReadyRecordingDriver(stack.name, tmp_path)
    monkeypatch.setattr(assemble, "make_driver", lambda *a: driver)
    orch, system = await launch(tmp_path, stack)
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
        await system.stop()


async def test_crash_endpoint_makes_it_unhealthy_and_replaced_on_same_port(tmp_path, ports):
    orch, system = await launch(tmp_path, echo_stack(ports))
    try:
        await orch.wait_ready(15)
        old = pids_by_port(orch)[ports[0]]
        async with httpx.AsyncClient(trust_env=False) as c:
            await c.post(f"http://127.0.0.1:{ports[0]}/api/v1/_crash")
        t0 = time.monotonic()
        new = await wait_until(lambda: (p := pids_by_port(orch).get(ports[0])) and p != old and p, 10,
                               what="replacement after _crash")
        print(f"\n_crash -> new replica ready in {time.monotonic() - t0:.3f} s")
        assert (await get_json(ports[0]))["pid"] == new
        unhealthy = [e for e in orch.events.since(0) if e.kind == "unhealthy"]
        assert unhealthy and "status 500" in unhealthy[0].reason
        assert await through_gateway(system, 2) == [(200, {"pid": new, "port": ports[0], "path": "/api/v1/who"})] * 2
    finally:
        await system.stop()


async def test_sigstop_is_taken_out_and_replaced(tmp_path, ports):
    orch, system = await launch(tmp_path, echo_stack(ports, health={"interval": 0.2, "timeout": 0.3}))
    try:
        await orch.wait_ready(15)
        old = pids_by_port(orch)[ports[0]]
        os.kill(old, signal.SIGSTOP)
        t0 = time.monotonic()
        await wait_until(lambda: ready_ports(system) == [], 5, what="out of rotation")
        t_out = time.monotonic() - t0
        await wait_until(lambda: (p := pids_by_port(orch).get(ports[0])) and p != old, 10, what="replacement")
        print(f"\nSIGSTOP: out of rotation after {t_out:.3f} s, replaced after {time.monotonic() - t0:.3f} s")
        assert process_gone(old)
        await wait_until(lambda: ready_ports(system) == [ports[0]], 10, what="replacement in rotation")
        assert [b["pid"] for _, b in await through_gateway(system, 2)] == [pids_by_port(orch)[ports[0]]] * 2
    finally:
        await system.stop()


async def test_manual_scale_out_and_in_highest_first_with_drain(tmp_path, ports):
    # Replicas that exit the moment they get SIGTERM: only the drain keeps their requests whole.
    stack = echo_stack(ports, drain_timeout=10, environment={"ECHO_EXIT_ON_SIGTERM": "1"})
    orch, system = await launch(tmp_path, stack)
    try:
        await orch.wait_ready(15)
        await orch.scale("echo", 4)
        await orch.wait_ready(15)
        assert ready_ports(system) == list(ports[:4])
        pids = pids_by_port(orch)
        # One slow POST (never replayed) in flight on each of the four replicas (strict round-robin).
        async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
            slow = [asyncio.create_task(c.post(f"http://127.0.0.1:{system.gateway.port}/api/v1/slow?sleep=1.5"))
                    for _ in range(4)]
            await wait_until(lambda: all(v.in_flight == 1 for v in system.gateway.pool("echo").replicas), 10,
                             what="a slow request on each replica")
            scaling = asyncio.create_task(orch.scale("echo", 2))
            # The two highest leave the rotation first (draining) and get no new request...
            await wait_until(lambda: pool_states(system).get(ports[2]) != "ready"
                             and pool_states(system).get(ports[3]) != "ready", 5, what="drain of the highest two")
            quick = await through_gateway(system, 4)
            assert {b["pid"] for _, b in quick} == {pids[ports[0]], pids[ports[1]]}
            # ...and are stopped only once their requests are answered: none is cut off.
            answers = await asyncio.gather(*slow)
            assert [r.status_code for r in answers] == [200] * 4
            assert sorted(r.json()["pid"] for r in answers) == sorted(pids.values())
            await scaling
        await orch.wait_ready(15)
        assert ready_ports(system) == list(ports[:2])
        assert process_gone(pids[ports[2]]) and process_gone(pids[ports[3]])
        drained = [e.replica for e in orch.events.since(0) if e.kind == "drained"]
        # Both drain at once; each is drained when its own slow request is answered.
        assert sorted(d.split("-")[1] for d in drained) == [str(ports[2]), str(ports[3])]
        scaled = [e.reason for e in orch.events.since(0) if e.kind == "scaled"]
        assert scaled == ["scaled echo 1\u21924: manual scale", "scaled echo 4\u21922: manual scale"]
        with pytest.raises(ValueError, match=r"echo: replicas must be between 1 and 10 \(replicas.min"):
            await orch.scale("echo", 11)
        with pytest.raises(ValueError, match="between 1 and 10"):  # the stack's min is 1
            await orch.scale("echo", 0)
    finally:
        await system.stop()


async def test_restart_adopts_same_replicas_without_duplicates(tmp_path, ports):
    stack = echo_stack(ports, replicas={"initial": 2})
    orch, system = await launch(tmp_path, stack)
    await orch.wait_ready(15)
    before = pids_by_port(orch)
    await system.stop(detach=True)  # the orchestrator and gateway go away, the replicas do not

    orch2, system2 = await launch(tmp_path, stack)
    try:
        await orch2.wait_ready(10)
        assert pids_by_port(orch2) == before
        assert kinds(orch2).count("adopted") == 2 and "start" not in kinds(orch2)
        assert ready_ports(system2) == [ports[0], ports[1]]
        assert {b["pid"] for _, b in await through_gateway(system2, 2)} == set(before.values())
        assert len(await orch2.driver.list()) == 2
        # Adopted replicas are still watched: a kill is noticed and replaced.
        os.kill(before[ports[1]], signal.SIGKILL)
        await wait_until(lambda: (p := pids_by_port(orch2).get(ports[1])) and p != before[ports[1]], 10,
                         what="replacement of an adopted replica")
    finally:
        await system2.stop()
    assert await ProcessDriver(stack.name, tmp_path).list() == []


async def test_adoption_replaces_a_broken_replica(tmp_path, ports):
    stack = echo_stack(ports, replicas={"initial": 2})
    orch, system = await launch(tmp_path, stack)
    await orch.wait_ready(15)
    before = pids_by_port(orch)
    await system.stop(detach=True)
    async with httpx.AsyncClient(trust_env=False) as c:
        await c.post(f"http://127.0.0.1:{ports[1]}/api/v1/_crash")
    orch2, system2 = await launch(tmp_path, stack)
    try:
        await orch2.wait_ready(15)
        after = pids_by_port(orch2)
        assert after[ports[0]] == before[ports[0]] and after[ports[1]] != before[ports[1]]
        assert "unhealthy" in kinds(orch2) and process_gone(before[ports[1]])
        assert {b["pid"] for _, b in await through_gateway(system2, 4)} == set(after.values())
    finally:
        await system2.stop()


def two_service_stack(echo_ports, other_ports, initial=3):
    def svc(ports, route):
        return {"command": echo_command(), "host_ports": f"{ports[0]}-{ports[-1]}", "routes": [route],
                "health": {"interval": 0.2, "timeout": 0.5}, "autoscale": {"policy": "none"}, "drain_timeout": 2,
                "replicas": {"initial": min(initial, len(ports)), "min": 1, "max": len(ports)}}

    return parse_stack({"name": "t", "driver": "process", "gateway": {"port": 0},
                        "services": {"echo": svc(echo_ports, "/api/v1"), "other": svc(other_ports, "/other")}})


async def test_adoption_stops_strays(tmp_path, ports):
    """Replicas left running by an earlier stack that the new one does not have (a port now out
    of range, a service removed) are stopped; the others are adopted."""
    orch, system = await launch(tmp_path, two_service_stack(ports[:3], ports[5:6], initial=3))
    await orch.wait_ready(15)
    echo_before = pids_by_port(orch)
    (other_pid,) = pids_by_port(orch, "other").values()
    assert sorted(echo_before) == list(ports[:3])
    await system.stop(detach=True)

    smaller = echo_stack(ports[:2], replicas={"initial": 2})  # echo on two ports; no "other"
    orch2, system2 = await launch(tmp_path, smaller)
    try:
        await orch2.wait_ready(15)
        assert pids_by_port(orch2) == {p: echo_before[p] for p in ports[:2]}  # adopted, not restarted
        stopped = [e for e in orch2.events.since(0) if e.kind == "stopped"]
        assert sorted(e.replica for e in stopped) == sorted([f"echo-{ports[2]}-{echo_before[ports[2]]}",
                                                             f"other-{ports[5]}-{other_pid}"])
        assert all("not part of this stack" in e.reason for e in stopped)
        await wait_until(lambda: process_gone(echo_before[ports[2]]) and process_gone(other_pid), 10,
                         what="the strays to exit")
        assert sorted(h.port for h in await orch2.driver.list()) == list(ports[:2])
        assert ready_ports(system2) == list(ports[:2])
        assert {b["pid"] for _, b in await through_gateway(system2, 4)} == {echo_before[p] for p in ports[:2]}
    finally:
        await system2.stop()
    assert await ProcessDriver("t", tmp_path).list() == []


async def test_adoption_stops_duplicates(tmp_path, ports):
    """Two live replicas recorded for one port: the older is kept, the newer stopped. Here the
    older one is a process that never listens (a replica stuck before binding), so it then fails
    its probe and is replaced: in the end one serving replica per port."""
    stack = echo_stack(ports[:2], replicas={"initial": 2}, health={"interval": 0.2, "timeout": 0.5,
                                                                    "start_grace": 1})
    # The stuck one, started by the driver as the orchestrator would, before anything holds the port.
    driver = ProcessDriver(stack.name, tmp_path)
    stuck = await driver.start(LaunchSpec(stack=stack.name, service="echo", host_port=ports[0],
                                          command=[sys.executable, "-c", "import time; time.sleep(600)"]))
    await driver.close()
    await asyncio.sleep(0.05)  # a strictly later start time for the duplicate
    orch, system = await launch(tmp_path, stack, adopt=False)  # starts its own replica on ports[0] too
    await orch.wait_ready(15)
    first = pids_by_port(orch)
    await system.stop(detach=True)
    assert sorted((h.port, h.pid) for h in await ProcessDriver(stack.name, tmp_path).list()) == \
        sorted([(ports[0], stuck.pid), (ports[0], first[ports[0]]), (ports[1], first[ports[1]])])

    orch2, system2 = await launch(tmp_path, stack)
    try:
        stopped = [e for e in orch2.events.since(0) if e.kind == "stopped"]
        assert [e.replica for e in stopped] == [f"echo-{ports[0]}-{first[ports[0]]}"]
        assert "duplicate replica on port" in stopped[0].reason and "kept the older one" in stopped[0].reason
        await wait_until(lambda: (p := pids_by_port(orch2).get(ports[0])) and p not in (stuck.pid, first[ports[0]]),
                         15, what="a serving replica on the port of the duplicates")
        await orch2.wait_ready(15)
        after = pids_by_port(orch2)
        assert after[ports[1]] == first[ports[1]]
        assert process_gone(stuck.pid) and process_gone(first[ports[0]])
        handles = await orch2.driver.list()
        assert sorted(h.port for h in handles) == list(ports[:2])
        assert {b["pid"] for _, b in await through_gateway(system2, 4)} == set(after.values())
    finally:
        await system2.stop()
    assert await ProcessDriver(stack.name, tmp_path).list() == []


async def test_crash_loop_backs_off_and_reports(tmp_path, ports):
    stack = echo_stack(ports, command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    policy = BackoffPolicy(initial=0.2, factor=2, maximum=0.8)
    orch, system = await launch(tmp_path, stack, backoff=policy)
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
        # Nothing to route to meanwhile: the gateway answers 503 with a JSON error.
        assert ready_ports(system) == []
    finally:
        await system.stop()


async def test_window_autoscale_from_gateway_counters(tmp_path, ports):
    stack = echo_stack(ports, autoscale={"policy": "window", "window_seconds": 3.0, "requests_per_replica": 20})
    orch, system = await launch(tmp_path, stack)
    try:
        await orch.wait_ready(15)
        await through_gateway(system, 3, path="/api/v1/_health")  # not counted, starts no window
        assert orch.status()["services"]["echo"]["window"]["started"] is False
        answers = await through_gateway(system, 45)  # the first counted request starts the window
        assert all(st == 200 for st, _ in answers)
        await wait_until(lambda: orch.status()["services"]["echo"]["desired"] == 3, 5, what="scale to 3")
        await orch.wait_ready(15)
        assert ready_ports(system) == list(ports[:3])
        scaled = [e.reason for e in orch.events.since(0) if e.kind == "scaled"]
        assert scaled[0].startswith("scaled echo 1\u21923: 45 requests in the window ending")
        # Next window idle: back to min.
        await wait_until(lambda: orch.status()["services"]["echo"]["desired"] == 1, 5, what="scale in")
        await orch.wait_ready(15)
        assert ready_ports(system) == [ports[0]]
        w = orch.status()["services"]["echo"]["window"]
        assert w["started"] and w["count"] == 0 and w["seconds"] == 3.0
    finally:
        await system.stop()


async def test_rate_policy_scales_in_after_the_delay(tmp_path, ports):
    """The README's rate policy at runtime: out as soon as the rate calls for it, back in only
    after scale_in_delay of low rate, and not before."""
    stack = echo_stack(ports, autoscale={"policy": "rate", "target_rps_per_replica": 10, "window_seconds": 2,
                                         "scale_in_delay": 3})
    orch, system = await launch(tmp_path, stack)
    try:
        await orch.wait_ready(15)
        stop = asyncio.Event()

        async def load():  # about 25 req/s: three replicas at 10 per replica
            async with httpx.AsyncClient(trust_env=False, timeout=30) as c:
                while not stop.is_set():
                    await c.get(f"http://127.0.0.1:{system.gateway.port}/api/v1/load")
                    await asyncio.sleep(0.04)

        task = asyncio.create_task(load())
        try:
            await wait_until(lambda: orch.status()["services"]["echo"]["desired"] >= 2, 10, what="scale out")
            await wait_until(lambda: len(ready_ports(system)) >= 2, 15, what="a second replica in rotation")
        finally:
            stop.set()
            await task
        peak = orch.status()["services"]["echo"]["desired"]
        t_idle = time.monotonic()
        await wait_until(lambda: orch.status()["services"]["echo"]["desired"] == 1, 15, what="scale in")
        waited = time.monotonic() - t_idle
        assert waited >= 3 - 0.5, f"scaled in after {waited:.1f} s of low rate, before scale_in_delay (3 s)"
        await orch.wait_ready(15)
        assert ready_ports(system) == [ports[0]]
        scaled = [e.reason for e in orch.events.since(0) if e.kind == "scaled"]
        assert scaled[0].startswith("scaled echo 1\u2192") and "target 10 per replica" in scaled[0]
        assert scaled[-1].startswith("scaled echo ") and scaled[-1].split(":")[0].endswith("\u21921")
        assert "stable for 3 s" in scaled[-1] and peak >= 2
    finally:
        await system.stop()


async def test_passive_ejection_confirmed_by_a_probe(tmp_path, ports):
    # Slow probes and a high threshold: only the ejection path can react quickly here.
    stack = echo_stack(ports, replicas={"initial": 2}, health={"interval": 5, "timeout": 0.3, "failure_threshold": 5})
    orch, system = await launch(tmp_path, stack)
    try:
        await orch.wait_ready(15)
        pids = pids_by_port(orch)
        pool = system.gateway.pool("echo")
        # A false alarm: the gateway ejects a replica that is fine (a one-off reset, which no real
        # replica here can be made to produce on cue, so the gateway's own eject is called). The
        # confirming probe passes and it goes back into rotation.
        rep = next(pool.get(v.id) for v in pool.replicas if v.port == ports[0])
        assert pool.eject(rep, "connection reset")
        await wait_until(lambda: ready_ports(system) == [ports[0], ports[1]], 3, what="back in rotation")
        assert pids_by_port(orch) == pids
        # A real failure: the replica stops accepting connections (its process lives on). A client
        # request meets the refusal, is retried on the other replica, and the gateway ejects it;
        # the confirming probe fails and it is replaced at once.
        async with httpx.AsyncClient(trust_env=False) as c:
            await c.post(f"http://127.0.0.1:{ports[1]}/api/v1/_stop_listening")
        await asyncio.sleep(0.3)  # the listener closes just after that answer
        t0 = time.monotonic()
        answers = await through_gateway(system, 2)
        assert [b["pid"] for _, b in answers] == [pids[ports[0]]] * 2  # both served, by the other one
        await wait_until(lambda: (p := pids_by_port(orch).get(ports[1])) and p != pids[ports[1]], 5,
                         what="replacement after a confirmed ejection")
        assert time.monotonic() - t0 < 4  # well before 5 failed probes at 5 s intervals
        ejected = [e for e in orch.events.since(0) if e.kind == "ejected"]
        assert len(ejected) == 2 and "refused" in ejected[1].reason
        assert "unhealthy" in kinds(orch) and process_gone(pids[ports[1]])
        await wait_until(lambda: ready_ports(system) == [ports[0], ports[1]], 10, what="replacement in rotation")
    finally:
        await system.stop()


async def test_unknown_service_scale_and_status_without_traffic(tmp_path, ports):
    orch, system = await launch(tmp_path, echo_stack(ports, replicas={"min": 0}))
    try:
        with pytest.raises(KeyError):
            await orch.scale("nope", 1)
        await orch.wait_ready(15)
        st = orch.status()
        assert st["stack"] == "t" and st["driver"] == "process" and st["converged"]
        assert st["services"]["echo"]["window"] is None and st["services"]["echo"]["api_requests"] == 0
        await orch.scale("echo", 0)
        await orch.wait_ready(10)
        assert ready_ports(system) == [] and orch.status()["services"]["echo"]["actual"] == 0
    finally:
        await system.stop()


async def test_port_taken_by_a_stranger_is_not_probed_and_the_next_port_is_used(tmp_path, ports):
    import socket

    stranger = socket.socket()
    stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    stranger.bind(("127.0.0.1", ports[0]))
    stranger.listen()
    orch, system = await launch(tmp_path, echo_stack(ports))
    try:
        await orch.wait_ready(15)
        # Never the stranger's server in the pool: our replica, on the next free port.
        assert ready_ports(system) == [ports[1]]
        assert (await get_json(ports[1]))["pid"] == pids_by_port(orch)[ports[1]]
        assert "backoff" not in kinds(orch)
        assert any(f"port {ports[0]} is taken" in e.reason for e in orch.events.since(0) if e.kind == "port")
    finally:
        stranger.close()
        await system.stop()
