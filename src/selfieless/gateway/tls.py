"""TLS for the gateway's HTTPS listener: settings, server contexts, and the certificate store.

- :class:`TlsSettings` is what the stack file's ``gateway.tls`` becomes (it crosses the process
  boundary as JSON, like ``GatewayConfig``).
- :func:`server_context` makes an ``ssl.SSLContext`` the way every listener needs it: TLS 1.2
  and 1.3 only, Mozilla's "intermediate" cipher list for 1.2 (1.3 suites are all fine),
  no compression or renegotiation.
- :func:`read_pair` loads a certificate and key and says in one line what is wrong with them
  (missing, unreadable, not PEM, key does not match, expired).
- :class:`CertStore` holds one context per pair and answers the SNI callback: the pair of the
  host named, else the default pair, else (or with ``strict_sni``) a refused handshake. Reloading
  swaps the host -> context map in one assignment: handshakes already done keep the context they
  chose, so open connections never notice; a pair that fails to load keeps its previous one.
- :func:`wire_pairs` and :func:`write_pushed` carry a store's certificates to the gateways on
  every node: the control plane reads or issues them once and sends them (PEM text) over each
  gateway's control API; a gateway writes them to a folder of its own and serves them from there
  (``CertStore.replace``), since OpenSSL loads certificates from files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from .client import ClientConnection

log = logging.getLogger(__name__)

# Mozilla's "intermediate" configuration (TLS 1.2 part; TLS 1.3 suites are OpenSSL's defaults).
MOZILLA_INTERMEDIATE = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
))


class CertError(ValueError):
    """A certificate pair that cannot be served; the message says which file and why."""


@dataclass(frozen=True)
class CertPair:
    """A certificate chain and its key (PEM files). ``hosts`` empty: the names in the
    certificate (its DNS subject alternative names) are the hosts it serves."""

    cert: str
    key: str
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsSettings:
    """The HTTPS listener: where, with which certificates, and what plain HTTP does meanwhile."""

    port: int = 443  # 0 picks a free port; Gateway.tls_port tells which
    default: CertPair | None = None  # served to an unknown SNI (unless strict_sni) or none at all
    certs: tuple[CertPair, ...] = ()  # per host
    strict_sni: bool = False  # refuse handshakes naming no host we have a certificate for
    # Services still served on plain HTTP (``redirect_https: false``); all others get a 301.
    plain_services: frozenset[str] = frozenset()
    reload_interval: float = 2.0  # how often certificate files are checked for a change; 0: never
    # ACME (acme.AcmeSettings fields as a dict): certificates for the hosts no file covers.
    acme: dict | None = None
    hsts: str | None = None  # Strict-Transport-Security value for HTTPS responses, e.g. "max-age=31536000"

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["plain_services"] = sorted(self.plain_services)
        return d

    @classmethod
    def from_json(cls, d: dict) -> TlsSettings:
        def pair(p):
            return None if p is None else CertPair(p["cert"], p["key"], tuple(p.get("hosts") or ()))

        return cls(port=int(d.get("port", 443)), default=pair(d.get("default")),
                   certs=tuple(pair(p) for p in d.get("certs") or ()), strict_sni=bool(d.get("strict_sni")),
                   plain_services=frozenset(d.get("plain_services") or ()),
                   reload_interval=float(d.get("reload_interval", 2.0)), acme=d.get("acme"),
                   hsts=d.get("hsts"))

    def pairs(self) -> tuple[CertPair, ...]:
        return ((self.default,) if self.default is not None else ()) + self.certs


def server_context() -> ssl.SSLContext:
    """A server-side context with the listener's protocol and cipher policy, no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(MOZILLA_INTERMEDIATE)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass(frozen=True)
class LoadedPair:
    pair: CertPair
    context: ssl.SSLContext
    hosts: tuple[str, ...]  # as given, else the certificate's DNS names
    not_after: dt.datetime
    stamp: tuple  # the files' (mtime, size, inode): a change means reload


def file_stamp(*paths: str) -> tuple:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def cert_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName))


