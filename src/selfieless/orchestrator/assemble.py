"""Assembling a running system from a stack: gateway + driver + orchestrator, in that order.

The one place that wires the parts; the CLI, the admin API, the benchmarks and tests use it:

    system = await start_system(load_stack(path), state_dir="~/.selfieless")
    ...
    await system.stop()            # drain and stop every replica, then the gateway
    await system.stop(detach=True) # leave replicas running for the next start to adopt

By default the gateway runs in this process. With ``gateway_process=True`` (what ``selfieless up``
does) it runs as its own process, driven through its control API (orchestrator.gateway_process):
a control plane that dies leaves it serving, and the next start re-attaches to it. With the swarm
driver (and ``swarm: {gateway: every_node}``, the default) the gateway runs on every node instead,
as the stack's global Swarm service, driven as one (orchestrator.gateway_fleet); no gateway
process runs beside the control plane then: on a manager it would want the port the manager's
own gateway task publishes, and a gateway that lives only where `up` runs dies with that node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .controller import Orchestrator
from .drivers import make_driver
from .stack import Stack

log = logging.getLogger(__name__)

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
    setting = driver_setting or stack.driver
    if gateway_process and setting == "swarm" and stack.swarm.gateway == "every_node":
        return await _start_with_fleet(stack, state, config, acting, orchestrator_kwargs)
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
        # Only the swarm driver talks to another engine (the manager) and makes an overlay network.
        driver = make_driver(stack.name, setting, state, **(_swarm_settings(stack, acting) if setting == "swarm" else {}))
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


def _swarm_settings(stack: Stack, acting: Callable[[], bool] | None) -> dict[str, Any]:
    """The swarm driver's settings (only it talks to another engine and makes an overlay network)."""
    return {"manager": stack.swarm.manager, "network": stack.network, "helper_image": stack.swarm.helper_image,
            "container_health_check": stack.swarm.container_health_check, "acting": acting}


def fleet_image(stack: Stack) -> str:
    """The image the gateways on every node run: `swarm.gateway_image`, else `helper_image`, else
    the image of the first of the stack's services that has one (every image of this project
    holds selfieless)."""
    image = stack.swarm.gateway_image or stack.swarm.helper_image
    image = image or next((s.image for s in stack.services.values() if s.image), None)
    if image is None:
        raise ValueError("the gateway on every node needs an image with selfieless in it: "
                         "set swarm: {gateway_image: ...}")
    return image


async def _start_with_fleet(stack: Stack, state: Path, config, acting: Callable[[], bool] | None,
                            orchestrator_kwargs: dict) -> System:
    """The swarm driver with the gateway on every node: the gateway service (created, or the
    running one kept), the fleet attached to every node's gateway (and sent the certificates,
    fleet_tls.py), then the orchestrator."""
    from selfieless.orchestrator.drivers.swarm_edge_spec import gateway_command

    from .fleet_tls import FleetCertificates, fleet_tls_settings
    from .gateway_fleet import GatewayFleet
    from .gateway_process import TOKEN_ENV

    if not config.port:
        raise ValueError("the gateway on every node needs a fixed public port (gateway.port or --port), not 0")
    control_port = stack.swarm.gateway_control_port or config.port + 1
    if control_port == config.port:
        raise ValueError(f"swarm.gateway_control_port must differ from the public port {config.port}")
    tls = stack.tls_settings(state / stack.name)
    if tls is not None and (not tls.port or tls.port in (config.port, control_port)):
        raise ValueError(f"the gateway on every node needs a fixed HTTPS port (gateway.tls.port) other than "
                         f"{config.port} and {control_port}, not {tls.port}")
    driver = make_driver(stack.name, "swarm", state, **_swarm_settings(stack, acting))
    command = gateway_command(dataclasses.asdict(config), stack.routes(), config.port, control_port,
                              fleet_tls_settings(tls))
    token = await driver.edge.ensure_gateway(fleet_image(stack), command, config.port, control_port,
                                             os.environ.get(TOKEN_ENV) or None, tls.port if tls is not None else None)
    fleet = GatewayFleet(driver.edge, port=config.port, control_port=control_port, token=token, acting=acting)
    try:
        await fleet.start()
        if tls is not None:
            fleet.certificates = FleetCertificates(tls, fleet, acting, kept=_kept_acme(driver, stack.name, tls))
            await fleet.certificates.start()
        vip = await _ensure_vip(stack, driver.edge, config.port)
        orch = Orchestrator(stack, driver, fleet, state_dir=str(state / stack.name), **orchestrator_kwargs)
        system = System(stack, fleet, orch)
        await orch.start()
    except BaseException:
        await fleet.stop()  # the gateways keep serving, for the next start
        raise
    following = [fleet.follow()]
    if vip is not None:
        following.append(asyncio.create_task(_keep_vip(vip, acting), name="floating-ip"))
    system.supervisor = asyncio.gather(*following)
    return system


def _kept_acme(driver, stack: str, tls):
    """The ACME folder kept in the swarm (a control plane run by `up --detach`), or None."""
    if not tls.acme:
        return None
    from .drivers.swarm_sealed import SealedFolder

    return SealedFolder.in_task(driver.client, stack, Path(tls.acme["state_dir"]) / "acme")


VIP_WATCH = 5.0   # how often the floating-IP service is checked against the swarm's nodes


async def _ensure_vip(stack: Stack, edge, gateway_port: int) -> Callable[[], Any] | None:
    """The floating-IP service as the stack file says: created or kept (after the gateways, which
    its checks follow), or removed when the file no longer asks for one. Returns the call that
    keeps it current (None without a floating IP)."""
    fip = stack.swarm.floating_ip
    if fip is None:
        if await edge.remove_vip():
            log.info("floating IP: the stack file has none any more; its service is removed")
        return None

    image = fleet_image(stack)
    await edge.ensure_vip(image, fip.address, fip.router_id, fip.advert, gateway_port)
    return lambda: edge.ensure_vip(image, fip.address, fip.router_id, fip.advert, gateway_port, keep_image=True)


async def _keep_vip(ensure: Callable[[], Any], acting: Callable[[], bool] | None) -> None:
    """Every VIP_WATCH seconds: a node joined or was removed -> the service is updated with the
    new set of addresses (ensure_vip compares them). Only the control plane that acts does it."""
    from .drivers.base import DriverError

    while True:
        await asyncio.sleep(VIP_WATCH)
        if acting is not None and not acting():
            continue
        try:
            if await ensure():
                log.info("floating IP: service updated for the swarm's current nodes")
        except DriverError as e:
            log.warning("floating IP: %s", e)
