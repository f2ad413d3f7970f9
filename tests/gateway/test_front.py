"""Table tests of the front door's pure decisions: host normalisation, routing by host then path,
HTTP->HTTPS redirects and ACME challenges (front.py), SNI choice (tls.choose)."""

from __future__ import annotations

import pytest

from selfieless.gateway import front
from selfieless.gateway.front import (
    CHALLENGE, NO_ROUTE, PROXY, REDIRECT, STATUS_PAGE, Route, decide, host_of, normalise_host,
)
from selfieless.gateway.responses import json_response
from selfieless.gateway.routing import RouteTable, split_key
from selfieless.gateway.tls import choose


@pytest.mark.parametrize("raw, want", [
    (b"Example.ORG", b"example.org"),
    (b"example.org:8443", b"example.org"),
    (b"example.org.", b"example.org"),
    (b" a-b.example.org ", b"a-b.example.org"),
    (b"[::1]:8443", b"[::1]"),
    (b"127.0.0.1:80", b"127.0.0.1"),
    (b"", None),
    (None, None),
    (b"evil.org\r\nX: y", None),  # nothing client-made may reach a Location header
    (b"evil.org/path", None),
    (b"example.org:port", None),
    (b"-bad.org", None),
    (b"a" * 254, None),
    (b"[::1", None),
    (b"[::1]x", None),
    (b"[::1]:", None),
    (b"[::1]:443", b"[::1]"),
    (b"[zz]", None),
    (b"example.org:", None),
    (b"example.org:8a", None),
    (b"a" * 253, b"a" * 253),  # the longest name DNS allows
    (b"a" * 252 + b".", b"a" * 252),
])
def test_normalise_host(raw, want):
    assert normalise_host(raw) == want


def test_host_of_takes_the_first_host_header_any_case():
    assert host_of([(b"Accept", b"*/*"), (b"HOST", b"A.test:1"), (b"Host", b"b.test")]) == b"a.test"
    assert host_of([(b"From", b"x.test"), (b"Hosts", b"y.test"), (b"host", b"c.test")]) == b"c.test"
    assert host_of([(b"Accept", b"*/*")]) is None


ROUTES = RouteTable({
    "//a.test/": "site-a", "//a.test/api": "api-a", "//www.a.test/": "site-a",
    "//*.wild.test/": "wild", "/api/v1": "acts", "/api/v1/users": "users",
})


@pytest.mark.parametrize("host, path, want", [
    (b"a.test", b"/", ("site-a", True)),
    (b"a.test", b"/api/v1/users", ("api-a", True)),  # the host first: a.test owns its paths
    (b"a.test", b"/apix", ("site-a", True)),  # segment-aware within a host
    (b"www.a.test", b"/x", ("site-a", True)),
    (b"b.test", b"/api/v1/users/7", ("users", False)),  # no route of b.test: routes for any host
    (b"b.test", b"/", (None, False)),
    (None, b"/api/v1/x", ("acts", False)),
    (b"x.wild.test", b"/", ("wild", True)),
    (b"wild.test", b"/", (None, False)),  # *.wild.test is one label below, not the name itself
    (b"y.x.wild.test", b"/", (None, False)),
])
def test_lookup_host_then_longest_prefix(host, path, want):
    assert ROUTES.lookup(host, path) == want


def test_valid_host_names():
    from selfieless.gateway.routing import valid_host

    assert valid_host("a" * 253) and not valid_host("a" * 254)
    assert valid_host("*.example.org") and valid_host("x-1.example.org")
    assert not valid_host("*") and not valid_host("a.*.org") and not valid_host("-a.org") and not valid_host("A.org")
    assert ROUTES.hosts() == ["*.wild.test", "a.test", "www.a.test"]
    assert RouteTable({"/x": "s"}).hosts() == []


def test_route_keys():
    assert split_key("//Example.ORG./api/") == ("example.org", "/api")
    assert split_key("//example.org") == ("example.org", "/")
    assert split_key("api/") == (None, "/api")
    with pytest.raises(ValueError, match="not a host name"):
        RouteTable({"//bad host/": "x"})
    t = RouteTable({"//A.test/x/": "s", "/y": "t"})
    assert t.routes == {"//a.test/x": "s", "/y": "t"} and t.by_host
    assert not RouteTable({"/y": "t"}).by_host


