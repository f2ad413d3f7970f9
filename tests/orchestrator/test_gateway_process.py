"""The data plane outlives the control plane: `selfieless up` runs the gateway as its own process.

A kill -9 of `up` under a steady GET load fails no request (the gateway keeps serving its last
route table); a restarted `up` re-attaches to that gateway and adopts the replicas, and a scale
change made through it reaches the gateway; `selfieless down` stops the replicas and the gateway.
A replica the gateway withdraws and then reinstates by itself reads as in rotation again in the
status (read from the gateway's view, not from a record the gateway does not update). Also: the
control API itself (routes, backends, drain, reports) against a real gateway process.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from selfieless.orchestrator.gateway_process import attach_or_start, read_state
from selfieless.orchestrator.pids import pid_alive

from orch_helpers import ECHO_APP, Load, wait_until
from support.ports import free_port_range

pytestmark = pytest.mark.anyio


def write_stack(path: Path, ports, name: str, health: dict | None = None) -> None:
    path.write_text(json.dumps({  # JSON is YAML
        "name": name, "driver": "process",
        "gateway": {"host": "127.0.0.1", "port": 0},
        "services": {"echo": {
            "command": [sys.executable, ECHO_APP, "--port", "{port}"],
            "host_ports": f"{ports[0]}-{ports[-1]}", "routes": ["/api/v1"],
            "health": health or {"interval": 0.2, "timeout": 1.0},
            "replicas": {"initial": 2, "min": 1, "max": len(ports)},
            "autoscale": {"policy": "none"}, "drain_timeout": 2,
        }},
    }))


def selfieless(*args: str, log=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selfieless", *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


def admin_info(state: Path, pid: int) -> dict | None:
    try:
        info = json.loads((state / "admin.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("pid") == pid else None


async def converged(admin_url: str) -> bool:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as c:
        try:
            return bool((await c.get(f"{admin_url}/api/status")).json().get("converged"))
        except httpx.HTTPError:
            return False


async def ports_answering(gateway_url: str, n: int = 40) -> set[int]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
        return {(await c.get(f"{gateway_url}/api/v1/who")).json()["port"] for _ in range(n)}


async def test_kill_9_of_up_fails_no_request_and_a_restart_reattaches(tmp_path):
    ports = free_port_range(4)
    stack, state = tmp_path / "s.yaml", tmp_path / "st"
    write_stack(stack, ports, "cpk")
    args = ("up", str(stack), "--state-dir", str(state), "--admin-port", "0", "--quiet")
    log = open(tmp_path / "up.log", "ab")
    up = selfieless(*args, log=log)
    up2 = load = None
    try:
        info = await wait_until(lambda: admin_info(state, up.pid), 60, 0.1, "admin.json of the first up")
        await wait_until(lambda: converged(info["url"]), 60, 0.1, "2 replicas ready")
        gw_pid = info["gateway_pid"]
        assert gw_pid != up.pid and pid_alive(gw_pid)
        load = Load(f"{info['gateway_url']}/api/v1/who", concurrency=3, rate=150).start()
        await asyncio.sleep(1.0)

        up.send_signal(signal.SIGKILL)
        up.wait()
        ok_at_kill = load.ok
        await asyncio.sleep(2.0)  # no control plane at all: the gateway serves on its own
        assert pid_alive(gw_pid) and load.ok > ok_at_kill + 50, (load.ok, ok_at_kill)

        up2 = selfieless(*args, log=log)
        info2 = await wait_until(lambda: admin_info(state, up2.pid), 60, 0.1, "admin.json of the restarted up")
        assert info2["gateway_pid"] == gw_pid and info2["gateway_url"] == info["gateway_url"]
        await wait_until(lambda: converged(info2["url"]), 60, 0.1, "the adopted replicas ready")

        # Re-attached: a scale change made through the new control plane reaches the gateway.
        async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
            r = await c.post(f"{info2['url']}/api/scale", json={"service": "echo", "replicas": 3})
            assert r.status_code < 300, r.text
        await wait_until(lambda: converged(info2["url"]), 60, 0.1, "3 replicas ready")
        await wait_until(lambda: _has_n_ports(info["gateway_url"], 3), 30, 0.2, "the gateway sending to 3 replicas")
        await asyncio.sleep(0.5)
        await load.stop()
        load_result = (load.ok, load.failures)
        load = None
        assert load_result[1] == [], f"{len(load_result[1])} failed GETs, e.g. {load_result[1][:3]}"
        assert load_result[0] > 300

        down = selfieless("down", "--state-dir", str(state), log=log)
        assert down.wait(120) == 0
        assert up2.wait(60) == 0
        await wait_until(lambda: not pid_alive(gw_pid), 30, 0.1, "the gateway process gone after down")
        assert not (state / "cpk" / "gateway.json").exists()
    finally:
        if load is not None:
            await load.stop()
        for p in (up, up2):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        _kill_leftovers(state / "cpk")
        log.close()


async def _has_n_ports(gateway_url: str, n: int) -> bool:
    return len(await ports_answering(gateway_url)) >= n


def _kill_leftovers(stack_dir: Path) -> None:
    """Whatever a failed test left running: the gateway process and replicas (by their state files)."""
    gw = read_state(stack_dir / "gateway.json") or {}
    pids = [gw.get("pid")]
    for f in (stack_dir / "replicas").glob("*.json") if (stack_dir / "replicas").exists() else []:
        try:
            pids.append(json.loads(f.read_text()).get("pid"))
        except (OSError, ValueError):
            pass
    for pid in pids:
        if isinstance(pid, int) and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_control_api_drives_a_gateway_process(tmp_path):
    """Routes and backends set through the control socket take effect; a passive ejection is
    reported; a bad batch is refused whole; detaching leaves the gateway serving."""
    from selfieless.gateway import GatewayConfig

    port = free_port_range(1)[0]
    echo = subprocess.Popen([sys.executable, ECHO_APP, "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    gw = proc = None
    try:
        config = GatewayConfig(host="127.0.0.1", port=0, no_replica_wait=0.5)  # no replica: 503 soon
        gw, proc = await attach_or_start(tmp_path / "g", config, {})
        assert not proc.attached and proc.pid != os.getpid()
        url = f"http://127.0.0.1:{gw.port}"
        ejected: list = []
        gw.on_eject = lambda s, r, why: ejected.append((s, r))

        async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
            assert (await c.get(f"{url}/api/v1/who")).status_code == 404  # no route yet
            gw.set_routes({"/api/v1": "echo"})
            gw.add_backend("echo", "e1", "127.0.0.1", port)
            await gw.flush()
            await wait_until(lambda: _answers(c, f"{url}/api/v1/who"), 30, 0.05, "echo reachable through the gateway")
            await wait_until(lambda: gw.counters("echo") is not None and gw.counters("echo").requests > 0, 10,
                             what="counters polled")
            assert [v.id for v in gw.backends("echo")] == ["e1"]

            # A bad batch changes nothing (the good op before the bad one is not applied either).
            r = await gw._http.post("/control/ops", json={"ops": [
                {"op": "remove", "service": "echo", "id": "e1"}, {"op": "routes", "routes": {"/x": ""}}]})
            assert r.status_code == 400 and "routes" in r.json()["error"]
            assert (await c.get(f"{url}/api/v1/who")).status_code == 200

            # Detach: the gateway process keeps serving; a new client re-attaches to it.
            await gw.close()
            gw, proc = await attach_or_start(tmp_path / "g", config, {})
            assert proc.attached and (await c.get(f"{url}/api/v1/who")).status_code == 200
            gw.on_eject = lambda s, r, why: ejected.append((s, r))

            # The replica stops listening: the gateway ejects it by itself and reports it.
            echo.kill()
            echo.wait()
            assert (await c.get(f"{url}/api/v1/who")).status_code in (502, 503)
            await wait_until(lambda: ejected == [("echo", "e1")], 10, what="the ejection reported")
            assert await gw.drain_backend("echo", "e1", timeout=1) is True
    finally:
        if echo.poll() is None:
            echo.kill()
        if gw is not None and proc is not None:
            await proc.stop(gw)
            assert not pid_alive(proc.pid)


async def _answers(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


def test_gateway_process_refuses_a_busy_port(tmp_path):
    """The port is taken: the start fails with the OSError `up` turns into its one-line message."""
    import socket

    from selfieless.gateway import GatewayConfig

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        with pytest.raises(OSError) as e:
            asyncio.run(attach_or_start(tmp_path / "g", GatewayConfig(host="127.0.0.1", port=s.getsockname()[1]), {}))
        assert e.value.errno == 98  # EADDRINUSE
    finally:
        s.close()


async def test_down_stops_a_gateway_left_serving_by_a_killed_up(tmp_path):
    """No `up` is running but its gateway is (the `up` was killed and not restarted): `down` stops it."""
    from selfieless.gateway import GatewayConfig

    gw, proc = await attach_or_start(tmp_path / "left", GatewayConfig(host="127.0.0.1", port=0), {})
    await gw.close()  # as if the control plane had died: nothing of it remains
    try:
        down = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "selfieless", "down", "--state-dir",
                                                        str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"stopped the gateway of stack left (pid {proc.pid})" in " ".join(down.stdout.split())
        assert await proc.wait_exit(10)
        again = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "selfieless", "down", "--state-dir",
                                                         str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "no running `selfieless up` found" in again.stderr
    finally:
        if pid_alive(proc.pid):
            os.kill(proc.pid, signal.SIGKILL)


async def test_a_gateway_process_that_dies_is_started_again_with_its_routes_and_backends(tmp_path):
    """The other way round: the control plane outlives the data plane. kill -9 of the gateway
    process; the control plane starts it again on the same port and sends it the routes and pools."""
    from selfieless.orchestrator.assemble import start_system

    from orch_helpers import echo_stack

    system = await start_system(echo_stack(free_port_range(2), name="gwrs"), tmp_path,
                                gateway_overrides={"host": "127.0.0.1"}, gateway_process=True)
    try:
        await system.orchestrator.wait_converged(60)
        url = f"http://127.0.0.1:{system.gateway.port}/api/v1/who"
        async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
            assert (await c.get(url)).status_code == 200
            old = system.gateway_process.pid
            os.kill(old, signal.SIGKILL)
            await wait_until(lambda: system.gateway_process.pid != old, 30, 0.05, "a new gateway process")
            await wait_until(lambda: _answers(c, url), 30, 0.1, "the restarted gateway routing to the replica")
            assert system.gateway.port == int(url.split(":")[2].split("/")[0])
    finally:
        await system.stop()
    assert not pid_alive(system.gateway_process.pid)


async def _replica(admin_url: str, rid: str) -> dict:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
        reps = (await c.get(f"{admin_url}/api/status")).json()["services"]["echo"]["replicas"]
    return next(r for r in reps if r["id"] == rid)


async def test_a_replica_the_gateway_withdraws_and_reinstates_reads_as_in_rotation(tmp_path):
    """SIGSTOP one of two replicas under load: the gateway process withdraws it (stalled) and a
    POST waits on it. Its hinted probe fails (one failure of five: not unhealthy) and the next
    routine probe is minutes away, so only the gateway can put it back: SIGCONT, the POST is
    answered, the gateway reinstates it, and the status says in rotation again."""
    ports = free_port_range(3)
    stack, state = tmp_path / "s.yaml", tmp_path / "st"
    write_stack(stack, ports, "rot", health={"interval": 300, "timeout": 0.5, "failure_threshold": 5})
    up = selfieless("up", str(stack), "--state-dir", str(state), "--admin-port", "0", "--quiet",
                    log=(log := open(tmp_path / "up.log", "ab")))
    load = victim = None
    posting, posts = asyncio.Event(), []

    async def post_loop(url: str) -> None:
        async with httpx.AsyncClient(timeout=120, trust_env=False) as c:
            while not posting.is_set():
                await c.post(url, content=b"x" * 10)
                await asyncio.sleep(0.01)

    try:
        info = await wait_until(lambda: admin_info(state, up.pid), 60, 0.1, "admin.json of up")
        await wait_until(lambda: converged(info["url"]), 60, 0.1, "2 replicas ready")
        load = Load(f"{info['gateway_url']}/api/v1/who", concurrency=4, pause=0.002).start()
        posts += [asyncio.create_task(post_loop(f"{info['gateway_url']}/api/v1/upload")) for _ in range(4)]
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
            victim = (await c.get(f"{info['url']}/api/status")).json()["services"]["echo"]["replicas"][0]
        assert victim["in_pool"] is True, victim
        os.kill(victim["pid"], signal.SIGSTOP)

        async def withdrawn() -> bool:
            return (await _replica(info["url"], victim["id"]))["in_pool"] is False

        await wait_until(withdrawn, 30, 0.1, "the stalled replica out of rotation in the status")
        await asyncio.sleep(3.0)  # its hinted probe (0.5 s timeout) has failed by now
        assert (await _replica(info["url"], victim["id"]))["state"] == "ready"
        os.kill(victim["pid"], signal.SIGCONT)

        async def back() -> bool:
            return (await _replica(info["url"], victim["id"]))["in_pool"] is True

        await wait_until(back, 30, 0.1, "the reinstated replica in rotation again in the status")
        posting.set()
        await asyncio.wait_for(asyncio.gather(*posts), 60)
        await load.stop()
        load_failures, load = load.failures, None
        assert load_failures == [], load_failures[:3]
        rep = await _replica(info["url"], victim["id"])
        assert rep["state"] == "ready" and rep["pid"] == victim["pid"], rep  # not replaced
    finally:
        for t in posts:
            t.cancel()
        if load is not None:
            await load.stop()
        if victim is not None and pid_alive(victim["pid"]):
            os.kill(victim["pid"], signal.SIGCONT)
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
        _kill_leftovers(state / "rot")
        log.close()
