"""Longest path-prefix route table (pure, no I/O).

A table is built once from a ``{prefix: service}`` mapping and never mutated; the gateway swaps
the whole object on ``set_routes``, so a request sees either the old or the new table, never a mix.
Matching is segment-aware: ``/api/v1/users`` matches ``/api/v1/users`` and ``/api/v1/users/x`` but
not ``/api/v1/usersX``. Paths are bytes because that is what the HTTP parser hands us; decoding
them per request would only cost time.
"""

from __future__ import annotations

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


class RouteTable:
    """Immutable prefix -> service table; ``match`` returns the service of the longest prefix."""

    __slots__ = ("routes", "_entries", "_cache")

    def __init__(self, routes: Mapping[str, str] | None = None) -> None:
        norm: dict[str, str] = {}
        for prefix, service in (routes or {}).items():
            if not service:
                raise ValueError(f"route {prefix!r} has no service")
            norm[normalise_prefix(prefix)] = service
        self.routes: dict[str, str] = norm
        # Longest first, so the first hit is the longest match.
        self._entries: tuple[tuple[bytes, str], ...] = tuple(
            sorted(((p.encode(), s) for p, s in norm.items()), key=lambda e: -len(e[0]))
        )
        # Paths repeat a lot (same endpoints over and over); a small memo avoids rescanning.
        self._cache: dict[bytes, str | None] = {}

    def match(self, path: bytes) -> str | None:
        """Service for ``path`` (bytes, without query string), or None."""
        cache = self._cache
        try:
            return cache[path]
        except KeyError:
            pass
        found = None
        for prefix, service in self._entries:
            if path_under(path, prefix):
                found = service
                break
        if len(cache) < 4096:  # bounded: arbitrary client paths must not grow memory
            cache[path] = found
        return found

    def services(self) -> set[str]:
        return set(self.routes.values())

    def __repr__(self) -> str:
        return f"RouteTable({self.routes!r})"
