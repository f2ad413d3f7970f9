"""Rolling replacement on a running orchestrator with the process driver and the real gateway:
echo-app replicas under a steady GET load, and the real acts app under a GET + POST load; neither
may see a failure, and every write answered 201 must be there after."""

from __future__ import annotations

import sys

import pytest

from selfieless.orchestrator.assemble import start_system
from selfieless.orchestrator.rollout_exec import roll

from orch_helpers import Load, acts_stack, echo_command, echo_stack, kinds, pids_by_port, wait_until
from support.loads import WriteLoad

pytestmark = pytest.mark.anyio


async def launch(tmp_path, ports, **svc):
    stack = echo_stack(ports, replicas={"initial": 3}, update={"monitor": 0.5}, **svc)
    system = await start_system(stack, tmp_path, gateway_overrides={"host": "127.0.0.1"})
    await system.orchestrator.wait_converged(20)
    load = Load(f"http://127.0.0.1:{system.gateway.port}/api/v1/who", concurrency=3).start()
    return system, system.orchestrator, stack, load


def new_spec(stack, command):
    return stack.services["echo"].model_copy(update={"command": command})


def ready_ports(system):
    return sorted(v.port for v in system.gateway.pool("echo").replicas if v.state == "ready")


async def test_roll_to_a_new_command_replaces_every_replica_and_settles_home(tmp_path, ports):
    system, orch, stack, load = await launch(tmp_path, ports)
    try:
        before = pids_by_port(orch)
        result = await roll(orch, "echo", new_spec(stack, echo_command() + ["--v2"]), timeout=60)
        await load.stop()
        assert result.outcome == "complete", result
        assert load.failures == [] and load.ok > 0
        after = pids_by_port(orch)
        assert sorted(after) == list(ports[:3])
        assert not set(after.values()) & set(before.values())
        assert ready_ports(system) == list(ports[:3])
        assert orch.services["echo"].spec.command[-1] == "--v2"
        # An old replica was only ever drained after a new one had joined the rotation.
        events = [e for e in orch.events.since(0) if e.service == "echo"]
        first_drain = next(i for i, e in enumerate(events) if e.kind == "drained")
        assert sum(1 for e in events[:first_drain] if e.kind == "ready") >= 4
        await orch.wait_converged(10)
    finally:
        await load.stop()
        await system.stop()


@pytest.mark.parametrize("broken", ["exits", "unhealthy"])
async def test_broken_new_version_is_rolled_back_and_no_old_replica_stops(tmp_path, ports, broken):
    system, orch, stack, load = await launch(tmp_path, ports,
                                             health={"interval": 0.2, "timeout": 0.5, "start_grace": 2})
    try:
        before = pids_by_port(orch)
        command = ([sys.executable, "-c", "raise SystemExit(3)"] if broken == "exits"
                   else [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"])
        result = await roll(orch, "echo", new_spec(stack, command), timeout=60)
        await load.stop()
        assert result.outcome == "rolled_back", result
        assert "never became healthy" in result.reason
        assert load.failures == [] and load.ok > 0
        assert pids_by_port(orch) == before
        assert "drained" not in kinds(orch)
        assert orch.services["echo"].spec.command == stack.services["echo"].command
        assert "rollback" in kinds(orch)
        await orch.wait_converged(10)
        assert pids_by_port(orch) == before
    finally:
        await load.stop()
        await system.stop()


async def test_acts_rolls_to_a_new_version_under_writes_and_keeps_every_write(tmp_path, ports):
    stack = acts_stack(ports, autoscale={"policy": "none"}, replicas={"initial": 3, "min": 1, "max": 10},
                       environment={"ROLLOUT_VERSION": "1"}, update={"monitor": 0.5})
    system = await start_system(stack, tmp_path)
    orch = system.orchestrator
    load = None
    try:
        await orch.wait_converged(60)
        before = pids_by_port(orch, "acts")
        load = WriteLoad(f"http://127.0.0.1:{system.gateway.port}").start()
        await wait_until(lambda: len(load.created) >= 20, 60, what="writes before the rollout")
        new = stack.services["acts"].model_copy(update={"environment": {"ROLLOUT_VERSION": "2"}})
        result = await roll(orch, "acts", new, timeout=120)
        await load.stop()
        assert result.outcome == "complete", result
        assert load.failures == [] and load.ok > 0
        assert await load.missing() == [] and len(load.created) > 20
        after = pids_by_port(orch, "acts")
        assert sorted(after) == list(ports[:3]) and not set(after.values()) & set(before.values())
        assert orch.services["acts"].spec.environment == {"ROLLOUT_VERSION": "2"}
        # Every replica now was started by the rollout (from the new spec).
        started = {e.replica: e.reason for e in orch.events.since(0) if e.kind == "start" and e.service == "acts"}
        ready_now = [r.id for r in orch.replicas_of("acts") if r.state.value == "ready"]
        assert len(ready_now) == 3 and all(started[r].split(": ", 1)[1].startswith("rollout") for r in ready_now)
    finally:
        if load is not None:
            await load.stop()
        await system.stop()


async def test_rollout_history_survives_a_restart_and_undo_uses_it(tmp_path, ports):
    from selfieless.orchestrator.rollout_exec import HISTORY_FILE, history_json, undo

    stack = echo_stack(ports, replicas={"initial": 2}, update={"monitor": 0.3})
    system = await start_system(stack, tmp_path, gateway_overrides={"host": "127.0.0.1"})
    try:
        await system.orchestrator.wait_converged(20)
        result = await roll(system.orchestrator, "echo", new_spec(stack, echo_command() + ["--v2"]), timeout=60)
        assert result.outcome == "complete", result
    finally:
        await system.stop()
    assert (tmp_path / stack.name / HISTORY_FILE).exists()

    # A new orchestrator on the same state dir (as after restarting `up` with the updated file)
    # knows the rollout, and undo goes back to what it replaced.
    v2 = stack.model_copy(update={"services": {"echo": new_spec(stack, echo_command() + ["--v2"])}})
    system = await start_system(v2, tmp_path, gateway_overrides={"host": "127.0.0.1"})
    orch = system.orchestrator
    try:
        await orch.wait_converged(20)
        assert orch.services["echo"].spec.command[-1] == "--v2"
        (entry,) = history_json(orch, "echo")
        assert entry["outcome"] == "complete" and entry["reason"] == "apply"
        result = await undo(orch, "echo", timeout=60)
        assert result.outcome == "complete", result
        assert orch.services["echo"].spec.command == stack.services["echo"].command
        assert [h["reason"] for h in history_json(orch, "echo")] == ["apply", "rollout undo"]
    finally:
        await system.stop()

    # A damaged file does not stop the stack: the history starts again, and an event says why.
    (tmp_path / stack.name / HISTORY_FILE).write_text("{not json")
    system = await start_system(stack, tmp_path, gateway_overrides={"host": "127.0.0.1"})
    try:
        assert history_json(system.orchestrator, "echo") == []
        assert any("unreadable" in e.reason for e in system.orchestrator.events.since(0))
    finally:
        await system.stop()