@pytest.mark.parametrize("scheme, host, path, route, tls, want", [
    # TLS on, plain HTTP: redirected unless a challenge, a health path, or a plain service
    (b"http", b"a.test", b"/api/v1/x", Route("acts"), True, REDIRECT),
    (b"http", b"a.test", b"/", Route(None), True, REDIRECT),
    (b"http", b"a.test", b"/nothing", Route(None), True, REDIRECT),
    (b"http", b"a.test", b"/.well-known/acme-challenge/tok", Route("acts"), True, CHALLENGE),
    (b"http", None, b"/.well-known/acme-challenge/tok", Route(None), True, CHALLENGE),
    (b"http", b"a.test", b"/api/v1/_health", Route("acts"), True, PROXY),
    (b"http", b"a.test", b"/api/v1/_health/deep", Route("acts"), True, PROXY),
    (b"http", b"a.test", b"/api/v1/_healthy", Route("acts"), True, REDIRECT),
    (b"http", b"a.test", b"/legacy/x", Route("legacy"), True, PROXY),  # redirect_https: false
    (b"http", None, b"/api/v1/x", Route("acts"), True, PROXY),  # no Host: nowhere to redirect to
    (b"http", b"127.0.0.1", b"/api/v1/x", Route("acts"), True, PROXY),  # an address: no certificate names it
    (b"http", b"[::1]", b"/api/v1/x", Route("acts"), True, PROXY),
    (b"http", b"1.2.3.4.example", b"/api/v1/x", Route("acts"), True, REDIRECT),
    # over HTTPS, or TLS off: served
    (b"https", b"a.test", b"/api/v1/x", Route("acts"), True, PROXY),
    (b"https", b"a.test", b"/.well-known/acme-challenge/tok", Route(None), True, NO_ROUTE),
    (b"http", b"a.test", b"/.well-known/acme-challenge/tok", Route(None), False, NO_ROUTE),
    (b"http", b"a.test", b"/api/v1/x", Route("acts"), False, PROXY),
    # `/`: the status page, unless the host's own route claims it
    (b"https", b"a.test", b"/", Route("acts"), True, STATUS_PAGE),
    (b"https", b"a.test", b"/", Route("site", True), True, PROXY),
    (b"http", b"a.test", b"/", Route(None), False, STATUS_PAGE),
    (b"https", b"a.test", b"/x", Route(None), True, NO_ROUTE),
])
def test_decide(scheme, host, path, route, tls, want):
    assert decide(scheme, host, path, route, tls, frozenset({"legacy"})) == want


def test_redirect_answer_keeps_port_and_query():
    status, payload, headers = front.redirect(b"a.test", 8443).local(b"/p?q=1")
    assert (status, payload, headers) == (301, {"redirect": "https://a.test:8443/p?q=1"},
                                          b"Location: https://a.test:8443/p?q=1\r\n")
    assert front.redirect(b"a.test", 443).local(b"/")[2] == b"Location: https://a.test/\r\n"
    raw = json_response(*front.redirect(b"a.test", 443).local(b"/")[:2], False, False, b"Location: x\r\n")
    assert raw.startswith(b"HTTP/1.1 301 Moved Permanently\r\n") and b"\r\nLocation: x\r\n\r\n{" in raw


def test_answers_without_a_location_are_as_given():
    assert front.STATUS.local(b"/x?y") == (200, None, b"")
    assert front.NOT_FOUND.local(b"/x") == (404, {"error": "no route for this path"}, b"")
    assert front.Answer(200, b"auth").local(b"/t") == (200, b"auth", b"")
    assert "Answer(301" in repr(front.redirect(b"a.test", 443))


def test_challenge_answer_is_the_exact_bytes():
    raw = json_response(200, b"tok.thumb", True, False)
    assert raw.endswith(b"\r\n\r\ntok.thumb") and b"Content-Type: text/plain\r\n" in raw


@pytest.mark.parametrize("name, strict, want", [
    ("a.test", False, "A"),
    ("A.TEST.", False, "A"),
    ("x.wild.test", False, "W"),
    ("other.test", False, "D"),
    (None, False, "D"),
    ("other.test", True, None),
    (None, True, None),
    ("a.test", True, "A"),
])
def test_choose_certificate_by_sni(name, strict, want):
    assert choose(name, {"a.test": "A", "*.wild.test": "W"}, "D", strict) == want
