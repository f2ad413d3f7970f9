"""`apply` on a running orchestrator (process driver, real echo-app replicas, real gateway):
live changes restart nothing; launch changes roll; a failed rollout is reported."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest

from selfieless.admin.api import create_app
from selfieless.orchestrator.apply_exec import apply_stack
from selfieless.orchestrator.assemble import start_system
from selfieless.orchestrator.stack import parse_stack

from orch_helpers import echo_stack, pids_by_port, wait_until

pytestmark = pytest.mark.anyio


def stack_dict(stack):
    return stack.model_dump(mode="json")


def changed(stack, **svc):
    data = stack_dict(stack)
    data["services"]["echo"].update(svc)
    return data


async def launch(tmp_path, ports):
    stack = echo_stack(ports, replicas={"initial": 2}, update={"monitor": 0.3})
    system = await start_system(stack, tmp_path, gateway_overrides={"host": "127.0.0.1"})
    await system.orchestrator.wait_ready(20)
    return system, system.gateway, stack


async def test_route_limit_and_health_changes_restart_nothing(tmp_path, ports):
    system, gw, stack = await launch(tmp_path, ports)
    orch = system.orchestrator
    try:
        before = pids_by_port(orch)
        data = changed(stack, routes=["/api/v1", "/api/v2"], health={"interval": 0.3, "timeout": 0.5})
        data["gateway"]["limits"]["max_body_size"] = 1234
        result = await apply_stack(orch, parse_stack(data), timeout=30)
        assert result.ok, result
        assert gw.routes.match(b"/api/v2/x") == "echo"
        assert gw.config.max_body_size == 1234
        assert orch.services["echo"].spec.health.interval == 0.3
        assert pids_by_port(orch) == before
        assert result.rollouts == []
    finally:
        await system.stop()


async def test_scale_change_is_live_and_command_change_rolls(tmp_path, ports):
    system, gw, stack = await launch(tmp_path, ports)
    orch = system.orchestrator
    try:
        before = pids_by_port(orch)
        result = await apply_stack(orch, parse_stack(changed(stack, replicas={"initial": 3, "min": 3, "max": 10})),
                                   timeout=30)
        assert result.ok, result
        after = pids_by_port(orch)
        assert len(after) == 3 and {p: after[p] for p in before} == before
        cmd = stack.services["echo"].command + ["--v2"]
        result = await apply_stack(orch, parse_stack(changed(orch.stack, command=cmd)), timeout=60)
        assert result.ok and result.rollouts[0]["outcome"] == "complete", result
        assert not set(pids_by_port(orch).values()) & set(after.values())
        assert sorted(pids_by_port(orch)) == list(ports[:3])
    finally:
        await system.stop()


async def test_admin_apply_reports_a_rollback_with_409_and_dry_run_changes_nothing(tmp_path, ports):
    system, gw, stack = await launch(tmp_path, ports)
    orch = system.orchestrator
    app = create_app(orch, gw)
    try:
        before = pids_by_port(orch)
        broken = changed(stack, command=[sys.executable, "-c", "raise SystemExit(3)"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as c:
            r = await c.post("/api/apply", json={"stack": broken, "dry_run": True})
            assert r.status_code == 200 and "roll" in r.json()["actions"][0]
            assert pids_by_port(orch) == before
            r = await c.post("/api/apply", json={"stack": broken}, timeout=60)
            assert r.status_code == 409
            assert "rolled back" in r.json()["error"] and "never became healthy" in r.json()["error"]
            r = await c.post("/api/apply", json={"stack": {"name": "x"}})
            assert r.status_code == 400
        assert pids_by_port(orch) == before
        assert orch.services["echo"].spec.command == stack.services["echo"].command
    finally:
        await system.stop()


async def test_rollout_restart_history_and_undo_through_the_admin_api(tmp_path, ports):
    system, gw, stack = await launch(tmp_path, ports)
    orch = system.orchestrator
    app = create_app(orch, gw)
    try:
        before = pids_by_port(orch)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as c:
            r = await c.post("/api/rollout", json={"service": "echo", "action": "restart"}, timeout=60)
            assert r.status_code == 200 and r.json()["outcome"] == "complete", r.text
            restarted = pids_by_port(orch)
            assert sorted(restarted) == sorted(before) and not set(restarted.values()) & set(before.values())
            v2 = changed(stack, command=stack.services["echo"].command + ["--v2"])
            assert (await c.post("/api/apply", json={"stack": v2}, timeout=60)).status_code == 200
            r = await c.post("/api/rollout", json={"service": "echo", "action": "undo"}, timeout=60)
            assert r.status_code == 200, r.text
            assert orch.services["echo"].spec.command == stack.services["echo"].command
            r = await c.post("/api/rollout", json={"service": "echo", "action": "history"})
            assert [h["reason"] for h in r.json()["history"]][0::2] == ["rollout restart", "rollout undo"]
            # An undo goes back to the previous version: its line does not call that "the new version".
            assert r.json()["history"][-1]["detail"] == "all 2 replica(s) replaced"
            r = await c.post("/api/rollout", json={"service": "nope", "action": "history"})
            assert r.status_code == 400
    finally:
        await system.stop()


async def test_an_apply_of_new_bounds_keeps_a_manual_count_and_replays_no_window(tmp_path, ports):
    # The window autoscaler of a running stack: one window has closed, then `scale echo 4`, then an
    # apply changes only replicas.max. The count stays 4 and no window is reported twice (an
    # autoscaler started afresh put its first window back at the first request and replayed every
    # window since, all but the first empty: 4 -> 1 at once).
    window = 6.0
    stack = echo_stack(ports, autoscale={"policy": "window", "window_seconds": window, "requests_per_replica": 20})
    system = await start_system(stack, tmp_path, gateway_overrides={"host": "127.0.0.1"})
    orch = system.orchestrator
    svc = orch.services["echo"]
    try:
        await orch.wait_ready(20)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.gateway.port}") as c:
            assert (await c.get("/api/v1/whoami")).status_code == 200
        await wait_until(lambda: "window ending" in (svc.last_decision or ""), window + 10,
                         what="the first window to close")
        first = svc.last_decision
        assert first.startswith("kept echo at 1: 1 request in the window ending"), first
        await orch.scale("echo", 4, reason="manual scale")
        after = orch.events.last_id
        data = changed(stack, replicas={"min": 1, "max": len(ports) - 1})
        result = await apply_stack(orch, parse_stack(data), timeout=30)
        assert result.ok and len(result.actions) == 1 and result.actions[0].startswith("scale   echo"), result
        await asyncio.sleep(0.3)  # an autoscaler started afresh replays at once
        scaled = lambda: [e.reason for e in orch.events.since(after) if e.kind == "scaled"]  # noqa: E731
        assert scaled() == [] and svc.desired == 4, scaled()
        # The second window closes on its own schedule, counting no request: back to 1, once.
        await wait_until(scaled, window + 10, what="the second window to close")
        await asyncio.sleep(0.3)
        assert len(scaled()) == 1 and scaled()[0].startswith("scaled echo 4\u21921: 0 requests in the window ending")
        assert scaled()[0].rsplit(" ", 1)[1] != first.rsplit(" ", 1)[1]
    finally:
        await system.stop()


async def test_a_rolled_back_apply_quotes_the_last_lines_of_the_failed_replica(tmp_path, ports):
    system, gw, stack = await launch(tmp_path, ports)
    orch = system.orchestrator
    try:
        broken = changed(stack, command=[sys.executable, "-c", "import selfieless.apps.actz"])
        result = await apply_stack(orch, parse_stack(broken), timeout=60)
        assert not result.ok and "rolled back" in result.reason
        assert "its log ends: " in result.reason and "No module named 'selfieless.apps.actz'" in result.reason, result
        assert any("No module named 'selfieless.apps.actz'" in e.reason for e in orch.events.since(0)
                   if e.kind == "rollback")
    finally:
        await system.stop()


async def test_apply_keeps_the_ports_from_of_up(tmp_path, ports):
    # `up --ports-from P` of a file on other ports: applying that file again moves it the same way
    # (no change), and the running file is what GET /api/stack names.
    system, gw, stack = await launch(tmp_path, ports)
    orch = system.orchestrator
    app = create_app(orch, gw, up_overrides={"ports_from": ports[0], "stack_file": "/srv/stack.yaml"})
    try:
        elsewhere = changed(stack, host_ports=f"{ports[0] + 1000}-{ports[-1] + 1000}")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as c:
            r = await c.post("/api/apply", json={"stack": elsewhere, "dry_run": True})
            assert r.status_code == 200 and r.json()["actions"] == [], r.text
            r = await c.post("/api/apply", json={"stack": elsewhere, "dry_run": True, "ports_from": ports[0] + 1000})
            assert r.status_code == 200 and "host_ports changed" in r.json()["actions"][0], r.text
            r = await c.post("/api/apply", json={"stack": elsewhere, "ports_from": "x"})
            assert r.status_code == 400 and "ports_from" in r.json()["error"]
            r = await c.get("/api/stack")
            assert r.json() == {"file": "/srv/stack.yaml", "port": None, "driver": None, "ports_from": ports[0]}
    finally:
        await system.stop()
