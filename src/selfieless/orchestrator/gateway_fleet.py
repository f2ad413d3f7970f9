""":class:`GatewayFleet`: :class:`~selfieless.gateway.control.GatewayControl` over a gateway on every node.

With the swarm driver the gateway runs as the stack's global Swarm service (one task per node,
drivers/swarm_edge_spec.gateway_service_definition). The fleet is what the control plane drives in
place of one gateway:

- It follows the nodes that run a gateway task (``edge.gateway_places()``, every
  ``WATCH_INTERVAL``) and holds one :class:`RemoteGateway` per node, on ``node address : control
  port`` (fleet.attachments decides whom to attach and let go). A gateway that does not answer
  yet (starting) is tried again until it does; then it gets the whole mirror (routes, limits,
  every backend), and every later change as the others do. A gateway replaced on its node (the
  container killed, Swarm started another) is the same address: its RemoteGateway sees a new
  instance and sends the mirror again (control_client.py).
- Changes (routes, backends, limits, certificates and ACME answers) go to every gateway; a drain
  waits for every gateway. Certificates are read or issued once, by the control plane
  (fleet_tls.py), never per node.
- Reads are merged: the counters summed, monotonically across replaced gateways
  (fleet.Ledger), the backends' views merged (fleet.merge_views); reports (ejections, 5xx
  answers, held requests) come from every gateway to the same callbacks.

A gateway whose control plane is gone keeps serving its last pools (the process already does);
the next `up` finds the service by its label and attaches again. A control plane that does not
hold the stack's lease (``acting``, lease_keeper.py) sends the gateways no change: during a split
only the one that acts changes what they route to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from selfieless.gateway.control_client import GatewayUnreachable, PoolSnapshot, RemoteGateway
from selfieless.gateway.pool import ReplicaView
from selfieless.gateway.stats import ServiceStats

from .fleet import Ledger, attachments, merge_views

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5    # how often the nodes running a gateway are read from the manager
ATTACH_RETRY = 0.2      # between two tries of a gateway that does not answer yet
START_TIMEOUT = 90.0    # how long `up` waits for every node's gateway to answer at start
REFRESH_WAIT = 0.5      # how long a fresh read of every gateway may take (see refresh)
CALLBACKS = ("on_eject", "on_withdraw", "on_stalled_together", "on_backend_error", "on_no_backend")


@dataclass(frozen=True)
class GatewayLine:
    """One gateway of the fleet, for `status`."""

    address: str
    node: str
    attached: bool           # this control plane holds it (has sent it the routes and pools)
    answering: bool          # its control API answered the last poll
    instance: str | None
    requests: int            # requests it forwarded (its current instance)


class GatewayFleet:
    """Every node's gateway, driven as one."""

    def __init__(self, edge: Any, *, port: int, control_port: int, token: str, poll_wait: float = 0.5,
                 clock=time.monotonic, acting: Callable[[], bool] | None = None) -> None:
        self.edge = edge   # what lists the nodes that run a gateway (drivers/swarm_edge.EdgeServices)
        self.acting = acting
        self._port, self.control_port, self._token = port, control_port, token
        self.poll_wait = poll_wait
        self.clock = clock
        for name in CALLBACKS:
            setattr(self, name, None)
        self.on_tls_event = None   # (kind, host, detail) from the certificates (fleet_tls.py)
        self._routes: dict[str, str] | None = None
        self._limits: dict | None = None
        self._backends: dict[str, dict[str, tuple[str, int]]] = {}
        self._tls_pairs: list[dict] | None = None
        self._challenges: dict[str, str] | None = None
        self.certificates = None   # fleet_tls.FleetCertificates when the stack has gateway.tls
        self.members: dict[str, RemoteGateway] = {}     # address -> attached gateway
        self._attaching: dict[str, asyncio.Task] = {}    # address -> a task trying to attach
        self.nodes: dict[str, str] = {}                  # address -> hostname, as last listed
        self.ledger = Ledger()
        self._watch: asyncio.Task | None = None

    # Lifecycle ------------------------------------------------------------------------------
    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Attach to every node's gateway (waiting up to ``timeout`` for them to answer), then
        follow the nodes. Returns with those that answered; the others are attached later."""
        deadline = self.clock() + timeout
        while True:
            await self.watch_once()
            if (self.nodes and not self._attaching) or self.clock() > deadline:
                break
            await asyncio.sleep(ATTACH_RETRY)
        if self._attaching:
            log.warning("gateways on %s do not answer yet; attaching when they do", ", ".join(sorted(self._attaching)))

    def follow(self) -> asyncio.Task:
        """Start following the nodes (a task; cancel it to stop)."""
        self._watch = asyncio.create_task(self._watch_loop(), name="gateway-fleet-watch")
        return self._watch

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                await self.watch_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the manager did not answer: keep what is attached
                log.debug("listing the gateway tasks failed: %s", e)

    async def watch_once(self) -> None:
        places = await self.edge.gateway_places()
        self.nodes = places
        attach, detach = attachments([*self.members, *self._attaching], places)
        for address in detach:
            log.warning("the gateway on %s is no longer listed; letting it go", address)
            await self._detach(address)
        for address in attach:
            self._attaching[address] = asyncio.create_task(self._attach(address), name=f"gateway-attach-{address}")

    async def _attach(self, address: str) -> None:
        gw = RemoteGateway(f"http://{address}:{self.control_port}", token=self._token, poll_wait=self.poll_wait)
        while True:
            try:
                await gw.attach()
                break
            except (GatewayUnreachable, OSError) as e:
                log.debug("the gateway on %s does not answer yet: %s", address, e)
            except Exception as e:  # e.g. 401: a gateway of another token; keep trying, say why
                log.warning("attaching to the gateway on %s failed: %s", address, e)
            await asyncio.sleep(ATTACH_RETRY)
        for name in CALLBACKS:  # the fleet's callback of the moment, whenever it is set
            setattr(gw, name, (lambda n: lambda *a: (getattr(self, n) or (lambda *_: None))(*a))(name))
        # Everything this control plane has said so far, then whatever it says next: both in
        # this one step of the event loop, so no change falls between them.
        if self._routes is not None:
            gw.set_routes(self._routes)
        if self._limits is not None:
            gw.set_limits(self._limits["balance"], self._limits["limits"])
        for service, members in self._backends.items():
            for backend_id, (host, port) in members.items():
                gw.add_backend(service, backend_id, host, port)
        if self._tls_pairs is not None:
            gw.set_certificates(self._tls_pairs)
        if self._challenges is not None:
            gw.set_challenges(self._challenges)
        self.members[address] = gw
        self._attaching.pop(address, None)
        log.info("attached to the gateway on %s", address)

    async def _detach(self, address: str) -> None:
        task = self._attaching.pop(address, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        gw = self.members.pop(address, None)
        if gw is not None:
            await gw.close()
        self.ledger.forget(address)

    async def stop(self) -> None:
        """Let every gateway go (they keep serving; `down` removed the service already, with the
        stack's other services, when it stopped them)."""
        if self.certificates is not None:
            await self.certificates.stop()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for address in [*self.members, *self._attaching]:
            await self._detach(address)

    close = stop

    def _may_change(self, what: str) -> bool:
        if self.acting is None or self.acting():
            return True
        log.warning("not sending %s to the gateways: this control plane does not hold the stack's lease", what)
        return False

    # GatewayControl -------------------------------------------------------------------------
    @property
    def port(self) -> int | None:
        return self._port

    @property
    def public_host(self) -> str | None:
        """The first node's address that runs a gateway (sorted), for `up` to show one URL."""
        return min(self.nodes) if self.nodes else None

    @property
    def routes(self) -> dict[str, str] | None:
        """The route table last sent (None before any)."""
        return None if self._routes is None else dict(self._routes)

    def set_routes(self, routes: Mapping[str, str]) -> None:
        if not self._may_change("set_routes"):
            return
        self._routes = dict(routes)
        for gw in self.members.values():
            gw.set_routes(self._routes)
        if self.certificates is not None:
            self.certificates.wake()  # hosts may want certificates

    def set_limits(self, balance: str, limits: Mapping[str, Any]) -> None:
        if not self._may_change("set_limits"):
            return
        self._limits = {"balance": balance, "limits": dict(limits)}
        for gw in self.members.values():
            gw.set_limits(balance, limits)

    def add_backend(self, service: str, backend_id: str, host: str, port: int) -> None:
        if not self._may_change("add_backend"):
            return
        self._backends.setdefault(service, {})[backend_id] = (host, int(port))
        for gw in self.members.values():
            gw.add_backend(service, backend_id, host, port)

    def remove_backend(self, service: str, backend_id: str, failed: bool = False) -> None:
        if not self._may_change("remove_backend"):
            return
        self._backends.get(service, {}).pop(backend_id, None)
        for gw in self.members.values():
            gw.remove_backend(service, backend_id, failed)

    def set_certificates(self, pairs: list[dict]) -> None:
        """The certificates every gateway serves (tls.wire_pairs; fleet_tls.py sends them)."""
        if not self._may_change("set_certificates"):
            return
        self._tls_pairs = list(pairs)
        for gw in self.members.values():
            gw.set_certificates(self._tls_pairs)

    def set_challenges(self, tokens: Mapping[str, str]) -> None:
        """The ACME HTTP-01 answers every gateway serves: the CA may ask any node."""
        if not self._may_change("set_challenges"):
            return
        self._challenges = dict(tokens)
        for gw in self.members.values():
            gw.set_challenges(self._challenges)

    async def flush(self, timeout: float = 10.0) -> None:
        """Return once every change made so far has reached every gateway that answers (those
        that do not get it when they do)."""
        async def one(gw: RemoteGateway) -> None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gw.flush(), timeout)

        await asyncio.gather(*(one(gw) for gw in list(self.members.values())))

    async def drain_backend(self, service: str, backend_id: str, timeout: float) -> bool:
        """True once no gateway has a request in flight to it; a gateway that does not answer
        within the timeout (its node cut off) counts as not drained."""
        async def one(gw: RemoteGateway) -> bool:
            try:
                return await asyncio.wait_for(gw.drain_backend(service, backend_id, timeout), timeout + 2)
            except asyncio.TimeoutError:
                return False

        results = await asyncio.gather(*(one(gw) for gw in list(self.members.values())))
        return all(results)

    def backends(self, service: str) -> list[ReplicaView]:
        return merge_views(gw.backends(service) for gw in list(self.members.values()))

    def counters(self, service: str) -> ServiceStats | None:
        return self.all_stats.get(service)

    async def refresh(self) -> None:
        """Read every gateway's counters and views now, waiting at most REFRESH_WAIT: a gateway
        on a node that is cut off answers nothing, and `status` must not wait for it (it keeps
        its last view, at most a poll old)."""
        calls = [asyncio.create_task(gw.refresh()) for gw in list(self.members.values())]
        if not calls:
            return
        _, late = await asyncio.wait(calls, timeout=REFRESH_WAIT)
        for task in late:
            task.cancel()
        for task in calls:  # a failed read keeps the last view too; retrieve, do not raise
            with contextlib.suppress(BaseException):
                await task

    @property
    def all_stats(self) -> dict[str, ServiceStats]:
        now = self.clock()
        for address, gw in list(self.members.items()):
            if gw.instance is not None:
                self.ledger.observe(address, gw.instance, gw.all_stats, now)
        return self.ledger.totals()

    @property
    def pools(self) -> dict[str, PoolSnapshot]:
        names = sorted({name for gw in self.members.values() for name in gw.pools})
        return {name: PoolSnapshot(self.backends(name)) for name in names}

    @property
    def tls_certs(self) -> list[dict]:
        """The certificates the gateways are sent (one list: they all serve the same)."""
        return self.certificates.summary() if self.certificates is not None else []

    def reload_tls(self) -> list[str]:
        """Read the certificate files again now and send what changed (`selfieless tls reload`)."""
        return self.certificates.reload() if self.certificates is not None else ["TLS is not on"]

    def lines(self) -> list[GatewayLine]:
        """One line per node that runs (or should run) a gateway, for `status`."""
        out = []
        for address in sorted({*self.nodes, *self.members, *self._attaching}):
            gw = self.members.get(address)
            stats = gw.all_stats if gw is not None else {}
            out.append(GatewayLine(address=address, node=self.nodes.get(address, ""), attached=gw is not None,
                                   answering=gw is not None and gw.reachable,
                                   instance=gw.instance if gw is not None else None,
                                   requests=sum(st.requests for st in stats.values())))
        return out
