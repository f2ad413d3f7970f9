"""HTTPS at the gateway with real sockets, on uvloop and on asyncio's own loop: certificates by
SNI, strict SNI, hot reload under load, HTTP->HTTPS, routing by host, keep-alive, pipelining,
chunked bodies and WebSocket through TLS, and the bad inputs a TLS port meets.

Certificates are made by trustme (a throwaway CA per test module); clients trust that CA only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import ssl
import threading
import time

import httpx
import pytest
import trustme
from gw_support import LoopThread
from support.certs import write_pair

from selfieless.gateway import Gateway, GatewayConfig
from selfieless.gateway.tls import CertError, CertPair, TlsSettings, read_pair, settings_problems


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def tls_loop(request):
    lt = LoopThread()
    if request.param == "asyncio":  # LoopThread picks uvloop: swap in the stdlib loop
        lt.close()
        lt.loop = asyncio.new_event_loop()
        lt.thread = threading.Thread(target=lt.loop.run_forever, daemon=True)
        lt.thread.start()
    yield lt
    lt.close()


@pytest.fixture
def tls_gateway(tls_loop, ca, tmp_path):
    """``tls_gateway(routes, replicas, strict=False, plain=(), **config)`` -> started Gateway
    with a default certificate (default.test) and one each for a.test and b.test."""
    made = []
    default = write_pair(ca, tmp_path, "default", "default.test")
    a = write_pair(ca, tmp_path, "a", "a.test", "www.a.test")
    b = write_pair(ca, tmp_path, "b", "b.test")

    def make(routes=None, replicas=None, strict=False, plain=(), hsts=None, **cfg):
        cfg.setdefault("port", 0)
        settings = TlsSettings(port=0, default=default, certs=(a, b), strict_sni=strict,
                               plain_services=frozenset(plain), reload_interval=0.2, hsts=hsts)
        gw = Gateway(GatewayConfig(**cfg), routes=routes if routes is not None else {"/api/v1": "acts"}, tls=settings)

        async def start():
            for service, bs in (replicas or {}).items():
                for bk in bs:
                    gw.pool(service).add(bk.id, "127.0.0.1", bk.port)
            await gw.start()

        tls_loop.run(start())
        made.append(gw)
        return gw

    make.pairs = {"default": default, "a": a, "b": b}
    yield make
    for gw in made:
        tls_loop.run(gw.stop(grace=1.0))


def client_ctx(ca, **kw):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_socket(ca, port, sni="a.test", timeout=20.0, **ctx_kw):
    ctx = client_ctx(ca, **ctx_kw)
    if sni is None:
        ctx.check_hostname = False
    sock = socket.create_connection(("127.0.0.1", port), timeout)
    return ctx.wrap_socket(sock, server_hostname=sni)


def peer_names(s: ssl.SSLSocket) -> set[str]:
    return {v for k, v in s.getpeercert()["subjectAltName"] if k == "DNS"}


def read_responses(s, n: int) -> list[tuple[int, dict, bytes]]:
    """Read ``n`` HTTP/1.1 responses (Content-Length or chunked) off a socket."""
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"closed after {len(out)} responses: {buf[:200]!r}"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        if "content-length" in headers:
            n_body = int(headers["content-length"])
            while len(buf) < n_body:
                buf += s.recv(65536)
            body, buf = buf[:n_body], buf[n_body:]
        else:
            assert headers.get("transfer-encoding") == "chunked"
            body = b""
            while True:
                while b"\r\n" not in buf:
                    buf += s.recv(65536)
                size_line, rest = buf.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    rest += s.recv(65536)
                body += rest[:size]
                buf = rest[size + 2:]
                if size == 0:
                    break
        out.append((status, headers, body))
    return out


def get(ca, port, host, path, **kw):
    with httpx.Client(verify=client_ctx(ca), timeout=20) as c:
        return c.get(f"https://127.0.0.1:{port}{path}", headers={"Host": host},
                     extensions={"sni_hostname": host}, **kw)


# --- certificates by SNI --------------------------------------------------------------------

def test_sni_picks_the_host_certificate_else_the_default(tls_gateway, ca):
    gw = tls_gateway()
    for sni, name in (("a.test", "a.test"), ("www.a.test", "a.test"), ("b.test", "b.test")):
        with tls_socket(ca, gw.tls_port, sni) as s:
            assert name in peer_names(s)
    with tls_socket(ca, gw.tls_port, "unknown.test", check_hostname=False) as s:
        assert peer_names(s) == {"default.test"}
    with tls_socket(ca, gw.tls_port, None) as s:  # a ClientHello without SNI
        assert peer_names(s) == {"default.test"}


def test_strict_sni_refuses_unknown_and_missing_names(tls_gateway, ca):
    gw = tls_gateway(strict=True)
    for sni in ("unknown.test", None):
        # refused: asyncio's loop sends the unrecognized_name alert, uvloop may only close
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            tls_socket(ca, gw.tls_port, sni, check_hostname=False).close()
    with tls_socket(ca, gw.tls_port, "b.test") as s:
        assert "b.test" in peer_names(s)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_2_and_1_3_only_with_intermediate_ciphers(tls_gateway, ca):
    gw = tls_gateway()
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with tls_socket(ca, gw.tls_port, maximum_version=version) as s:
            assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            if version == ssl.TLSVersion.TLSv1_2:
                assert s.cipher()[0] in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                         "ECDHE-ECDSA-CHACHA20-POLY1305")
    ctx = client_ctx(ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", gw.tls_port), 10) as raw:
        ctx.wrap_socket(raw, server_hostname="a.test")


# --- proxying through TLS -------------------------------------------------------------------

def test_proxy_over_tls_forwards_https_scheme(tls_gateway, ca, backends):
    gw = tls_gateway(replicas={"acts": backends[:1]})
    r = get(ca, gw.tls_port, "a.test", "/api/v1/x?q=1")
    assert r.status_code == 200
    seen = dict((k.lower(), v) for k, v in r.json()["headers"])
    assert seen["x-forwarded-proto"] == "https" and seen["host"] == "a.test"
    # spoofed by the client: replaced, the gateway states the scheme
    with httpx.Client(verify=client_ctx(ca), timeout=20) as c:
        r = c.get(f"https://127.0.0.1:{gw.tls_port}/api/v1/x", headers={"Host": "a.test", "X-Forwarded-Proto": "http"},
                  extensions={"sni_hostname": "a.test"})
    assert [v for k, v in r.json()["headers"] if k == "x-forwarded-proto"] == ["https"]


def test_hsts_on_https_responses_only(tls_gateway, ca, backends):
    gw = tls_gateway(routes={"/api/v1": "acts"}, replicas={"acts": backends[:1]}, plain=("acts",),
                     hsts="max-age=600")
    r = get(ca, gw.tls_port, "a.test", "/api/v1/x")
    assert r.status_code == 200 and r.headers["strict-transport-security"] == "max-age=600"
    assert r.json()["replica"] == backends[0].id
    r = httpx.get(f"http://127.0.0.1:{gw.port}/api/v1/x", headers={"Host": "a.test"}, timeout=20)
    assert r.status_code == 200 and "strict-transport-security" not in r.headers


def test_keepalive_pipelining_and_chunked_through_tls(tls_gateway, ca, backends):
    gw = tls_gateway(replicas={"acts": backends})
    with tls_socket(ca, gw.tls_port) as s:
        # keep-alive: several requests, one after another, on one TLS connection
        for i in range(3):
            s.sendall(f"GET /api/v1/k{i} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
            [(status, _, body)] = read_responses(s, 1)
            assert status == 200 and json.loads(body)["path"] == f"/api/v1/k{i}"
        # pipelining: three requests in one write, answered in order
        s.sendall(b"".join(f"GET /api/v1/p{i} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode() for i in range(3)))
        assert [json.loads(b)["path"] for _, _, b in read_responses(s, 3)] == [f"/api/v1/p{i}" for i in range(3)]
        # a chunked request body, and a chunked response
        pieces = [os.urandom(n) for n in (10, 70_000, 3)]
        body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        s.sendall(b"POST /api/v1/up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        [(status, _, got)] = read_responses(s, 1)
        assert status == 200 and json.loads(got)["body_len"] == sum(map(len, pieces))
        s.sendall(b"GET /api/v1/stream?n=300000&chunks=7 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        [(status, headers, got)] = read_responses(s, 1)
        assert status == 200 and headers["transfer-encoding"] == "chunked" and got == b"x" * 300000


def test_retry_and_ejection_through_tls_as_on_plain_http(tls_gateway, ca, backends, tls_loop):
    """Nothing listens on the first replica: ejected at once, and the POST (nothing of it sent)
    goes to the next replica, once, as on plain HTTP."""
    from support.ports import free_port

    ejected = []
    gw = tls_gateway(replicas={"acts": backends[:1]})
    gw.on_eject = lambda *a: ejected.append(a)

    async def add_dead_first():
        pool = gw.pool("acts")
        pool.remove(backends[0].id)
        pool.add("dead", "127.0.0.1", free_port())
        pool.add(backends[0].id, "127.0.0.1", backends[0].port)

    tls_loop.run(add_dead_first())
    with httpx.Client(verify=client_ctx(ca), timeout=20) as c:
        r = c.post(f"https://127.0.0.1:{gw.tls_port}/api/v1/things", content=b'{"a": 1}',
                   headers={"Host": "a.test"}, extensions={"sni_hostname": "a.test"})
    assert r.status_code == 200 and r.json()["replica"] == backends[0].id and r.json()["body_len"] == 8
    assert [a[:2] for a in ejected] == [("acts", "dead")] and gw.stats("acts").retries == 1


def test_websocket_upgrade_through_tls(tls_gateway, ca, backends):
    from websockets.sync.client import connect

    gw = tls_gateway(replicas={"acts": backends[:1]})
    with connect(f"wss://127.0.0.1:{gw.tls_port}/api/v1/ws", ssl=client_ctx(ca), server_hostname="a.test",
                 open_timeout=20) as ws:
        assert ws.recv(timeout=20) == f"hello from {backends[0].id}"
        ws.send("over tls")
        assert ws.recv(timeout=20) == "over tls"
        ws.send(b"\x00" * 100_000)
        assert ws.recv(timeout=20) == b"\x00" * 100_000


# --- HTTP -> HTTPS, ACME challenges, routing by host ---------------------------------------

def test_plain_http_redirects_except_health_challenges_and_plain_services(tls_gateway, backends):
    gw = tls_gateway(routes={"/api/v1": "acts", "/legacy": "legacy"},
                     replicas={"acts": backends[:1], "legacy": backends[1:2]}, plain=("legacy",))
    base = f"http://127.0.0.1:{gw.port}"
    with httpx.Client(timeout=20) as c:
        r = c.get(f"{base}/api/v1/x?q=1", headers={"Host": "a.test:8080"})
        assert r.status_code == 301
        assert r.headers["location"] == f"https://a.test:{gw.tls_port}/api/v1/x?q=1"
        r = c.post(f"{base}/api/v1/x", headers={"Host": "a.test"}, content=b"body")
        assert r.status_code == 301 and r.headers["location"] == f"https://a.test:{gw.tls_port}/api/v1/x"
        r = c.get(f"{base}/api/v1/_health", headers={"Host": "a.test"})
        assert r.status_code == 200 and r.json()["replica"] == backends[0].id
        r = c.get(f"{base}/legacy/x", headers={"Host": "a.test"})
        assert r.status_code == 200 and r.json()["replica"] == backends[1].id
        assert ("x-forwarded-proto", "http") in [tuple(h) for h in r.json()["headers"]]
        # ACME HTTP-01: answered by the gateway itself, whatever the routes
        r = c.get(f"{base}/.well-known/acme-challenge/tok1", headers={"Host": "a.test"})
        assert r.status_code == 404 and r.json() == {"error": "no such ACME challenge"}
        gw.challenges[b"tok1"] = b"tok1.thumbprint"
        r = c.get(f"{base}/.well-known/acme-challenge/tok1", headers={"Host": "a.test"})
        assert r.status_code == 200 and r.content == b"tok1.thumbprint"


def test_routing_by_host_then_path(tls_gateway, ca, backends):
    gw = tls_gateway(routes={"//a.test/": "site", "//b.test/api/v1": "b-api", "/api/v1": "acts"},
                     replicas={"site": backends[:1], "b-api": backends[1:2], "acts": backends[2:]})

    def who(host, path):
        r = get(ca, gw.tls_port, host, path)
        return r.status_code, (r.json().get("replica") if "replica" in r.json() else r.json())

    assert who("a.test", "/") == (200, backends[0].id)  # the site owns its `/`
    assert who("a.test", "/api/v1/x") == (200, backends[0].id)
    assert who("b.test", "/api/v1/x") == (200, backends[1].id)
    assert who("b.test", "/other") == (404, {"error": "no route for this path"})
    status, page = who("b.test", "/")  # no route of b.test claims `/`: the public status page
    assert status == 200 and page["gateway"] == "selfieless"
    assert who("default.test", "/api/v1/x") == (200, backends[2].id)  # services without hosts: any host


# --- hot reload -----------------------------------------------------------------------------

def test_replaced_files_swap_in_without_dropping_connections_under_load(tls_gateway, ca, tmp_path, backends):
    gw = tls_gateway(replicas={"acts": backends})
    pair = tls_gateway.pairs["a"]
    with tls_socket(ca, gw.tls_port) as s:
        old_serial = s.getpeercert()["serialNumber"]
    failures, done = [], threading.Event()
    counts = [0, 0]

    def load(i):
        ctx = client_ctx(ca)
        with httpx.Client(verify=ctx, timeout=20) as keep:
            while not done.is_set():
                try:
                    r = keep.get(f"https://127.0.0.1:{gw.tls_port}/api/v1/x", headers={"Host": "a.test"},
                                 extensions={"sni_hostname": "a.test"})
                    assert r.status_code == 200
                    with httpx.Client(verify=ctx, timeout=20) as fresh:  # a new handshake each time
                        assert fresh.get(f"https://127.0.0.1:{gw.tls_port}/api/v1/y", headers={"Host": "a.test"},
                                         extensions={"sni_hostname": "a.test"}).status_code == 200
                    counts[i] += 1
                except Exception as e:  # noqa: BLE001 - every failure is the finding
                    failures.append(repr(e))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    held = tls_socket(ca, gw.tls_port)  # open before the swap, used after it
    try:
        time.sleep(0.5)
        (tmp_path / "next").mkdir()
        new = write_pair(ca, tmp_path / "next", "a", "a.test", "www.a.test")
        # replace the files the way a deploy tool would: write aside, rename over
        for src, dst in ((new.key, pair.key), (new.cert, pair.cert)):
            os.replace(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with tls_socket(ca, gw.tls_port) as s:
                if s.getpeercert()["serialNumber"] != old_serial:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the replaced certificate was never served")
        before = sum(counts)
        deadline = time.monotonic() + 30
        while sum(counts) < before + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        held.sendall(b"GET /api/v1/held HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert read_responses(held, 1)[0][0] == 200
    finally:
        done.set()
        for t in threads:
            t.join(30)
        held.close()
    assert failures == [] and sum(counts) > 5
    assert gw.certs.reloads >= 1


def test_a_broken_replacement_keeps_the_previous_certificate(tls_gateway, ca, tmp_path):
    problems = []
    gw = tls_gateway()
    gw.on_tls_event = lambda kind, host, detail: problems.append(detail) if kind == "tls_problem" else None
    pair = tls_gateway.pairs["b"]
    with tls_socket(ca, gw.tls_port, "b.test") as s:
        serial = s.getpeercert()["serialNumber"]
    other = write_pair(ca, tmp_path, "other", "b.test")
    os.replace(other.key, pair.key)  # a key that does not match the certificate on disk
    assert any("does not match" in p for p in gw.reload_tls())
    deadline = time.monotonic() + 20
    while not problems and time.monotonic() < deadline:
        time.sleep(0.05)
    assert problems and "does not match" in problems[0]
    with tls_socket(ca, gw.tls_port, "b.test") as s:
        assert s.getpeercert()["serialNumber"] == serial  # still served, still valid
    os.replace(other.cert, pair.cert)  # the matching certificate arrives: swapped in
    assert gw.reload_tls() == []
    with tls_socket(ca, gw.tls_port, "b.test") as s:
        assert s.getpeercert()["serialNumber"] != serial


# --- bad input ------------------------------------------------------------------------------

def _still_serves(ca, gw):
    with tls_socket(ca, gw.tls_port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert read_responses(s, 1)[0][0] == 200


def _closed_within(sock, seconds) -> bytes:
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def _u16(n: int) -> bytes:
    """A two-byte length field; a length that does not fit wraps (an SNI too long to encode)."""
    return (n % 65536).to_bytes(2, "big")


def _client_hello(sni: bytes) -> bytes:
    """A TLS 1.2 ClientHello naming ``sni``, cut into records of 16 KiB."""
    sni_list = b"\x00" + _u16(len(sni)) + sni  # host_name entry
    ext = b"\x00\x00" + _u16(len(sni_list) + 2) + _u16(len(sni_list)) + sni_list  # server_name extension
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x00\x02\xc0\x2b" + b"\x01\x00"
            + _u16(len(ext)) + ext)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"".join(b"\x16\x03\x01" + len(hs[i:i + 16384]).to_bytes(2, "big") + hs[i:i + 16384]
                    for i in range(0, len(hs), 16384))


def test_bad_input_on_the_tls_port_is_refused_and_harms_nobody(tls_gateway, ca):
    gw = tls_gateway(header_timeout=1.0)
    port = gw.tls_port
    bystander = tls_socket(ca, port)  # an open connection that must not notice any of it
    # plain HTTP on the TLS port: refused, the connection closed
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert b"200 OK" not in _closed_within(s, 20)
    # a truncated handshake: half a ClientHello, then the client goes
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(_client_hello(b"a.test")[:40])
    # an SNI of 70,000 bytes (it cannot even be encoded): refused
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        try:
            s.sendall(_client_hello(b"a" * 70_000))
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = _closed_within(s, 20)
        assert got == b"" or got[:1] == b"\x15"  # nothing, or a TLS alert record
    # a client that stalls mid-handshake: dropped by the header timeout, not kept for ever
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(_client_hello(b"a.test")[:40])
        started = time.monotonic()
        _closed_within(s, 30)
        assert time.monotonic() - started < 25
    _still_serves(ca, gw)
    bystander.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert read_responses(bystander, 1)[0][0] == 200
    bystander.close()


def test_certificate_files_that_cannot_be_served(ca, tmp_path):
    good = write_pair(ca, tmp_path, "good", "a.test")
    other = write_pair(ca, tmp_path, "other", "a.test")
    old = write_pair(ca, tmp_path, "old", "a.test", not_before=dt.datetime(2020, 1, 1),
                        not_after=dt.datetime(2021, 1, 1))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cases = [
        (CertPair(str(tmp_path / "missing.crt"), good.key), "gateway.tls.cert: cannot read"),
        (CertPair(str(tmp_path), good.key), "gateway.tls.cert: cannot read"),  # unreadable: a directory
        (CertPair(str(tmp_path / "junk.pem"), good.key), "holds no PEM certificate"),
        (CertPair(good.cert, other.key), "gateway.tls.key: " + other.key + ": the key does not match"),
        (CertPair(good.cert, str(tmp_path / "gone.key")), "gateway.tls.key: cannot read"),
        (old, "expired on 2021-01-01"),
    ]
    for pair, message in cases:
        with pytest.raises(CertError, match=message.replace(".", r"\.")):
            read_pair(pair, field_name="gateway.tls.cert")
    assert read_pair(good).hosts == ("a.test",)
    assert settings_problems(TlsSettings(default=good, certs=(CertPair(good.cert, other.key),))) == [
        f"gateway.tls.certs[0].key: {other.key}: the key does not match the certificate"]


def test_an_expired_certificate_still_served_is_reported_once(tls_gateway, tls_loop):
    gw = tls_gateway()
    problems = []
    gw.on_tls_event = lambda kind, host, detail: problems.append((kind, detail))
    later = dt.datetime(3001, 1, 1, tzinfo=dt.timezone.utc)  # trustme certificates end in 3000
    found = tls_loop.call(gw.certs.check_expiry, later)
    assert len(found) == 3 and all("expired on" in m and "still served" in m for m in found)
    assert tls_loop.call(gw.certs.check_expiry, later) == []  # once
    assert [k for k, _ in problems] == ["tls_problem"] * 3
    assert tls_loop.call(gw.certs.check_expiry) == []  # today: none has


def test_a_busy_https_port_is_named(tls_loop, ca, tmp_path):
    good = write_pair(ca, tmp_path, "good", "a.test")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        gw = Gateway(GatewayConfig(port=0), tls=TlsSettings(port=port, default=good))
        with pytest.raises(OSError, match=f"the HTTPS port {port} .*gateway.tls.port"):
            tls_loop.run(gw.start())
    assert gw._server is None


def test_a_gateway_with_a_bad_certificate_does_not_start(tls_loop, ca, tmp_path):
    good = write_pair(ca, tmp_path, "good", "a.test")
    other = write_pair(ca, tmp_path, "other", "a.test")
    gw = Gateway(GatewayConfig(port=0), tls=TlsSettings(port=0, default=CertPair(good.cert, other.key)))
    with pytest.raises(CertError, match="does not match"):
        tls_loop.run(gw.start())
    assert gw._server is None
