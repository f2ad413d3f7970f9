"""Route table: host, then longest path prefix (pure, no I/O).

A table is built once from a ``{prefix: service}`` mapping and never mutated; the gateway swaps
the whole object on ``set_routes``, so a request sees either the old or the new table, never a mix.
Matching is segment-aware: ``/api/v1/users`` matches ``/api/v1/users`` and ``/api/v1/users/x`` but
not ``/api/v1/usersX``. Paths are bytes because that is what the HTTP parser hands us; decoding
them per request would only cost time.

A key may name a host in the network-path form ``//example.org/prefix`` (RFC 3986 4.2): that
route serves requests for that host only. A request is looked up among its host's routes first
(longest prefix), and only when none matches among the routes without a host, which serve every
host. Keeping hosts inside the one ``{key: service}`` mapping means the control API, the stack
diff and the process boundary carry them without a second table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SLASH = ord("/")


def normalise_prefix(prefix: str) -> str:
    """Canonical form of a route prefix: leading slash, no trailing slash (except ``/``)."""
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    while len(prefix) > 1 and prefix.endswith("/"):
        prefix = prefix[:-1]
    return prefix


def path_under(path: bytes, prefix: bytes) -> bool:
    """True if ``path`` is ``prefix`` or below it, on a segment boundary."""
    if not path.startswith(prefix):
        return False
    n = len(prefix)
    return len(path) == n or path[n] == _SLASH or prefix[-1] == _SLASH


_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOST_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*|\*(\.{_LABEL})+")


def valid_host(host: str) -> bool:
    """A DNS name as a route or certificate may name it (lowercase; ``*.example.org`` allowed)."""
    return len(host) <= 253 and _HOST_RE.fullmatch(host) is not None


def split_key(key: str) -> tuple[str | None, str]:
    """``//Example.org/api/`` -> ("example.org", "/api"); ``/api`` -> (None, "/api")."""
    if not key.startswith("//"):
        return None, normalise_prefix(key)
    host, _, path = key[2:].partition("/")
    host = host.lower().rstrip(".")
    if not valid_host(host):
        raise ValueError(f"route {key!r}: {host!r} is not a host name")
    return host, normalise_prefix(path)  # adds the leading slash back


def host_key(host: str, prefix: str) -> str:
    """The route key of ``prefix`` served for ``host`` only."""
    return f"//{host}{normalise_prefix(prefix)}"


def _longest_first(pairs) -> tuple[tuple[bytes, str], ...]:
    return tuple(sorted(((p.encode(), s) for p, s in pairs), key=lambda e: -len(e[0])))


def _scan(entries: tuple[tuple[bytes, str], ...], path: bytes) -> str | None:
    for prefix, service in entries:
        if path_under(path, prefix):
            return service
    return None


class RouteTable:
    """Immutable key -> service table; ``match`` returns the service of the longest prefix
    among the routes for any host, ``lookup`` looks at the request's host first."""

    __slots__ = ("routes", "_entries", "_cache", "_hosts", "by_host")

    def __init__(self, routes: Mapping[str, str] | None = None) -> None:
        norm: dict[str, str] = {}
        anyhost: list[tuple[str, str]] = []
        hosts: dict[str, list[tuple[str, str]]] = {}
        for key, service in (routes or {}).items():
            if not service:
                raise ValueError(f"route {key!r} has no service")
            host, prefix = split_key(key)
            if host is None:
                norm[prefix] = service
                anyhost.append((prefix, service))
            else:
                norm[host_key(host, prefix)] = service
                hosts.setdefault(host, []).append((prefix, service))
        self.routes: dict[str, str] = norm
        # Longest first, so the first hit is the longest match.
        self._entries: tuple[tuple[bytes, str], ...] = _longest_first(anyhost)
        self._hosts: dict[bytes, tuple[tuple[bytes, str], ...]] = {
            h.encode(): _longest_first(pairs) for h, pairs in hosts.items()}
        # Whether any route names a host: only then does a request's Host header matter.
        self.by_host = bool(self._hosts)
        # Paths repeat a lot (same endpoints over and over); a small memo avoids rescanning.
        self._cache: dict[bytes, str | None] = {}

    def match(self, path: bytes) -> str | None:
        """Service for ``path`` (bytes, without query string), or None."""
        cache = self._cache
        try:
            return cache[path]
        except KeyError:
            pass
        found = _scan(self._entries, path)
        if len(cache) < 4096:  # bounded: arbitrary client paths must not grow memory
            cache[path] = found
        return found

    def lookup(self, host: bytes | None, path: bytes) -> tuple[str | None, bool]:
        """(service, whether a route of ``host`` itself matched) for a request; ``host`` is
        normalised (lowercase, no port, no trailing dot). A ``*.example.org`` route serves
        one label below example.org when no exact host route matches."""
        if host is not None and self._hosts:
            found = self._hosts.get(host)
            if found is None:
                dot = host.find(b".")
                found = self._hosts.get(b"*" + host[dot:]) if dot > 0 else None
            if found is not None:
                service = _scan(found, path)
                if service is not None:
                    return service, True
        return self.match(path), False

    def hosts(self) -> list[str]:
        """The host names routes name (``*.example.org`` included)."""
        return sorted(h.decode() for h in self._hosts)

    def services(self) -> set[str]:
        return set(self.routes.values())

    def __repr__(self) -> str:
        return f"RouteTable({self.routes!r})"
