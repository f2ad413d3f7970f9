"""The process driver's preloader: replicas forked from an interpreter that imported the app."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import httpx
import pytest

from selfieless.orchestrator.drivers.base import LaunchSpec
from selfieless.orchestrator.drivers.preload import module_of
from selfieless.orchestrator.drivers.process import ProcessDriver

from orch_helpers import wait_until
from support.ports import free_port_range

pytestmark = pytest.mark.anyio


def test_module_of():
    assert module_of(["python", "-m", "pkg.mod", "--port", "1"]) == ("pkg.mod", ["--port", "1"])
    assert module_of([sys.executable, "-m", "x"]) == ("x", [])
    assert module_of(["python", "app.py"]) is None
    assert module_of(["node", "-m", "x"]) is None


def users_spec(tmp_path, port: int, preload: bool = True, module: str = "selfieless.apps.users") -> LaunchSpec:
    return LaunchSpec(stack="t", service="users", host_port=port, preload=preload,
                      command=["python", "-m", module, "--port", str(port),
                               "--database-url", f"sqlite:///{tmp_path}/users.db"],
                      environment={"SELFIELESS_MAX_BODY_BYTES": "64"})


async def healthy(port: int) -> bool:
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            return (await client.get(f"http://127.0.0.1:{port}/api/v1/_health", timeout=1)).status_code == 200
    except httpx.HTTPError:
        return False


async def test_preloaded_replicas_serve_and_report_how_they_died(tmp_path):
    driver = ProcessDriver("t", tmp_path)
    exits = driver.exits().__aiter__()
    p1, p2 = free_port_range(2)
    try:
        first = await driver.start(users_spec(tmp_path, p1))
        await wait_until(lambda: healthy(p1), 30, what="first preloaded replica healthy")
        # The second one is a fork of a warm interpreter: it serves much sooner than a cold start.
        t0 = time.monotonic()
        second = await driver.start(users_spec(tmp_path, p2))
        await wait_until(lambda: healthy(p2), 30, what="second preloaded replica healthy")
        print(f"\npreloaded replica serving {time.monotonic() - t0:.3f} s after start")
        assert first.pid != second.pid
        # Each replica leads its own session, like a plain child: stopping signals its group only.
        assert os.getsid(second.pid) == second.pid
        # The replica's own environment reached it (applied after the fork): its body limit is 64.
        async with httpx.AsyncClient(trust_env=False) as client:
            r = await client.post(f"http://127.0.0.1:{p2}/api/v1/users", json={"username": "x" * 100})
        assert r.status_code == 413
        # Its output goes to its own log file.
        assert driver.log_file("users", p2).exists()

        os.kill(second.pid, signal.SIGKILL)
        event = await asyncio.wait_for(exits.__anext__(), 10)
        assert event.replica_id == second.id and event.reason == "killed by SIGKILL"
        await driver.stop(first, grace=5)
        assert not await healthy(p1)
        assert await driver.list() == []
    finally:
        for handle in await driver.list():
            await driver.stop(handle, grace=1)
        await driver.close()


async def test_a_module_that_cannot_be_preloaded_starts_normally(tmp_path):
    driver = ProcessDriver("t", tmp_path)
    (port,) = free_port_range(1)
    try:
        handle = await driver.start(users_spec(tmp_path, port, module="no_such_module_here"))
        # The preloader failed to import it, so the driver ran the command as a plain child,
        # which fails the same way a plain start would: the exit is reported.
        event = await asyncio.wait_for(driver.exits().__anext__(), 30)
        assert event.replica_id == handle.id and event.exit_code == 1
        assert "no_such_module_here" in (tmp_path / "t" / "logs" / "preload-no_such_module_here.log").read_text()
    finally:
        await driver.close()


@pytest.mark.parametrize("preload", [True, False], ids=["preloaded", "plain"])
async def test_replica_log_has_request_lines_and_no_warning_and_a_process_title(tmp_path, preload):
    driver = ProcessDriver("t", tmp_path)
    (port,) = free_port_range(1)
    try:
        handle = await driver.start(users_spec(tmp_path, port, preload=preload))
        await wait_until(lambda: healthy(port), 30, what="replica healthy")
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/api/v1/users?x=1")).status_code == 204
            assert (await client.delete(f"http://127.0.0.1:{port}/api/v1/users/nobody")).status_code == 400
        log = driver.log_file("users", port)

        def lines():
            return log.read_text(errors="replace")

        await wait_until(lambda: "DELETE /api/v1/users/nobody 400" in lines(), 10, what="the DELETE's log line")
        text = lines()
        assert "GET /api/v1/users?x=1 204 " in text and " ms\n" in text
        assert "_health" not in text  # passing health probes (one a second) are not logged
        assert f"selfieless.users: starting on 127.0.0.1:{port} (pid {handle.pid}" in text
        assert "database schema ready; serving" in text
        assert "Warning" not in text and "unpredictable" not in text, text
        with open(f"/proc/{handle.pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").strip().decode()
        assert title == f"selfieless: users :{port}"
        await driver.stop(handle, grace=5)
        assert "selfieless.users: stopped" in lines()
    finally:
        for h in await driver.list():
            await driver.stop(h, grace=1)
        await driver.close()
