"""The gateway as its own process: find the running one (re-attach) or start one, and stop it.

``selfieless up`` runs the data plane in a separate process so that it outlives the control plane:
after a ``kill -9`` of ``up`` the gateway keeps serving its last route table, and the next ``up``
finds it through ``<stack state dir>/gateway.json`` (pid, public port, control socket) and
re-attaches to it instead of starting another. The process runs in its own session, so a Ctrl-C
in the terminal reaches only the control plane, which then stops the gateway itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from selfieless.gateway.control_client import GatewayUnreachable, RemoteGateway
from selfieless.orchestrator.pids import pid_alive

log = logging.getLogger(__name__)

STATE_FILE = "gateway.json"
SOCKET_FILE = "gateway.sock"
LOG_FILE = "gateway.log"
START_TIMEOUT = 30.0
STOP_GRACE = 5.0  # requests in flight when the gateway is told to stop (as Gateway.stop's default)
TOKEN_ENV = "SELFIELESS_GATEWAY_TOKEN"


def read_state(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class GatewayProcess:
    """The gateway process a control plane drives (started by it, or found running)."""

    pid: int
    state_dir: Path
    attached: bool   # found running (re-attached) rather than started now
    popen: subprocess.Popen | None = None
    tls: object = None  # gateway.tls.TlsSettings a restart starts it with (None: HTTP only)

    async def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None:
                if self.popen.poll() is not None:
                    return True
            elif not pid_alive(self.pid):
                return True
            await asyncio.sleep(0.05)
        return False

    def alive(self) -> bool:
        if self.popen is not None and self.popen.pid == self.pid:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    async def supervise(self, client: RemoteGateway, config, interval: float = 0.5) -> None:
        """Start the gateway again, on the port it had, whenever its process dies (until cancelled).
        The client keeps the same control socket path; seeing a new instance there, it sends the
        routes and backends again."""
        while True:
            await asyncio.sleep(interval)
            if self.alive():
                continue
            log.warning("the gateway process (pid %s) died; starting it again on port %s", self.pid, client.port)
            try:
                popen = await _start_process(self.state_dir, dataclasses.replace(config, port=client.port or config.port),
                                             client.routes or {}, os.environ.get(TOKEN_ENV) or None, self.tls)
            except Exception as e:  # e.g. the port taken meanwhile: keep trying
                log.error("restarting the gateway failed: %s", e)
                await asyncio.sleep(2.0)
                continue
            self.pid, self.popen, self.attached = popen.pid, popen, False

    async def stop(self, client: RemoteGateway, grace: float = STOP_GRACE + 5.0) -> None:
        """Ask it to stop (requests in flight finish), then make sure it is gone."""
        await client.stop_gateway()
        await client.close()
        if not await self.wait_exit(grace):
            log.warning("gateway pid %s did not stop within %.0f s; killing it", self.pid, grace)
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
            await self.wait_exit(5.0)


def _tls_differs(info: dict, tls) -> bool:
    """Whether a running gateway's HTTPS (its info) is not what ``tls`` asks for: on or off, or
    another port. (Certificates reload by themselves; the listener does not move.)"""
    running = info.get("tls_port")
    if tls is None:
        return running is not None
    return running is None or bool(tls.port and running != tls.port)


async def _attach(state_dir: Path, config, token: str | None, tls=None) -> tuple[RemoteGateway, GatewayProcess] | None:
    """The gateway recorded in ``state_dir``, if it is alive, answers, and listens where ``config``
    (and ``tls``) say."""
    state = read_state(state_dir / STATE_FILE)
    if not state or not state.get("control_socket") or not isinstance(state.get("pid"), int) \
            or not pid_alive(state["pid"]):
        return None
    client = RemoteGateway(state["control_socket"], token=token)
    try:
        info = await client.attach()
    except (GatewayUnreachable, OSError) as e:
        log.warning("a gateway was recorded in %s but does not answer (%s); starting a new one", state_dir, e)
        await client.close()
        return None
    proc = GatewayProcess(info["pid"], state_dir, attached=True)
    if (config.port and info["port"] != config.port) or info["host"] != config.host:
        # The stack now asks for another address: replace the gateway rather than serve the old one.
        log.warning("the running gateway listens on %s:%s, the stack wants %s:%s; replacing it",
                    info["host"], info["port"], config.host, config.port)
        await proc.stop(client)
        return None
    if _tls_differs(info, tls):
        log.warning("the running gateway's HTTPS listener (port %s) is not what the stack asks for; replacing it",
                    info.get("tls_port"))
        await proc.stop(client)
        return None
    return client, proc


async def _spawn(state_dir: Path, config, routes: dict[str, str], token: str | None,
                 tls=None) -> tuple[RemoteGateway, GatewayProcess]:
    popen = await _start_process(state_dir, config, routes, token, tls)
    client = RemoteGateway(str(state_dir / SOCKET_FILE), token=token)
    await client.attach()
    return client, GatewayProcess(popen.pid, state_dir, attached=False, popen=popen, tls=tls)


async def _start_process(state_dir: Path, config, routes: dict[str, str], token: str | None,
                         tls=None) -> subprocess.Popen:
    """Start the gateway process; return once it listens (its state file says so)."""
    state_file, sock = state_dir / STATE_FILE, state_dir / SOCKET_FILE
    state_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "selfieless.gateway", "--control-socket", str(sock), "--state-file", str(state_file),
           "--config-json", json.dumps(dataclasses.asdict(config)), "--routes-json", json.dumps(routes),
           "--grace", str(STOP_GRACE)]
    if tls is not None:  # gateway.tls.TlsSettings
        cmd += ["--tls-json", json.dumps(tls.to_json())]
    env = dict(os.environ)
    if token:
        env[TOKEN_ENV] = token
    with open(state_dir / LOG_FILE, "ab") as logf:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        state = read_state(state_file)
        if state and state.get("pid") == popen.pid:
            if "error" in state:
                popen.wait()
                raise OSError(state.get("errno") or 0, state["error"])
            break
        if popen.poll() is not None:
            raise RuntimeError(f"the gateway process exited with status {popen.returncode} while starting "
                               f"(see {state_dir / LOG_FILE})")
        if time.monotonic() > deadline:
            popen.kill()
            raise RuntimeError(f"the gateway process did not start within {START_TIMEOUT:g} s")
        await asyncio.sleep(0.02)
    return popen


async def attach_or_start(state_dir: Path, config, routes: dict[str, str],
                          tls=None) -> tuple[RemoteGateway, GatewayProcess]:
    """Re-attach to the gateway process recorded in ``state_dir``, or start a new one there
    (with ``tls``, a gateway.tls.TlsSettings, it also serves HTTPS)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    token = os.environ.get(TOKEN_ENV) or None
    found = await _attach(state_dir, config, token, tls)
    if found is not None:
        found[1].tls = tls
        return found
    return await _spawn(state_dir, config, routes, token, tls)


def stop_left_over(state_dir: Path, timeout: float = 15.0) -> list[tuple[str, int]]:
    """Stop every gateway process recorded under ``state_dir`` whose control plane is gone (a
    killed `up` that was not restarted): ``[(stack, pid), ...]`` of those stopped. Synchronous,
    for the CLI."""
    import httpx

    stopped = []
    for path in sorted(state_dir.glob(f"*/{STATE_FILE}")):
        state = read_state(path)
        pid = (state or {}).get("pid")
        if not isinstance(pid, int) or not pid_alive(pid) or not state.get("control_socket"):
            continue
        token = os.environ.get(TOKEN_ENV)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=state["control_socket"]), base_url="http://gateway",
                              headers=headers, timeout=5, trust_env=False) as client:
                client.post("/control/stop").raise_for_status()
        except httpx.HTTPError as e:
            log.warning("the gateway pid %s recorded in %s does not answer its control socket: %s", pid, path, e)
            continue
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped.append((path.parent.name, pid))
    return stopped
