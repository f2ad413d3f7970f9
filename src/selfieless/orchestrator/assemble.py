"""Assembling a running system from a stack: gateway + driver + orchestrator, in that order.

The one place that wires the parts; the CLI, the admin API, the benchmarks and tests use it:

    system = await start_system(load_stack(path), state_dir="~/.selfieless")
    ...
    await system.stop()            # drain and stop every replica, then the gateway
    await system.stop(detach=True) # leave replicas running for the next start to adopt

By default the gateway runs in this process. With ``gateway_process=True`` (what ``selfieless up``
does) it runs as its own process, driven through its control API (orchestrator.gateway_process):
a control plane that dies leaves it serving, and the next start re-attaches to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .controller import Orchestrator
from .drivers import make_driver
from .stack import Stack

def default_state_dir() -> Path:
    """Where a stack keeps its state when not told: $SELFIELESS_STATE_DIR, else ~/.local/state/selfieless."""
    return Path(os.environ.get("SELFIELESS_STATE_DIR", "~/.local/state/selfieless")).expanduser()


def gateway_config(stack: Stack, **overrides: Any):
    """A selfieless.gateway.GatewayConfig from the stack's `gateway` section."""
    from selfieless.gateway import GatewayConfig

    known = {f.name for f in dataclasses.fields(GatewayConfig)}
    kwargs = {k: v for k, v in {**stack.gateway_config_kwargs(), **overrides}.items() if k in known}
    return GatewayConfig(**kwargs)


# Read once when a gateway starts (the listening socket, the count rule): a re-attached gateway
# keeps the ones it has.
RESTART_ONLY_GATEWAY_FIELDS = frozenset({"host", "port", "backlog", "balance", "count_prefix", "count_exclude"})


@dataclass
class System:
    stack: Stack
    gateway: Any          # a GatewayControl: the in-process Gateway, or a RemoteGateway
    orchestrator: Orchestrator
    gateway_process: Any = None   # a GatewayProcess when the gateway runs as its own process
    supervisor: Any = None        # the task that starts that process again if it dies

    @property
    def gateway_attached(self) -> bool:
        """True when the gateway was found running (this control plane re-attached to it)."""
        return self.gateway_process is not None and self.gateway_process.attached

    async def stop(self, detach: bool = False) -> None:
        """Stop the control plane and (unless ``detach``) the replicas and the gateway. With
        ``detach`` a separate gateway process keeps serving, for the next start to re-attach to."""
        if self.supervisor is not None:
            self.supervisor.cancel()
            await asyncio.gather(self.supervisor, return_exceptions=True)
        await self.orchestrator.stop(stop_replicas=not detach)
        if self.gateway_process is None:
            await self.gateway.stop()
        elif detach:
            await self.gateway.close()
        else:
            await self.gateway_process.stop(self.gateway)


async def _in_process_gateway(config, routes, tls=None):
    from selfieless.gateway import Gateway

    gw = Gateway(config, routes=routes, tls=tls)
    await gw.start()
    return gw


async def start_system(stack: Stack, state_dir: str | os.PathLike | None = None, *,
                       driver_setting: str | None = None, gateway_overrides: dict | None = None,
                       gateway_process: bool = False, acting: Callable[[], bool] | None = None,
                       **orchestrator_kwargs: Any) -> System:
    """Start (or re-attach to) the gateway, so replicas can be told its URL, then the orchestrator.
    `acting` (swarm): whether this control plane holds the stack's lease now (lease_keeper.py)."""
    state = Path(state_dir or default_state_dir()).expanduser()
    state.mkdir(parents=True, exist_ok=True)
    config = gateway_config(stack, **(gateway_overrides or {}))
    proc = None
    if gateway_process:
        from .gateway_process import attach_or_start

        gw, proc = await attach_or_start(state / stack.name, config, stack.routes(), stack.tls_settings(state / stack.name))
        if proc.attached:  # it kept the settings it was started with: give it the stack's current ones
            gw.set_limits(config.balance, {k: v for k, v in dataclasses.asdict(config).items()
                                           if k not in RESTART_ONLY_GATEWAY_FIELDS})
    else:
        gw = await _in_process_gateway(config, stack.routes(), stack.tls_settings(state / stack.name))
    system = None
    try:
        setting = driver_setting or stack.driver
        # Only the swarm driver talks to another engine (the manager) and makes an overlay network.
        swarm = ({"manager": stack.swarm.manager, "network": stack.network, "helper_image": stack.swarm.helper_image,
                  "container_health_check": stack.swarm.container_health_check, "acting": acting}
                 if setting == "swarm" else {})
        driver = make_driver(stack.name, setting, state, **swarm)
        orch = Orchestrator(stack, driver, gw, state_dir=str(state / stack.name), **orchestrator_kwargs)
        system = System(stack, gw, orch, proc)
        await orch.start()
        if proc is not None:
            system.supervisor = asyncio.create_task(proc.supervise(gw, config), name="gateway-supervisor")
    except BaseException:
        if proc is None:
            await gw.stop()
        elif proc.attached:
            await gw.close()  # it was serving before us: leave it serving
        else:
            await proc.stop(gw)
        raise
    return system
