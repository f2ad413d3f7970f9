"""Rolling replacement on a running orchestrator with the process driver and real echo-app
replicas (a fake gateway pool records who was in rotation when)."""

from __future__ import annotations

import sys

import pytest

from selfieless.orchestrator.controller import Orchestrator
from selfieless.orchestrator.drivers.process import ProcessDriver
from selfieless.orchestrator.rollout_exec import roll

from orch_helpers import FakeGateway, echo_command, echo_stack, kinds, pids_by_port

pytestmark = pytest.mark.anyio


async def launch(tmp_path, ports, **svc):
    stack = echo_stack(ports, replicas={"initial": 3}, update={"monitor": 0.5}, **svc)
    gw = FakeGateway()
    orch = Orchestrator(stack, ProcessDriver(stack.name, tmp_path), gw, state_dir=str(tmp_path))
    await orch.start()
    await orch.wait_ready(20)
    return orch, gw, stack


def new_spec(stack, command):
    return stack.services["echo"].model_copy(update={"command": command})


async def test_roll_to_a_new_command_replaces_every_replica_and_settles_home(tmp_path, ports):
    orch, gw, stack = await launch(tmp_path, ports)
    try:
        before = pids_by_port(orch)
        result = await roll(orch, "echo", new_spec(stack, echo_command() + ["--v2"]), timeout=60)
        assert result.outcome == "complete", result
        after = pids_by_port(orch)
        assert sorted(after) == list(ports[:3])
        assert not set(after.values()) & set(before.values())
        assert gw.pool("echo").ready_ports() == list(ports[:3])
        assert orch.services["echo"].spec.command[-1] == "--v2"
        # An old replica was only ever drained after a new one had joined the pool.
        log = gw.pool("echo").log
        first_drain = next(i for i, (op, _) in enumerate(log) if op == "drain")
        assert sum(1 for op, _ in log[:first_drain] if op == "add") >= 4
        await orch.wait_ready(10)
    finally:
        await orch.stop()


@pytest.mark.parametrize("broken", ["exits", "unhealthy"])
async def test_broken_new_version_is_rolled_back_and_no_old_replica_stops(tmp_path, ports, broken):
    orch, gw, stack = await launch(tmp_path, ports, health={"interval": 0.2, "timeout": 0.5, "start_grace": 2})
    try:
        before = pids_by_port(orch)
        command = ([sys.executable, "-c", "raise SystemExit(3)"] if broken == "exits"
                   else [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"])
        result = await roll(orch, "echo", new_spec(stack, command), timeout=60)
        assert result.outcome == "rolled_back", result
        assert "never became healthy" in result.reason
        assert pids_by_port(orch) == before
        assert not any(op == "drain" for op, _ in gw.pool("echo").log)
        assert orch.services["echo"].spec.command == stack.services["echo"].command
        assert "rollback" in kinds(orch)
        await orch.wait_ready(10)
        assert pids_by_port(orch) == before
    finally:
        await orch.stop()