def read_pair(pair: CertPair, now: dt.datetime | None = None, field_name: str = "cert") -> LoadedPair:
    """Load ``pair`` into its own server context; :class:`CertError` says what is wrong."""
    stamp = file_stamp(pair.cert, pair.key)
    key_field = field_name.rpartition(".")[0] + ".key" if "." in field_name else "key"
    for what, path in ((field_name, pair.cert), (key_field, pair.key)):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise CertError(f"{what}: cannot read {path}: {e.strerror or e}") from None
        if what == field_name:
            try:
                cert = x509.load_pem_x509_certificate(data)
            except ValueError:
                raise CertError(f"{field_name}: {path} holds no PEM certificate") from None
    ctx = server_context()
    try:
        ctx.load_cert_chain(pair.cert, pair.key)
    except ssl.SSLError as e:
        why = "the key does not match the certificate" if "MISMATCH" in str(e).upper() else \
            f"the key or chain cannot be used ({e.reason or e})"
        raise CertError(f"{key_field}: {pair.key}: {why}") from None
    now = now or dt.datetime.now(dt.timezone.utc)
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        raise CertError(f"{field_name}: {pair.cert} expired on {not_after:%Y-%m-%d %H:%M} UTC")
    hosts = tuple(h.lower().rstrip(".") for h in pair.hosts) or cert_names(cert)
    return LoadedPair(pair, ctx, hosts, not_after, stamp)


def pair_problems(pair: CertPair, field_name: str) -> list[str]:
    """What ``validate``/``up`` says about a pair (empty: it can be served)."""
    try:
        read_pair(pair, field_name=field_name)
    except CertError as e:
        return [str(e)]
    return []


def choose(host: str | None, contexts: dict, default, strict: bool):
    """The context for an SNI name (pure): exact host, then ``*.parent``, then the default
    unless strict; None refuses the handshake."""
    if host:
        host = host.lower().rstrip(".")
        found = contexts.get(host)
        if found is None:
            dot = host.find(".")
            found = contexts.get("*" + host[dot:]) if dot > 0 else None
        if found is not None:
            return found
    return None if strict else default


