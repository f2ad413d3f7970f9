"""HTTPS on the gateways on every node: certificates read or issued once, by the control plane.

A gateway on every node has no certificate files of its own, and must not ask a CA for itself:
N gateways asking for the same names would hit the CA's limits N times, and the CA's HTTP-01
request reaches whichever node it reaches. So the control plane holds the stack's certificates
in one :class:`~selfieless.gateway.tls.CertStore` (the files of ``gateway.tls``, watched for
changes, and what an ACME CA issues, kept in its state directory) and sends every change of it
to every gateway (``GatewayFleet.set_certificates``: PEM text over each gateway's control API,
replayed to a gateway that restarts or joins). The ACME issuer runs here only: one at a time,
since only the control plane holding the stack's lease issues (``acting``); the CA's challenge
answers go to every gateway before the CA is told to look (:class:`FleetChallenges`). A control
plane running as a Swarm service keeps its ACME folder in the swarm too (``kept``:
drivers/swarm_sealed.py), so one started on another manager does not ask the CA again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from selfieless.gateway.tls import CertStore, TlsSettings, certs_report, wire_pairs

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 30.0  # for a challenge answer to reach every gateway that answers


def fleet_tls_settings(tls: TlsSettings | None) -> dict[str, Any] | None:
    """What a gateway on every node is started with: the HTTPS listener's settings without any
    certificate (they come over its control API) or CA (the control plane is the one issuer)."""
    if tls is None:
        return None
    return dataclasses.replace(tls, default=None, certs=(), acme=None, reload_interval=0.0).to_json()


class FleetChallenges(dict):
    """The issuer's challenge answers (token -> key authorization, bytes), mirrored to every
    gateway. The issuer runs in a worker thread and tells the CA to look right after publishing:
    each change returns once every gateway that answers has it."""

    def __init__(self, fleet: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.fleet, self.loop = fleet, loop

    def __setitem__(self, token: bytes, authorization: bytes) -> None:
        super().__setitem__(token, authorization)
        self._send()

    def pop(self, token: bytes, default: Any = None) -> Any:
        found = super().pop(token, default)
        self._send()
        return found

    def _send(self) -> None:
        tokens = {t.decode(): a.decode() for t, a in self.items()}

        async def send() -> None:
            self.fleet.set_challenges(tokens)
            await self.fleet.flush()

        asyncio.run_coroutine_threadsafe(send(), self.loop).result(PUBLISH_TIMEOUT)


class FleetCertificates:
    """The stack's certificates, kept by the control plane and sent to every gateway."""

    def __init__(self, settings: TlsSettings, fleet: Any, acting: Callable[[], bool] | None = None,
                 kept: Any = None) -> None:
        self.settings, self.fleet, self.acting = settings, fleet, acting
        # Where the ACME folder is kept beyond this control plane (swarm_sealed.SealedFolder:
        # restore() at start, save() after an issue), or None: the state directory is enough.
        self.kept = kept
        self.store = CertStore(settings, on_problem=lambda message: self._report("tls_problem", "", message))
        self.acme = None   # gateway.acme.AcmeManager with gateway.tls.acme

    async def start(self) -> None:
        """Load the files (tls.CertError if one cannot be served: `up` says so), send them, and
        from now on send every change: a file replaced, a certificate issued or renewed."""
        self.store.load()
        self.store.on_change = self._send
        self._send()
        loop = asyncio.get_running_loop()
        self.store.watch(loop)
        if self.settings.acme:
            from selfieless.gateway.acme import AcmeManager, AcmeSettings
            from selfieless.gateway.routing import RouteTable

            if self.kept is not None:
                restored = await asyncio.to_thread(self.kept.restore)
                log.info("ACME: %d files of an earlier control plane restored from the swarm", restored)

            self.acme = AcmeManager(AcmeSettings(**self.settings.acme), self.store, FleetChallenges(self.fleet, loop),
                                    hosts=lambda: RouteTable(self.fleet.routes or {}).hosts(),
                                    events=self._report, acting=self.acting)
            self.acme.start()

    def _send(self) -> None:
        self.fleet.set_certificates(wire_pairs(self.store))

    def wake(self) -> None:
        """The routes changed: hosts may want certificates."""
        if self.acme is not None:
            self.acme.wake()

    def reload(self) -> list[str]:
        """Read every file again now (`selfieless tls reload`); the problems (the old pair stays)."""
        return self.store.reload(force=True)

    def summary(self) -> list[dict]:
        return certs_report(self.store, self.acme)

    def _save(self) -> None:
        try:
            self.kept.save()
        except Exception as e:   # the next issue saves again; the certificate is served meanwhile
            log.error("ACME: the certificates could not be kept in the swarm: %s", e)

    async def stop(self) -> None:
        if self.acme is not None:
            await self.acme.stop()
            self.acme = None
        self.store.close()

    def _report(self, kind: str, host: str, detail: str) -> None:
        if kind == "tls_cert" and self.kept is not None:
            asyncio.get_running_loop().run_in_executor(None, self._save)
        callback = getattr(self.fleet, "on_tls_event", None)
        if callback is not None:
            callback(kind, host, detail)
