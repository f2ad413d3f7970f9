"""Certificates from an ACME CA (RFC 8555, HTTP-01) for the hosts that have no certificate file.

The protocol is the ``acme`` library's (the certbot project's); it is blocking, so every exchange
with the CA runs in a worker thread, never on the event loop. The gateway answers the CA's
HTTP-01 requests itself on its plain port (``Gateway.challenges``, see front.py).

What is stored, under ``<state dir>/acme/<sha256 of the directory URL, 16 hex>/`` so that a
staging CA and a production CA never mix (``directory`` in there names the URL):

    account.key             the account's key (ECDSA P-256, PEM), 0600
    account.json            the account's URL at the CA
    <host>/cert.pem         the certificate chain, 0600
    <host>/key.pem          its key (ECDSA P-256), 0600

Decisions are pure: :func:`renew_at` (30 days before expiry, or at two thirds of a lifetime
shorter than 90 days), :func:`due` (which hosts need a certificate now), :func:`retry_in` (backoff
after a failure). :class:`AcmeManager` carries them out on the gateway's loop, or on the control
plane's for the gateways on every node (orchestrator/fleet_tls.py: one issuer for all of them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .tls import CertPair, CertStore, write_private

log = logging.getLogger(__name__)

RENEW_BEFORE = dt.timedelta(days=30)
NOT_ACTING_LOOK = 5.0  # seconds between looks at the lease of an issuer that may not act yet


@dataclass(frozen=True)
class AcmeSettings:
    """``gateway.tls.acme`` of the stack file, plus where the stack keeps its state."""

    directory: str  # the CA's directory URL
    email: str | None = None
    ca_bundle: str | None = None  # trust this CA file for the directory's TLS (a test CA's)
    state_dir: str = "."
    check_interval: float = 3600.0  # how often certificates are looked at when none is due

    def to_json(self) -> dict:
        return dict(self.__dict__)


def store_dir(state_dir: str | os.PathLike, directory: str) -> Path:
    """Where certificates from the CA at ``directory`` live (one folder per CA)."""
    return Path(state_dir) / "acme" / hashlib.sha256(directory.encode()).hexdigest()[:16]


# --- pure decisions ---------------------------------------------------------------------------

def renew_at(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """When to renew: 30 days before expiry, or at two thirds of a short lifetime."""
    lifetime = not_after - not_before
    return not_after - min(RENEW_BEFORE, lifetime / 3)


def due(hosts: Iterable[str], have: dict[str, tuple[dt.datetime, dt.datetime]], now: dt.datetime,
        waiting: dict[str, dt.datetime]) -> list[str]:
    """Hosts to ask the CA for now: no certificate, or one past its renewal time, and not
    waiting out a backoff after a failure (``waiting``: host -> retry time)."""
    out = []
    for host in sorted(set(hosts)):
        if host.startswith("*.") or (host in waiting and now < waiting[host]):
            continue  # a wildcard needs DNS-01, which HTTP-01 cannot do
        got = have.get(host)
        if got is None or now >= renew_at(*got):
            out.append(host)
    return out


def retry_in(failures: int, base: float = 10.0, cap: float = 3600.0) -> float:
    """Seconds before the next try after ``failures`` failures in a row (doubling, capped)."""
    return min(cap, base * 2 ** max(0, failures - 1))


# --- files ------------------------------------------------------------------------------------

def new_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_times(pem: bytes) -> tuple[dt.datetime, dt.datetime]:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


# --- the protocol (blocking: run in a thread) -------------------------------------------------

class AcmeIssuer:
    """Talks to one CA with one account (created on first use, kept in the store folder)."""

    def __init__(self, settings: AcmeSettings, publish: Callable[[bytes, bytes], object],
                 withdraw: Callable[[bytes], object]) -> None:
        self.settings = settings
        self.dir = store_dir(settings.state_dir, settings.directory)
        self.publish, self.withdraw = publish, withdraw
        self._client = None

    def _account(self):
        import josepy as jose
        from acme import client, errors, messages

        key_path = self.dir / "account.key"
        if not key_path.exists():
            write_private(key_path, new_key_pem())
            (self.dir / "directory").write_text(self.settings.directory + "\n")
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        jwk = jose.JWKEC(key=key)
        net = client.ClientNetwork(jwk, alg=jose.ES256, user_agent="selfieless-gateway",
                                   verify_ssl=self.settings.ca_bundle or True)
        acme = client.ClientV2(client.ClientV2.get_directory(self.settings.directory, net), net)
        reg = messages.NewRegistration.from_data(email=self.settings.email, terms_of_service_agreed=True)
        try:
            regr = acme.new_account(reg)
        except errors.ConflictError as e:  # the key already has an account there: use it
            regr = acme.query_registration(messages.RegistrationResource(uri=e.location, body=messages.Registration()))
        write_private(self.dir / "account.json", json.dumps({"uri": regr.uri}).encode())
        return acme, jwk

    def issue(self, host: str) -> CertPair:
        """A new certificate for ``host`` (HTTP-01), stored; raises on any failure."""
        from acme import challenges, crypto_util, messages

        if self._client is None:
            self._client = self._account()
        acme, jwk = self._client
        key_pem = new_key_pem()
        order = acme.new_order(crypto_util.make_csr(key_pem, [host]))
        tokens = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA still trusts an earlier validation (a renewal, usually)
                chall = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
                if chall is None:
                    raise RuntimeError(f"{host}: the CA offers no HTTP-01 challenge")
                response, validation = chall.response_and_validation(jwk)
                token = chall.chall.encode("token").encode()
                self.publish(token, validation.encode())
                tokens.append(token)
                acme.answer_challenge(chall, response)
            deadline = dt.datetime.now() + dt.timedelta(seconds=90)
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for token in tokens:
                self.withdraw(token)
        folder = self.dir / host
        write_private(folder / "key.pem", key_pem)
        write_private(folder / "cert.pem", order.fullchain_pem.encode())
        return CertPair(str(folder / "cert.pem"), str(folder / "key.pem"), (host,))


# --- on the gateway's loop --------------------------------------------------------------------

class AcmeManager:
    """Keeps a certificate from the CA for every host of the routes that no file covers.

    ``hosts()`` says which hosts the routes name now; ``events(kind, host, detail)`` reports
    ``tls_cert`` (issued or renewed) and ``tls_problem`` (a failure; retried with backoff). A
    failure never touches the plain HTTP side. ``clock_offset`` shifts "now" (tests: renewal).
    """

    def __init__(self, settings: AcmeSettings, store: CertStore, challenges: dict[bytes, bytes],
                 hosts: Callable[[], Iterable[str]],
                 events: Callable[[str, str, str], object] | None = None,
                 acting: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self.acting = acting  # None, or whether this control plane holds the stack's lease: only then it asks the CA
        self.store = store
        self.hosts = hosts
        self.events = events
        self.issuer = AcmeIssuer(settings, challenges.__setitem__, lambda t: challenges.pop(t, None))
        self.have: dict[str, tuple[dt.datetime, dt.datetime]] = {}
        self.failures: dict[str, int] = {}
        self.problems: dict[str, str] = store.acme_problems  # host -> the last failure, until a certificate comes
        self.waiting: dict[str, dt.datetime] = {}
        self.clock_offset = dt.timedelta(0)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.clock_offset

    def start(self) -> None:
        self._load_stored()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-acme")

    def wake(self) -> None:
        """Look again now (routes changed, or a test moved the clock)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _load_stored(self) -> None:
        """Certificates a previous run got: served at once, not asked for again."""
        base = store_dir(self.settings.state_dir, self.settings.directory)
        for cert in sorted(base.glob("*/cert.pem")):
            host = cert.parent.name
            try:
                self._install(CertPair(str(cert), str(cert.parent / "key.pem"), (host,)))
            except (ValueError, OSError) as e:  # expired or damaged: it is simply due
                log.warning("stored ACME certificate for %s not used: %s", host, e)

    def _install(self, pair: CertPair) -> None:
        self.store.add(pair)
        self.have[pair.hosts[0]] = cert_times(Path(pair.cert).read_bytes())

    def _wanted(self) -> list[str]:
        covered = self.store.file_hosts()
        return [h for h in self.hosts() if h not in covered]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = self.now()
            wanted = self._wanted() if self.acting is None or self.acting() else []
            for host in due(wanted, self.have, now, self.waiting):
                try:
                    pair = await loop.run_in_executor(None, self.issuer.issue, host)
                    self._install(pair)
                except Exception as e:  # noqa: BLE001 - whatever the CA or the network did
                    n = self.failures[host] = self.failures.get(host, 0) + 1
                    wait = retry_in(n)
                    self.waiting[host] = now + dt.timedelta(seconds=wait)
                    message = (f"{host}: no certificate from {self.settings.directory}: {e} "
                               f"(try {n}; next in {wait:g} s)")
                    log.error("ACME: %s", message)
                    self.problems[host] = message
                    self._report("tls_problem", host, message)
                    continue
                self.failures.pop(host, None)
                self.waiting.pop(host, None)
                self.problems.pop(host, None)
                not_after = self.have[host][1]
                self._report("tls_cert", host, f"certificate for {host} from {self.settings.directory}, "
                                               f"valid until {not_after:%Y-%m-%d %H:%M} UTC")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._sleep(self.now()))
            except asyncio.TimeoutError:
                pass

    def missing(self) -> list[dict]:
        """Hosts that want a certificate and have none yet (or whose renewal fails: the problem)."""
        return [{"cert": None, "hosts": [h], "default": False, "acme": True, "not_after": None,
                 "problem": self.problems.get(h)}
                for h in self._wanted() if h not in self.have and not h.startswith("*.")]

    def _sleep(self, now: dt.datetime) -> float:
        """Until the next renewal time or retry, at most ``check_interval``, at least 1 s."""
        times = [renew_at(*t) for t in self.have.values()] + list(self.waiting.values())
        nxt = min((t - now).total_seconds() for t in times) if times else self.settings.check_interval
        if self.acting is not None and not self.acting():
            nxt = min(nxt, NOT_ACTING_LOOK)  # it may take the lease any moment
        return max(1.0, min(self.settings.check_interval, nxt))

    def _report(self, kind: str, host: str, detail: str) -> None:
        if self.events is not None:
            try:
                self.events(kind, host, detail)
            except Exception:
                log.exception("ACME event callback failed")