class CertStore:
    """Certificates by host for the HTTPS listener, reloaded when their files change."""

    def __init__(self, settings: TlsSettings, on_problem: Callable[[str], object] | None = None) -> None:
        self.settings = settings
        self.on_problem = on_problem  # (message) when a reload keeps an old pair
        self.loaded: dict[CertPair, LoadedPair] = {}
        self.acme: dict[str, CertPair] = {}  # host -> the pair an ACME CA issued (acme.py)
        self.acme_problems: dict[str, str] = {}  # host -> why its renewal fails (acme.py writes it)
        self._by_host: dict[str, ssl.SSLContext] = {}
        self._default: ssl.SSLContext | None = None
        self._problems: dict[CertPair, str] = {}
        self._expired: set[LoadedPair] = set()  # reported by check_expiry
        self._timer = None
        self.reloads = 0  # successful swaps after the first load
        self.on_change: Callable[[], object] | None = None  # after every swap (the fleet pushes them on)
        self.pushed_dir: Path | None = None  # where take_pushed keeps what it was sent
        self.context = server_context()  # the listener's: it only picks one of the pairs'
        self.context.sni_callback = self._sni

    def load(self) -> None:
        """First load: every pair must load (CertError otherwise)."""
        fresh = {}
        for i, pair in enumerate(self.settings.pairs()):
            fresh[pair] = read_pair(pair, field_name="gateway.tls.cert" if pair is self.settings.default
                                    else f"gateway.tls.certs[{i - (self.settings.default is not None)}].cert")
        self._install(fresh)

    def reload(self, force: bool = False) -> list[str]:
        """Load again the pairs whose files changed (all with ``force``); a pair that fails keeps
        its previous certificate. Returns the problems (empty: all current)."""
        fresh = dict(self.loaded)
        problems = []
        changed = False
        for pair in self.settings.pairs() + tuple(self.acme.values()):
            old = self.loaded.get(pair)
            if not force and old is not None and file_stamp(pair.cert, pair.key) == old.stamp:
                continue
            try:
                fresh[pair] = read_pair(pair)
                changed = True
                self._problems.pop(pair, None)
            except CertError as e:
                problems.append(str(e))
                if self._problems.get(pair) != str(e):  # say it once, not at every look
                    self._problems[pair] = str(e)
                    log.error("TLS certificate not reloaded, the previous one stays: %s", e)
                    if self.on_problem is not None:
                        self.on_problem(str(e))
        if changed:
            self._install(fresh)
            self.reloads += 1
        return problems

    def add(self, pair: CertPair) -> None:
        """Serve ``pair`` (an ACME certificate for ``pair.hosts[0]``) from the next handshake on,
        in place of the host's previous one; CertError if it cannot be served."""
        lp = read_pair(pair)
        fresh = {p: v for p, v in self.loaded.items() if p != self.acme.get(pair.hosts[0])}
        fresh[pair] = lp
        self.acme[pair.hosts[0]] = pair
        self._install(fresh)

    def replace(self, default: CertPair | None, certs: Iterable[CertPair]) -> None:
        """Serve these pairs instead of the ones held (a gateway on every node, given them by its
        control plane); CertError, and nothing changes, if one of them cannot be served."""
        settings = dataclasses.replace(self.settings, default=default, certs=tuple(certs))
        fresh = {pair: read_pair(pair) for pair in settings.pairs()}
        self.settings = settings
        self._install(fresh)

    def take_pushed(self, pairs: list[dict]) -> None:
        """Serve the pairs a control plane sent (``wire_pairs``), from files in a folder of this
        store's own, which then holds nothing else; CertError, and nothing changes, if one of them
        cannot be served."""
        if self.pushed_dir is None:
            self.pushed_dir = Path(tempfile.mkdtemp(prefix="selfieless-certs-"))
        self.replace(*write_pushed(self.pushed_dir, pairs))
        serving = {path for pair in self.settings.pairs() for path in (pair.cert, pair.key)}
        for f in self.pushed_dir.iterdir():
            if str(f) not in serving:
                f.unlink(missing_ok=True)

    def file_hosts(self) -> set[str]:
        """Hosts a certificate file names (explicitly, or in the certificate): ACME leaves these alone."""
        return {h for p in self.settings.pairs() if p in self.loaded for h in self.loaded[p].hosts}

    def _install(self, fresh: dict[CertPair, LoadedPair]) -> None:
        by_host = {}
        # Files for hosts win over ACME certificates, which win over the default file's names.
        for pair in self.settings.certs + tuple(self.acme.values()):
            lp = fresh.get(pair)
            if lp is not None:
                for h in lp.hosts:
                    by_host.setdefault(h, lp.context)
        d = self.settings.default
        default = fresh[d].context if d is not None and d in fresh else None
        if default is not None:
            for h in fresh[d].hosts:
                by_host.setdefault(h, default)
        # One assignment each: a handshake reads either the old map or the new one.
        self.loaded = fresh
        self._by_host = by_host
        self._default = default
        if self.on_change is not None:
            self.on_change()

    def _sni(self, sslobj, server_name: str | None, _ctx):
        ctx = choose(server_name, self._by_host, self._default, self.settings.strict_sni)
        if ctx is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = ctx
        return None

    def summary(self, now: dt.datetime | None = None) -> list[dict]:
        """Each certificate served: its hosts, expiry, seconds left, and a reload problem if any."""
        now = now or dt.datetime.now(dt.timezone.utc)
        return [{"cert": lp.pair.cert, "hosts": list(lp.hosts), "default": lp.pair == self.settings.default,
                 "acme": lp.pair in self.acme.values(),
                 "not_after": lp.not_after.isoformat(), "expires_in": (lp.not_after - now).total_seconds(),
                 "problem": self._problems.get(lp.pair) or (self.acme_problems.get(lp.hosts[0]) if lp.hosts else None)}
                for lp in self.loaded.values()]

    def check_expiry(self, now: dt.datetime | None = None) -> list[str]:
        """Say once (``on_problem``) of each certificate served past its expiry: clients refuse
        it, and nothing but new files (or ACME) will mend that."""
        now = now or dt.datetime.now(dt.timezone.utc)
        out = []
        for lp in self.loaded.values():
            if lp.not_after <= now and lp not in self._expired:
                self._expired.add(lp)
                message = (f"{lp.pair.cert} ({', '.join(lp.hosts) or 'no names'}) expired on "
                           f"{lp.not_after:%Y-%m-%d %H:%M} UTC and is still served: replace it")
                log.error("TLS: %s", message)
                out.append(message)
                if self.on_problem is not None:
                    self.on_problem(message)
        return out

    def watch(self, loop) -> None:
        """Look at the files every ``reload_interval`` seconds (a stat each: cheap)."""
        interval = self.settings.reload_interval
        if interval <= 0:
            return

        def tick() -> None:
            try:
                self.reload()
                self.check_expiry()
            except Exception:  # never let the watcher die
                log.exception("TLS certificate reload failed")
            self._timer = loop.call_later(interval, tick)

        self._timer = loop.call_later(interval, tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pushed_dir is not None:
            shutil.rmtree(self.pushed_dir, ignore_errors=True)
            self.pushed_dir = None


def certs_report(store: CertStore, acme=None) -> list[dict]:
    """Every certificate a store serves (hosts, ``not_after`` ISO time, whether from ACME, a reload
    problem) and every host ``acme`` (acme.AcmeManager) has none for yet (``not_after`` None, its
    problem): what `status` shows."""
    out = store.summary()
    if acme is not None:
        out += acme.missing()
    for c in out:
        c.pop("expires_in", None)  # readers compute it when they read (a remote copy ages)
    return out


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` owner-only (0600) and rename it into place: never half a key on disk."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def wire_pairs(store: CertStore) -> list[dict]:
    """The certificates a store serves, as a gateway on another node is sent them: PEM text, the
    hosts each serves, which one is the default. Files for hosts come first, then ACME's, as the
    store ranks them (CertStore._install)."""
    ranked = [*store.settings.certs, *store.acme.values(), *store.settings.pairs()[:1]]
    out, seen = [], set()
    for pair in ranked:
        lp = store.loaded.get(pair)
        if lp is None or pair in seen:
            continue
        seen.add(pair)
        out.append({"cert": Path(pair.cert).read_text(), "key": Path(pair.key).read_text(),
                    "hosts": list(lp.hosts), "default": pair == store.settings.default})
    return out


def write_pushed(folder: Path, pairs: list[dict]) -> tuple[CertPair | None, tuple[CertPair, ...]]:
    """Pairs a control plane sent (``wire_pairs``) as files in ``folder`` (owner-only), each named
    by the digest of its content, so the same certificate sent again is the same file: returns the
    default pair and the others, for ``CertStore.replace``."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    default, certs = None, []
    for p in pairs:
        name = hashlib.sha256((p["cert"] + p["key"]).encode()).hexdigest()[:16]
        files = []
        for suffix, text in (("crt", p["cert"]), ("key", p["key"])):
            path = folder / f"{name}.{suffix}"
            if not path.exists():
                write_private(path, text.encode())
            files.append(str(path))
        pair = CertPair(files[0], files[1], tuple(p.get("hosts") or ()))
        if p.get("default") and default is None:
            default = pair
        else:
            certs.append(pair)
    return default, tuple(certs)


def settings_problems(settings: TlsSettings) -> list[str]:
    """Every pair's problems, with the stack file's field names."""
    out = []
    if settings.default is not None:
        out += pair_problems(settings.default, "gateway.tls.cert")
    for i, pair in enumerate(settings.certs):
        out += pair_problems(pair, f"gateway.tls.certs[{i}].cert")
    return out


class TlsClientConnection(ClientConnection):
    """A client connection accepted on the HTTPS listener: replicas hear ``X-Forwarded-Proto:
    https``, and requests are looked up as ``https`` (never redirected). Everything else,
    keep-alive, pipelining, bodies, upgrades, retries, is the plain connection's, over the
    TLS transport asyncio (or uvloop) wraps around the socket."""

    proto = b"https"


class HstsClientConnection(TlsClientConnection):
    """A TLS client connection that adds Strict-Transport-Security to every relayed response
    (a subclass, so that a gateway without ``hsts`` pays nothing per response)."""

    # set per gateway: b"Strict-Transport-Security: max-age=...\r\n"; the backend exchange adds
    # ClientConnection.relayed_headers to every relayed response head
    relayed_headers = b""


def connection_class(settings: TlsSettings) -> type[TlsClientConnection]:
    """The protocol class of the HTTPS listener for these settings."""
    if not settings.hsts:
        return TlsClientConnection
    return type("HstsClientConnection", (HstsClientConnection,),
                {"relayed_headers": b"Strict-Transport-Security: " + settings.hsts.encode() + b"\r\n"})
