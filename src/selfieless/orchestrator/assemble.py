"""Assembling a running system from a stack: gateway + driver + orchestrator, in that order.

The CLI and the admin API use this instead of wiring the parts by hand:

    system = await start_system(load_stack(path), state_dir="~/.selfieless")
    ...
    await system.stop()            # drain and stop every replica, then the gateway
    await system.stop(detach=True) # leave replicas running for the next start to adopt
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controller import Orchestrator
from .drivers import make_driver
from .stack import Stack

DEFAULT_STATE_DIR = Path(os.environ.get("SELFIELESS_STATE_DIR", "~/.local/state/selfieless")).expanduser()


def gateway_config(stack: Stack, **overrides: Any):
    """A selfieless.gateway.GatewayConfig from the stack's `gateway` section."""
    from selfieless.gateway import GatewayConfig

    known = {f.name for f in dataclasses.fields(GatewayConfig)}
    kwargs = {k: v for k, v in {**stack.gateway_config_kwargs(), **overrides}.items() if k in known}
    return GatewayConfig(**kwargs)


@dataclass
class System:
    stack: Stack
    gateway: Any
    orchestrator: Orchestrator

    async def stop(self, detach: bool = False) -> None:
        await self.orchestrator.stop(stop_replicas=not detach)
        await self.gateway.stop()


async def start_system(stack: Stack, state_dir: str | os.PathLike | None = None, *,
                       driver_setting: str | None = None, gateway_overrides: dict | None = None,
                       **orchestrator_kwargs: Any) -> System:
    """Start the gateway (so replicas can be told its URL), then the orchestrator."""
    from selfieless.gateway import Gateway

    state = Path(state_dir or DEFAULT_STATE_DIR).expanduser()
    state.mkdir(parents=True, exist_ok=True)
    gw = Gateway(gateway_config(stack, **(gateway_overrides or {})), routes=stack.routes())
    await gw.start()
    try:
        setting = driver_setting or stack.driver
        # Only the swarm driver talks to another engine (the manager) and makes an overlay network.
        swarm = {"manager": stack.swarm.manager, "network": stack.network} if setting == "swarm" else {}
        driver = make_driver(stack.name, setting, state, **swarm)
        orch = Orchestrator(stack, driver, gw, state_dir=str(state / stack.name), **orchestrator_kwargs)
        gw.on_eject = orch.on_eject
        gw.on_replica_error = orch.on_replica_error
        await orch.start()
    except BaseException:
        await gw.stop()
        raise
    return System(stack, gw, orch)


async def run_until_signalled(stack: Stack, state_dir: str | os.PathLike | None = None, **kw: Any) -> None:
    """Run a stack in the foreground until SIGINT/SIGTERM, then shut down gracefully."""
    system = await start_system(stack, state_dir, **kw)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await system.stop()
