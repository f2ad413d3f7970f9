"""The stack's edge services on a swarm, through the manager: `EdgeServices`, the swarm driver's
`edge` (SwarmDriver.edge).

- The gateway on every node is one more service, `<stack>-gateway`, in global mode
  (`ensure_gateway()`, swarm_edge_spec.gateway_service_definition); `gateway_places()` lists the
  nodes that run it, for the control plane to attach to (orchestrator/gateway_fleet.py).
- The floating IP (`swarm.floating_ip`) is another global service, `<stack>-vip`: keepalived on
  every node (`ensure_vip()`, swarm_edge_spec.vip_service_definition), told every node's address;
  the control plane calls it again every few seconds, so a node joining or removed updates it.

They share the driver's client, its lock (service creation runs in threads), its overlay network
and its lease check: every write goes through the driver's `engine` (the lease checked, the call
in a worker thread, any failure a DriverError naming the service).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Callable

from .swarm_edge_spec import (LABEL_GATEWAY_SPEC, LABEL_VIP_SPEC, gateway_places, gateway_service_definition,
                              gateway_service_name, gateway_spec_key, gateway_token, node_addresses, vip_command,
                              vip_service_definition, vip_service_name)

log = logging.getLogger(__name__)


class EdgeServices:
    """The gateway service and the floating-IP service of one stack.

    `find(name)`: the stack's Swarm service of that name, or None; `pin(image)`: the image pinned
    to what it resolves to on the manager (swarm_spec.pinned_image); `ensure_network()`: the
    stack's overlay network created if missing; `engine(what, fn, *args)`: `fn` run as the
    driver's writes are; `check_acting(what)`: refused unless this control plane holds the lease.
    """

    def __init__(self, stack: str, network: str, client: Any, lock: threading.Lock, *,
                 find: Callable[[str], Any], pin: Callable[[str | None], tuple[str, str | None] | None],
                 ensure_network: Callable[[], None], engine: Callable[..., Awaitable[Any]],
                 check_acting: Callable[[str], None]) -> None:
        self.stack, self.network, self.client, self._lock = stack, network, client, lock
        self._find, self._pin, self._ensure_network = find, pin, ensure_network
        self._engine, self._check_acting = engine, check_acting

    # --- the gateway on every node --------------------------------------------------------------------

    async def ensure_gateway(self, image: str, command: list[str], port: int, control_port: int,
                             token: str | None, tls_port: int | None = None) -> str:
        """Create the stack's gateway service, or keep the one running (updated when it runs
        another image or command); returns the control token in use: ``token``, else the running
        service's, else a new one."""
        def run() -> str:
            import secrets

            name = gateway_service_name(self.stack)
            with self._lock:
                found = self._find(name)
                record = self.client.api.inspect_service(found.id) if found is not None else None
                use = token or (gateway_token(record) if record else None) or secrets.token_urlsafe(32)
                ref = (self._pin(image) or (image, None))[0]
                definition = gateway_service_definition(self.stack, ref, command, port, control_port, use, self.network,
                                                        tls_port)
                if record is None:
                    self._ensure_network()
                    self.client.api.create_service(**definition)
                    return use
                labels = record["Spec"].get("Labels") or {}
                if labels.get(LABEL_GATEWAY_SPEC) != gateway_spec_key(ref, command) or gateway_token(record) != use:
                    log.info("swarm driver: updating %s (another image, command or token)", name)
                    self.client.api.update_service(found.id, record["Version"]["Index"], fetch_current_spec=False,
                                                   **definition)
                return use

        return await self._engine("run the gateway service", run)

    async def gateway_places(self) -> dict[str, str]:
        """Node address -> hostname of every node where the gateway service runs (or restarts)."""
        def read() -> dict[str, str]:
            found = self._find(gateway_service_name(self.stack))
            if found is None:
                return {}
            api = self.client.api
            return gateway_places(api.tasks(filters={"service": found.id}), api.nodes())

        return await asyncio.to_thread(read)

    # --- the floating IP ----------------------------------------------------------------------------

    async def ensure_vip(self, image: str, address: str, router_id: int, advert: float, gateway_port: int,
                         keep_image: bool = False) -> bool:
        """Create the stack's floating-IP service, or keep the one running; updated when the image,
        the settings or the set of node addresses changed. Returns whether it created or updated.
        `keep_image`: a running service keeps the image it runs (the periodic check follows the
        nodes only: a tag rebuilt on the manager is taken at the next `up`, as for the gateways)."""
        def run() -> bool:
            name = vip_service_name(self.stack)
            with self._lock:
                found = self._find(name)
                record = self.client.api.inspect_service(found.id) if found is not None else None
                template = (record or {}).get("Spec", {}).get("TaskTemplate") or {}
                running = template.get("ContainerSpec", {}).get("Image")
                ref = running if keep_image and running else (self._pin(image) or (image, None))[0]
                command = vip_command(address, router_id, advert, gateway_port, node_addresses(self.client.api.nodes()))
                definition = vip_service_definition(self.stack, ref, command)
                if record is None:
                    self.client.api.create_service(**definition)
                    return True
                if (record["Spec"].get("Labels") or {}).get(LABEL_VIP_SPEC) == definition["labels"][LABEL_VIP_SPEC]:
                    return False
                log.info("swarm driver: updating %s (another image, setting or set of nodes)", name)
                self.client.api.update_service(record["ID"], record["Version"]["Index"], fetch_current_spec=False,
                                               **definition)
                return True

        return await self._engine("run the floating IP service", run)

    async def remove_vip(self) -> bool:
        """Remove the stack's floating-IP service (a stack file without `floating_ip` any more);
        returns whether there was one. Each keepalived gives the address up as it stops."""
        def run() -> bool:
            found = self._find(vip_service_name(self.stack))
            if found is not None:
                found.remove()
            return found is not None

        self._check_acting("remove the floating IP service")
        return await asyncio.to_thread(run)
