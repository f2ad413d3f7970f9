"""The control plane's side of the gateway pool: the one place that puts replicas in and out of
rotation, and the only code that sets `Replica.in_pool` (whether the gateway routes to it).

Everything else reads `in_pool`; a replica the gateway took out by itself (ejected, withdrawn) is
recorded here too, so the record never says more than the gateway does. Dependencies have no pool:
other replicas reach them directly, and nothing here touches the gateway for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .probing import replica_host
from .replica import Replica

if TYPE_CHECKING:
    from selfieless.gateway.control import GatewayControl


class Pool:
    def __init__(self, gateway: GatewayControl, is_dependency: Callable[[str], bool]):
        self.gateway = gateway
        self._is_dependency = is_dependency

    def join(self, rep: Replica) -> None:
        if self._is_dependency(rep.service):
            return
        self.gateway.add_backend(rep.service, rep.id, replica_host(rep), rep.port)
        rep.in_pool = True

    def leave(self, rep: Replica, failed: bool = False) -> None:
        # Always tell the pool, even when we think it is out: it also forgets an entry the
        # gateway ejected by itself and still lists. A replica that `failed` its probes will not
        # answer what it holds: the gateway moves or answers those requests now. Any other
        # leave (drained, stopped, exited: perhaps finishing gracefully) lets them finish.
        if not self._is_dependency(rep.service):
            self.gateway.remove_backend(rep.service, rep.id, failed=failed)
        rep.in_pool = False

    def taken_out(self, rep: Replica) -> None:
        """The gateway took `rep` out of rotation by itself (ejected, withdrawn)."""
        rep.in_pool = False

    async def drain(self, rep: Replica, timeout: float) -> bool:
        """Out of rotation, in-flight requests finish: True when they did within `timeout`."""
        return await self.gateway.drain_backend(rep.service, rep.id, timeout=timeout)

    def views(self, service: str) -> list:
        """The gateway's views of `service`'s replicas (in flight, served), [] when it has none."""
        try:
            return list(self.gateway.backends(service))
        except Exception:
            return []

    def forget_others(self, service: str, known: set[str]) -> None:
        """A gateway that outlived the previous control plane may still list replicas that are
        gone: forget every one not in `known`."""
        for v in self.views(service):
            if v.id not in known:
                self.gateway.remove_backend(service, v.id)
