"""The :class:`Gateway` facade: the control API of docs/interfaces.md.

It implements :class:`~selfieless.gateway.control.GatewayControl` in-process; the same protocol is
served to a control plane in another process by :mod:`selfieless.gateway.control_api`.

It owns the listening sockets (HTTP, and HTTPS when given ``tls``: gateway/tls.py), the route table (swapped whole by :meth:`set_routes`), one
:class:`~selfieless.gateway.pool.ReplicaPool` and one
:class:`~selfieless.gateway.stats.ServiceStats` per service, and the periodic sweep that enforces
timeouts. All methods run on the event loop that called :meth:`start`; none of them blocks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping

from .config import GatewayConfig
from . import stall
from . import front
from .client import ClientConnection
from .exchange import Failure
from .pool import READY, WITHDRAWN, EjectCallback, ReplicaPool
from .routing import RouteTable
from .stats import CountRule, ServiceStats
from .tls import CertError, CertStore, TlsSettings, certs_report, connection_class

log = logging.getLogger(__name__)


# Requests waiting per service while no backend is ready (beyond that: 503 at once).
MAX_WAITING_PER_SERVICE = 1000


class Gateway:
    """HTTP/1.1 reverse proxy in front of every service (the data plane)."""

    def __init__(
        self,
        config: GatewayConfig | None = None,
        routes: Mapping[str, str] | None = None,
        on_eject: EjectCallback | None = None,
        on_backend_error: Callable[[str, str, int], object] | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self.config = config or GatewayConfig()
        self.routes = RouteTable(routes)  # read once per request: the swap is one assignment
        # HTTPS beside HTTP (tls.py); the store is loaded at start. tls_port: the real port.
        self.tls = tls
        self.certs: CertStore | None = None
        self.tls_port: int | None = None
        self._tls_server: asyncio.AbstractServer | None = None
        # ACME HTTP-01: token -> key authorization, answered on plain HTTP whatever the routes.
        self.challenges: dict[bytes, bytes] = {}
        self.acme = None  # acme.AcmeManager when gateway.tls.acme is set
        # Requests are looked up by (scheme, host, path) once a route names a host or TLS is on
        # (front.decide); by path alone otherwise, as fast as before.
        self.by_path = not self.routes.by_host and tls is None
        self.on_eject = on_eject
        # (service, replica_id, status) for every 5xx a replica answers: the control plane may
        # probe that replica at once instead of at its next health-check interval.
        self.on_backend_error = on_backend_error
        # (service) when a request starts waiting because no replica is ready: the control plane
        # may start one (scale from zero). `waiting` bounds how many wait per service.
        self.on_no_backend: Callable[[str], object] | None = None
        # (service, replica_id, reason) when a stalled replica is withdrawn (see stall.py): the
        # control plane marks it out of rotation and lets its health probes decide.
        self.on_withdraw: EjectCallback | None = None
        # (service, reason) when every replica of a service stalls together (see
        # stall.stalled_together): none is withdrawn, but the control plane says so in an event.
        self.on_stalled_together: Callable[[str, str], object] | None = None
        self._stalled_together: set[str] = set()  # services whose shared stall was reported
        self.waiting: dict[str, int] = {}  # requests waiting for a ready backend, per service
        self.count_rule = CountRule(self.config.count_prefix, self.config.count_exclude)
        self.clients: set[ClientConnection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None
        self.stopping = False
        self._pools: dict[str, ReplicaPool] = {}
        self._stats: dict[str, ServiceStats] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # path -> (pool, stats, counted) or None: one dict hit per request instead of a route
        # match, a count check and two service lookups. Replaced together with the routes.
        self.resolved: dict[bytes, tuple | None] = {}
        # Coarse clock (loop.time() as of the last sweep) for deadlines and idle ages: precise
        # enough for timeouts, and it saves several clock reads per request.
        self.now = 0.0

    # Lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start serving; afterwards :attr:`port` is the real port."""
        if self._server is not None:
            raise RuntimeError("gateway already started")
        self.loop = asyncio.get_running_loop()
        self.stopping = False
        cfg = self.config
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self), cfg.host, cfg.port,
            backlog=cfg.backlog, reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.tls is not None:
            try:
                await self._start_tls()
            except BaseException:
                self._server.close()
                self._server = None
                raise
        self.now = self.loop.time()
        self._sweeper = self.loop.call_later(cfg.sweep_interval, self._sweep)
        log.info("gateway listening on %s:%s", cfg.host, self.port)

    async def _start_tls(self) -> None:
        """The HTTPS listener: certificates loaded (tls.CertError if one cannot be), then bound.
        The header timeout covers the handshake, so a client stalling in it is dropped as one
        stalling in its headers would be."""
        cfg = self.config
        self.certs = CertStore(self.tls, on_problem=self._tls_problem)
        self.certs.load()
        protocol = connection_class(self.tls)
        try:
            self._tls_server = await self.loop.create_server(
                lambda: protocol(self), cfg.host, self.tls.port, ssl=self.certs.context,
                ssl_handshake_timeout=cfg.header_timeout, backlog=cfg.backlog, reuse_address=True,
            )
        except OSError as e:  # say which of the two ports (errno 0: not read as the HTTP port's)
            raise OSError(0, f"the HTTPS port {self.tls.port} (gateway.tls.port, --tls-port): "
                             f"{e.strerror or e}") from None
        self.tls_port = self._tls_server.sockets[0].getsockname()[1]
        self.certs.watch(self.loop)
        if self.tls.acme:
            from .acme import AcmeManager, AcmeSettings

            self.acme = AcmeManager(AcmeSettings(**self.tls.acme), self.certs, self.challenges,
                                    hosts=lambda: self.routes.hosts(), events=self._tls_event)
            self.acme.start()
        log.info("gateway listening for HTTPS on %s:%s", cfg.host, self.tls_port)

    def _tls_problem(self, message: str) -> None:
        self._tls_event("tls_problem", "", message)

    def _tls_event(self, kind: str, host: str, detail: str) -> None:
        cb = self.on_tls_event
        if cb is not None:
            try:
                cb(kind, host, detail)
            except Exception:
                log.exception("on_tls_event callback failed")

    # (kind, host, detail): "tls_problem" when certificate files could not be reloaded (the
    # previous ones stay) or an ACME CA gave none; "tls_cert" when an ACME CA issued one.
    on_tls_event: Callable[[str, str, str], object] | None = None

    @property
    def tls_certs(self) -> list[dict]:
        """Every certificate served (hosts, ``not_after`` ISO time, whether from ACME, a reload
        problem) and every ACME host still without one (``not_after`` None, its problem)."""
        return [] if self.certs is None else certs_report(self.certs, self.acme)

    def reload_tls(self) -> list[str]:
        """Load the certificate files again now (``selfieless tls reload``); the problems."""
        if self.certs is None:
            return ["TLS is not on"]
        return self.certs.reload(force=True)

    def set_certificates(self, pairs: list[dict]) -> None:
        """Serve the certificates a control plane sent (tls.wire_pairs: a gateway on every node
        has no files of its own); tls.CertError, and nothing changes, if one cannot be served."""
        if self.certs is None:
            raise CertError("TLS is not on: the gateway was started without HTTPS settings")
        self.certs.take_pushed(pairs)

    def set_challenges(self, tokens: Mapping[str, str]) -> None:
        """The ACME HTTP-01 answers a control plane's issuer needs served (token -> key
        authorization): the CA may ask any node's gateway."""
        self.challenges = {t.encode(): a.encode() for t, a in tokens.items()}

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace`` s), close the rest."""
        if self._server is None:
            return
        self.stopping = True  # responses from now on say Connection: close
        self._server.close()
        if self._tls_server is not None:
            self._tls_server.close()
            self.certs.close()
        if self.acme is not None:
            await self.acme.stop()
            self.acme = None
        for conn in list(self.clients):
            if conn.active is None and not conn.queue:
                conn.close()
        deadline = self.loop.time() + grace
        while any(not c.closed for c in self.clients) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.clients):
            if conn.transport is not None:
                conn.transport.abort()
        await self._server.wait_closed()
        self._server = None
        if self._tls_server is not None:
            await self._tls_server.wait_closed()
            self._tls_server = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self._pools.values():
            pool.close()

    # Control API ----------------------------------------------------------------------------
    def set_routes(self, routes: Mapping[str, str]) -> None:
        """Atomically replace the route table (built first, then swapped in one assignment)."""
        table = RouteTable(routes)
        # Three assignments, but nothing else runs on the loop between them: requests see the old
        # table and cache, or the new table with an empty cache.
        self.routes = table
        self.resolved = {}
        self.by_path = not table.by_host and self.tls is None
        if self.acme is not None:
            self.acme.wake()  # new hosts may want certificates

    def set_limits(self, balance: str, limits: Mapping) -> None:
        """New connections read the new limits; open ones finish under the old."""
        self.config = dataclasses.replace(self.config, balance=balance, **dict(limits))

    def add_backend(self, service: str, backend_id: str, host: str, port: int) -> None:
        self.pool(service).add(backend_id, host, port)

    def remove_backend(self, service: str, backend_id: str, failed: bool = False) -> None:
        """Take a backend out. Requests in flight to it finish, unless it ``failed`` (its health
        probe did): then those with no response byte yet move elsewhere or get a 502 at once
        (``exchange.Failure.REMOVED``) instead of hanging until a timeout."""
        pool = self.pool(service)
        rep = pool.get(backend_id)
        pool.remove(backend_id)
        if failed and rep is not None and rep.in_flight:
            self._give_up(rep, Failure.REMOVED)

    async def drain_backend(self, service: str, backend_id: str, timeout: float) -> bool:
        return await self.pool(service).drain(backend_id, timeout=timeout)

    def backends(self, service: str) -> list:
        return self.pool(service).replicas  # creates the pool: `/` then lists the service

    def counters(self, service: str) -> ServiceStats | None:
        return self._stats.get(service)

    async def refresh(self) -> None:
        """Counters and pools are read live in-process: nothing to refresh."""

    def resolve(self, key) -> tuple | front.Answer | None:
        """``(pool, stats, counted)`` for a request, a :class:`front.Answer` the gateway gives
        itself, or None when no route matches. ``key`` is the path, or (scheme, host, path)
        when ``by_path`` is off."""
        if key.__class__ is bytes:
            path = key
            service = self.routes.match(path)
        else:
            scheme, host, path = key
            route = front.Route(*self.routes.lookup(host, path))
            service = route.service
            what = front.decide(scheme, host, path, route, self.tls is not None,
                                self.tls.plain_services if self.tls is not None else frozenset())
            if what == front.CHALLENGE:  # not cached: tokens come and go
                auth = self.challenges.get(path[len(front.ACME_PREFIX):])
                return front.NO_CHALLENGE if auth is None else front.Answer(200, auth)
            if what == front.REDIRECT:
                service = front.redirect(host, self.tls_port or self.tls.port)
            elif what == front.STATUS_PAGE:
                service = front.STATUS
            elif what == front.NO_ROUTE:
                service = None
        if service is None or service.__class__ is front.Answer:
            entry = service
        else:
            entry = (self.pool(service), self.stats(service), self.count_rule.counted(path))
        if len(self.resolved) < 4096:  # bounded: client-chosen paths must not grow memory
            self.resolved[key] = entry
        return entry

    def pool(self, service: str) -> ReplicaPool:
        """The replica pool of ``service``, created on first use."""
        pool = self._pools.get(service)
        if pool is None:
            pool = ReplicaPool(service, self.config.balance, on_eject=self._ejected)
            self._pools[service] = pool
        return pool

    def stats(self, service: str) -> ServiceStats:
        """Live counters of ``service`` (created on first use; read its attributes)."""
        st = self._stats.get(service)
        if st is None:
            st = ServiceStats(service)
            self._stats[service] = st
        return st

    @property
    def pools(self) -> dict[str, ReplicaPool]:
        return dict(self._pools)

    @property
    def all_stats(self) -> dict[str, ServiceStats]:
        return dict(self._stats)

    def status(self) -> dict:
        """What ``GET /`` shows on the public port: which services answer, nothing internal.

        No addresses, ports, replica ids, pids, command lines or settings: the public port is
        reachable by anyone, and the full status (which may hold a database URL) belongs to the
        admin API, which is loopback-only unless a token is set.
        """
        return {
            "gateway": "selfieless",
            "services": {
                name: {"ready_replicas": sum(1 for r in pool.replicas if r.state == READY)}
                for name, pool in sorted(self._pools.items())
            },
        }

    # Internals ------------------------------------------------------------------------------
    def wait_for_backend(self, service: str) -> bool:
        """A request starts waiting for a ready backend of `service`; False when too many already wait."""
        n = self.waiting.get(service, 0)
        if n >= MAX_WAITING_PER_SERVICE:
            return False
        self.waiting[service] = n + 1
        cb = self.on_no_backend
        if cb is not None:
            try:
                cb(service)
            except Exception:  # a control-plane bug must not strand the held request
                log.exception("on_no_backend callback failed")
        return True

    def stop_waiting(self, service: str) -> None:
        """A request no longer waits for a backend of `service` (it got one, or gave up)."""
        self.waiting[service] = max(0, self.waiting.get(service, 1) - 1)

    def backend_error(self, service: str, replica_id: str, status: int) -> None:
        cb = self.on_backend_error
        if cb is not None:
            cb(service, replica_id, status)

    def _withdraw_stalled(self, pool: ReplicaPool, silent: dict, now: float, threshold: float) -> None:
        """Withdraw the pool's stalled backends (stall.py decides); bring back one that answered."""
        reps = list(pool._replicas.values())
        for rep in reps:
            if rep.served != rep.served_mark or rep.heard_at == 0.0:
                rep.served_mark = rep.served
                rep.heard_at = now
                if rep.health == WITHDRAWN:
                    pool.reinstate(rep)  # it answered: the stall is over
        reported = pool.service in self._stalled_together
        if len(reps) < 2 or not (silent or reported):
            return
        seen = [stall.Seen(rep.in_rotation, rep.health == WITHDRAWN, silent.get(rep, 0.0), now - rep.heard_at)
                for rep in reps]
        if stall.stalled_together(seen, threshold, reported) != reported:
            self._mark_stalled_together(pool.service, not reported, seen)
        for i in stall.to_withdraw(seen, threshold, self.config.sweep_interval):
            rep = reps[i]
            reason = (f"stalled: no response byte for {seen[i].waiting:.2f} s while its siblings answer "
                      f"(stall_timeout {threshold:g} s)")
            if pool.withdraw(rep, reason):
                self.stats(pool.service).withdrew()
                self._give_up(rep, Failure.STALLED)
                cb = self.on_withdraw  # its probes decide: a pass brings it back (add_backend)
                if cb is not None:
                    try:
                        cb(pool.service, rep.id, reason)
                    except Exception:
                        log.exception("on_withdraw callback failed for %s/%s", pool.service, rep.id)

    def _mark_stalled_together(self, service: str, on: bool, seen: list) -> None:
        if not on:
            self._stalled_together.discard(service)
            return
        self._stalled_together.add(service)
        waited = min(b.waiting for b in seen if b.in_rotation)
        reason = (f"every replica in rotation ({sum(1 for b in seen if b.in_rotation)}) has held reads for "
                  f"{waited:.1f} s with no answer from any: not one replica's fault but something they share "
                  f"(the database, or a lock held in it); none is withdrawn")
        log.warning("%s: %s", service, reason)
        cb = self.on_stalled_together
        if cb is not None:
            try:
                cb(service, reason)
            except Exception:
                log.exception("on_stalled_together callback failed for %s", service)

    def _ejected(self, service: str, replica_id: str, reason: str) -> None:
        self.stats(service).ejected()
        cb = self.on_eject  # read at call time: the control plane may set it after start
        if cb is not None:
            cb(service, replica_id, reason)

    def _give_up(self, rep, kind: Failure) -> None:
        """Every request waiting on ``rep`` without a response byte: ask the exchange (``kind``)."""
        for conn in list(self.clients):
            if conn.active is not None:
                conn.exchange.backend_out(rep, kind)  # it checks whether it waits on ``rep``

    def _sweep(self) -> None:
        """Enforce timeouts and withdraw stalled backends: one pass over connections instead
        of a timer per request."""
        loop = self.loop
        now = self.now = loop.time()
        try:
            threshold = self.config.stall_timeout
            silent: dict = {}  # backend -> longest wait of a read for its first response byte
            for conn in list(self.clients):
                conn.check_deadline(now)
                if threshold > 0 and conn.exchange is not None:
                    conn.exchange.observe(now, silent)
            max_age = self.config.upstream_idle_timeout
            for pool in self._pools.values():
                for rep in pool._replicas.values():
                    if rep.idle:
                        rep.expire_idle(now, max_age)
                if threshold > 0:
                    self._withdraw_stalled(pool, silent, now, threshold)
        except Exception:  # never let the sweeper die
            log.exception("gateway sweep failed")
        if self._server is not None:
            self._sweeper = loop.call_later(self.config.sweep_interval, self._sweep)
