"""The control plane's side of the gateway pool: the one place that puts replicas in and out of
rotation, and the one place that says whether a replica is in rotation.

Two things kept apart (as the gateway keeps its admin and health axes): the control plane's will,
`Replica.joined` (it added the replica and has not removed it; set only here), and whether the
gateway routes to it, read from the gateway's view (`rotation`, `in_rotation`). The gateway takes
a replica out and puts it back by itself (ejected, withdrawn, reinstated) and does not report
every change; a record of ours would drift from it, the view does not. Dependencies have no pool:
other replicas reach them directly, and nothing here touches the gateway for them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterable

from selfieless.gateway.pool import READY

from .probing import replica_host
from .replica import Replica

if TYPE_CHECKING:
    from selfieless.gateway.control import GatewayControl

# How long one read of a service's views answers `in_rotation` (one probe tick's results arrive
# within a few milliseconds of each other: one read for all of them, not one per replica). A
# remote gateway's views are up to a poll old anyway.
STATES_MAX_AGE = 0.05


def in_rotation(joined: bool, state: str | None) -> bool:
    """Whether the gateway routes to a replica: the control plane added it (`joined`) and the
    gateway's view has nothing against it. `state` is the view's (gateway/pool.py `view_state`),
    None when the view does not list it: a remote gateway's view lags an add by up to one poll,
    and a replica just added is taken at our word."""
    return joined and (state is None or state == READY)


class Pool:
    def __init__(self, gateway: GatewayControl, is_dependency: Callable[[str], bool],
                 clock: Callable[[], float] = time.monotonic):
        self.gateway = gateway
        self._is_dependency = is_dependency
        self._clock = clock
        self._states: dict[str, tuple[float, dict[str, str]]] = {}  # service -> (read at, id -> state)

    def join(self, rep: Replica) -> None:
        if self._is_dependency(rep.service):
            return
        self.gateway.add_backend(rep.service, rep.id, replica_host(rep), rep.port)
        rep.joined = True
        self._states.pop(rep.service, None)

    def leave(self, rep: Replica, failed: bool = False) -> None:
        # Always tell the pool, even when we think it is out: it also forgets an entry the
        # gateway ejected by itself and still lists. A replica that `failed` its probes will not
        # answer what it holds: the gateway moves or answers those requests now. Any other
        # leave (drained, stopped, exited: perhaps finishing gracefully) lets them finish.
        if not self._is_dependency(rep.service):
            self.gateway.remove_backend(rep.service, rep.id, failed=failed)
        rep.joined = False
        self._states.pop(rep.service, None)

    def rotation(self, service: str, replicas: Iterable[Replica], views: Iterable | None = None) -> set[str]:
        """The ids of `replicas` (of `service`) in rotation, from one read of the gateway's views
        (`views` when the caller has just read them)."""
        states = self._read_states(service) if views is None else {v.id: v.state for v in views}
        return {r.id for r in replicas if in_rotation(r.joined, states.get(r.id))}

    def in_rotation(self, rep: Replica) -> bool:
        """Whether the gateway routes to `rep` (one read of the views per STATES_MAX_AGE)."""
        if not rep.joined:
            return False
        now = self._clock()
        read = self._states.get(rep.service)
        if read is None or now - read[0] > STATES_MAX_AGE:
            read = (now, self._read_states(rep.service))
            self._states[rep.service] = read
        return in_rotation(True, read[1].get(rep.id))

    def changed(self, service: str) -> None:
        """The gateway reported a change of its own (ejected, withdrawn): read its view again
        next time, so the probe it asks for is not judged by a read made before it."""
        self._states.pop(service, None)

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

    def _read_states(self, service: str) -> dict[str, str]:
        return {v.id: v.state for v in self.views(service)}
