"""The process driver with real child processes on 127.0.0.1."""

import json
import os
import signal

import pytest

from selfieless.orchestrator.drivers.base import LaunchSpec
from selfieless.orchestrator.drivers.process import ProcessDriver

from orch_helpers import echo_command, get_json, wait_until

pytestmark = pytest.mark.anyio


def spec(port, service="echo"):
    cmd = [a.replace("{port}", str(port)) for a in echo_command()]
    return LaunchSpec(stack="t", service=service, host_port=port, command=cmd)


async def test_start_list_stop(tmp_path, ports):
    d = ProcessDriver("t", tmp_path)
    h = await d.start(spec(ports[0]))
    assert h.id == f"echo-{ports[0]}-{h.pid}"
    body = await wait_until(lambda: get_json(ports[0]), 10, what="echo app")
    assert body["pid"] == h.pid
    state = json.loads((tmp_path / "t" / "replicas" / f"{h.id}.json").read_text())
    assert state["pid"] == h.pid and state["port"] == ports[0] and state["service"] == "echo"
    assert [x.id for x in await d.list()] == [h.id]
    assert os.getpgid(h.pid) == h.pid  # own process group
    await d.stop(h, grace=3)
    assert await d.list() == []
    assert await get_json(ports[0], timeout=0.3) is None
    assert (tmp_path / "t" / "logs" / f"echo-{ports[0]}.log").exists()
    await d.close()


async def test_exit_reported_at_once(tmp_path, ports):
    d = ProcessDriver("t", tmp_path)
    h = await d.start(spec(ports[0]))
    await wait_until(lambda: get_json(ports[0]), 10, what="echo app")
    exits = d.exits()
    os.kill(h.pid, signal.SIGKILL)
    import asyncio, time

    t0 = time.monotonic()
    ev = await asyncio.wait_for(exits.__anext__(), 2)
    assert time.monotonic() - t0 < 0.5
    assert ev.replica_id == h.id and ev.exit_code == -signal.SIGKILL and "SIGKILL" in ev.reason
    assert await d.list() == []
    await d.close()


async def test_adoption_by_a_new_driver_and_stale_state(tmp_path, ports):
    d1 = ProcessDriver("t", tmp_path)
    h = await d1.start(spec(ports[0]))
    await wait_until(lambda: get_json(ports[0]), 10, what="echo app")
    await d1.close()
    # A stale state file (pid reused / process gone) must be ignored and cleaned up.
    stale = tmp_path / "t" / "replicas" / "echo-1-999999.json"
    stale.write_text(json.dumps({"id": "echo-1-999999", "service": "echo", "port": 1, "pid": 999999,
                                 "started_at": 0, "proc_start_ticks": 1}))
    d2 = ProcessDriver("t", tmp_path)
    found = await d2.list()
    assert [x.id for x in found] == [h.id] and found[0].pid == h.pid
    assert not stale.exists()
    await d2.adopt(found[0])
    import asyncio

    exits = d2.exits()
    os.kill(h.pid, signal.SIGKILL)
    ev = await asyncio.wait_for(exits.__anext__(), 2)
    assert ev.replica_id == h.id
    await d2.close()


async def test_stop_kills_a_sigstopped_replica(tmp_path, ports):
    d = ProcessDriver("t", tmp_path)
    h = await d.start(spec(ports[0]))
    await wait_until(lambda: get_json(ports[0]), 10, what="echo app")
    os.kill(h.pid, signal.SIGSTOP)
    await d.stop(h, grace=0.5)
    assert await d.list() == []
    with pytest.raises(ProcessLookupError):
        os.kill(h.pid, 0)
    await d.close()
