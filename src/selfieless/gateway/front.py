"""The front door's decisions when the gateway routes by host or terminates TLS (pure, no I/O).

What a request is, given its scheme (the listener it came in on), its Host and its path:
proxied to a service, redirected from ``http://`` to ``https://``, an ACME HTTP-01 challenge
the gateway answers itself, the public status page, or "no route". :func:`decide` is the one
decision; the gateway caches its answers per (scheme, host, path) like the path-only lookups.

An :class:`Answer` is a response the gateway writes itself; ``local(target)`` turns it into the
``(status, payload, extra header lines)`` the client connection writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACME_PREFIX = b"/.well-known/acme-challenge/"
HTTP = b"http"
HTTPS = b"https"

# What decide() answers besides a service name.
PROXY = "proxy"
REDIRECT = "redirect"
CHALLENGE = "challenge"
STATUS_PAGE = "status"
NO_ROUTE = "no_route"

_HOST = re.compile(rb"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_IPV6 = re.compile(rb"\[[0-9a-f:.]+\]")


def normalise_host(raw: bytes | None) -> bytes | None:
    """A Host header value as routes name hosts: lowercase, without port or trailing dot.
    None when absent or not a host name (so nothing client-made reaches a Location header)."""
    if not raw:
        return None
    host = raw.strip().lower()
    if host[:1] == b"[":  # an IPv6 literal, [::1]:8443
        end = host.find(b"]") + 1
        rest = host[end:]
        if end == 0 or (rest and not (rest[:1] == b":" and rest[1:].isdigit())):
            return None
        return host[:end] if _IPV6.fullmatch(host[:end]) else None
    colon = host.rfind(b":")
    if colon >= 0:
        if not host[colon + 1:].isdigit():
            return None
        host = host[:colon]
    if host.endswith(b"."):
        host = host[:-1]
    if len(host) > 253 or _HOST.fullmatch(host) is None:
        return None
    return host


def host_of(headers: list) -> bytes | None:
    """The request's host from its (name, value) header list; the first Host header counts."""
    for name, value in headers:
        if len(name) == 4 and name.lower() == b"host":
            return normalise_host(value)
    return None


_IPV4 = re.compile(rb"[0-9]+(\.[0-9]+){3}")


def is_ip(host: bytes) -> bool:
    """An address literal, not a name: no certificate names it, and replicas reach the gateway
    by one (``{gateway_url}``), so such requests are not redirected to HTTPS."""
    return host[:1] == b"[" or _IPV4.fullmatch(host) is not None


def is_health(path: bytes) -> bool:
    """Health-check paths (``.../_health`` and below) stay reachable on plain HTTP: probes and
    load balancers in front of the gateway rarely do TLS."""
    return path.endswith(b"/_health") or b"/_health/" in path


@dataclass(frozen=True)
class Route:
    """What the route table said about a request: the service (or None), and whether a route of
    the request's own host matched (then ``/`` belongs to that site, not to the status page)."""

    service: str | None
    host_specific: bool = False


def decide(scheme: bytes, host: bytes | None, path: bytes, route: Route, tls_on: bool,
           plain_services: frozenset[str] | set[str]) -> str:
    """What happens to a request (one of the constants above; PROXY means to ``route.service``).

    - ``http`` while TLS is on: an ACME challenge is answered here whatever the routes say; a
      health path, or a service that asked for plain HTTP (``redirect_https: false``), is served
      as usual; everything else is redirected to ``https://`` on the same host. A request without
      a usable Host, or addressed to an IP address (certificates name hosts; replicas calling
      ``{gateway_url}`` do this), cannot be redirected usefully and is served as on plain HTTP.
    - ``/`` is the public status page unless a route of the request's host claims it.
    - otherwise the route's service, or no route.
    """
    if scheme == HTTP and tls_on:
        if path.startswith(ACME_PREFIX):
            return CHALLENGE
        if host is not None and not is_ip(host) and not is_health(path) \
                and (route.service is None or route.service not in plain_services):
            return REDIRECT
    if path == b"/" and not route.host_specific:
        return STATUS_PAGE
    if route.service is None:
        return NO_ROUTE
    return PROXY


def redirect_location(host: bytes, https_port: int, target: bytes) -> bytes:
    """``https://host[:port]/target``: the port only when it is not 443."""
    port = b"" if https_port == 443 else b":%d" % https_port
    return b"https://" + host + port + target


class Answer:
    """A response the gateway gives itself; ``local(target)`` -> (status, payload, header lines).

    ``payload`` None is the status page (rendered live), a dict is JSON, bytes are sent as is
    (text/plain, for ACME key authorizations). ``location`` is a redirect's base: the request
    target is appended, so the query string survives the redirect.
    """

    __slots__ = ("status", "payload", "location")

    def __init__(self, status: int, payload=None, location: bytes | None = None) -> None:
        self.status = status
        self.payload = payload
        self.location = location

    def local(self, target: bytes) -> tuple[int, object, bytes]:
        if self.location is None:
            return self.status, self.payload, b""
        url = self.location + target
        return self.status, {"redirect": url.decode("latin-1")}, b"Location: " + url + b"\r\n"

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.payload!r}, {self.location!r})"


STATUS = Answer(200, None)
NOT_FOUND = Answer(404, {"error": "no route for this path"})
NO_CHALLENGE = Answer(404, {"error": "no such ACME challenge"})


def redirect(host: bytes, https_port: int) -> Answer:
    """301 to the same host over HTTPS (the target is added per request)."""
    return Answer(301, None, redirect_location(host, https_port, b""))
