"""Certificates from a real ACME CA: Debian's `pebble` (Let's Encrypt's test CA), with
`pebble-challtestsrv` as its DNS server so that the test host names resolve to 127.0.0.1.

The gateway gets certificates for two hosts that have no certificate file, answering pebble's
HTTP-01 requests on its plain port itself; HTTPS requests for both succeed with pebble's root as
the CA; a renewal (forced by moving the gateway's clock) replaces both with no failed request
under a GET load. And: a CA that cannot be reached is an event and never stops plain HTTP.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.pebble import run_pebble
from support.ports import free_port_range

from selfieless.gateway import Gateway, GatewayConfig
from selfieless.gateway.acme import due, renew_at, retry_in, store_dir
from selfieless.gateway.tls import TlsSettings



def test_renewal_rules():
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert renew_at(t0, t0 + dt.timedelta(days=90)) == t0 + dt.timedelta(days=60)  # 30 days before
    assert renew_at(t0, t0 + dt.timedelta(days=6)) == t0 + dt.timedelta(days=4)  # two thirds of a short life
    have = {"a.test": (t0, t0 + dt.timedelta(days=90)), "b.test": (t0, t0 + dt.timedelta(days=90))}
    now = t0 + dt.timedelta(days=61)
    assert due(["a.test", "c.test", "*.w.test"], {"a.test": have["a.test"]}, t0, {}) == ["c.test"]
    assert due(["a.test", "b.test", "c.test"], have, now, {"c.test": now + dt.timedelta(seconds=5)}) == [
        "a.test", "b.test"]
    assert due(["c.test"], {}, now, {"c.test": now}) == ["c.test"]  # the backoff is over
    assert [retry_in(n) for n in (1, 2, 3, 20)] == [10, 20, 40, 3600]


@pytest.fixture
def pebble(tmp_path):
    with run_pebble(tmp_path) as found:
        yield found


def _served(port: int, host: str, ctx: ssl.SSLContext) -> str | None:
    """The serial of the certificate served for ``host``, verified against ``ctx``; None if none."""
    try:
        with socket.create_connection(("127.0.0.1", port), 10) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
            return s.getpeercert()["serialNumber"]
    except (ssl.SSLError, OSError):
        return None


def _get(port: int, host: str, path: str, ctx: ssl.SSLContext) -> httpx.Response:
    """One HTTPS request for ``host`` on a new connection (a new handshake)."""
    with httpx.Client(verify=ctx, timeout=20) as c:
        return c.get(f"https://127.0.0.1:{port}{path}", headers={"Host": host}, extensions={"sni_hostname": host})


def _wait(pred, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_two_hosts_get_certificates_from_pebble_and_renew_under_load(pebble, loop_thread, backends, tmp_path):
    state = tmp_path / "state"
    settings = TlsSettings(port=0, acme={"directory": pebble["directory"], "email": "ops@a.test",
                                         "ca_bundle": pebble["ca_bundle"], "state_dir": str(state)})
    events = []
    gw = Gateway(GatewayConfig(port=pebble["gw_port"]), routes={"//a.test/": "acts", "//b.test/": "acts"}, tls=settings)
    gw.on_tls_event = lambda kind, host, detail: events.append((kind, host, detail))
    gw.pool("acts").add(backends[0].id, "127.0.0.1", backends[0].port)
    loop_thread.run(gw.start())
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=pebble["ca_bundle"]), timeout=10) as c:
            root = c.get(f"{pebble['mgmt']}/roots/0").text
        ctx = ssl.create_default_context(cadata=root)
        first = {h: _wait(lambda h=h: _served(gw.tls_port, h, ctx), 120, f"a certificate for {h} from pebble\n"
                          + pebble["log"].read_text()[-3000:] + f"\nevents: {events}") for h in ("a.test", "b.test")}
        for h in ("a.test", "b.test"):
            r = _get(gw.tls_port, h, "/api/v1/x", ctx)
            assert r.status_code == 200 and ("x-forwarded-proto", "https") in [tuple(x) for x in r.json()["headers"]]
        assert {(k, h) for k, h, _ in events} == {("tls_cert", "a.test"), ("tls_cert", "b.test")}
        folder = store_dir(state, pebble["directory"])
        for f in (folder / "account.key", folder / "a.test" / "key.pem", folder / "b.test" / "cert.pem"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert (folder / "directory").read_text().strip() == pebble["directory"]

        # Renewal under a GET load on new connections: move the gateway's clock past renewal time.
        failures, done, count = [], threading.Event(), [0]

        def load():
            while not done.is_set():
                for h in ("a.test", "b.test"):
                    try:
                        r = _get(gw.tls_port, h, "/api/v1/y", ctx)
                        assert r.status_code == 200
                        count[0] += 1
                    except Exception as e:  # noqa: BLE001 - every failure is the finding
                        failures.append(repr(e))

        t = threading.Thread(target=load)
        t.start()
        try:
            not_before, not_after = gw.acme.have["a.test"]
            offset = renew_at(not_before, not_after) - dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)

            async def move_clock():
                gw.acme.clock_offset = offset
                gw.acme.wake()

            loop_thread.run(move_clock())
            for h in ("a.test", "b.test"):
                _wait(lambda h=h: _served(gw.tls_port, h, ctx) not in (None, first[h]), 120, f"{h} renewed")

            async def reset_clock():
                gw.acme.clock_offset = dt.timedelta(0)

            loop_thread.run(reset_clock())
            seen = count[0]
            _wait(lambda: count[0] >= seen + 4, 60, "requests after the renewal")
        finally:
            done.set()
            t.join(60)
        assert failures == [] and count[0] > 4
    finally:
        loop_thread.run(gw.stop(grace=1.0))


def test_a_ca_that_cannot_be_reached_never_stops_plain_http(loop_thread, backends, tmp_path):
    dead = free_port_range(1)[0]  # nothing listens there
    settings = TlsSettings(port=0, acme={"directory": f"https://127.0.0.1:{dead}/dir", "state_dir": str(tmp_path)})
    events = []
    gw = Gateway(GatewayConfig(port=0), routes={"//a.test/": "acts", "/api/v1": "acts"}, tls=settings)
    gw.on_tls_event = lambda kind, host, detail: events.append((kind, host, detail))
    gw.pool("acts").add(backends[0].id, "127.0.0.1", backends[0].port)
    loop_thread.run(gw.start())
    try:
        _wait(lambda: events, 60, "the failure reported")
        kind, host, detail = events[0]
        assert (kind, host) == ("tls_problem", "a.test")
        assert "no certificate from" in detail and "next in 10 s" in detail
        r = httpx.get(f"http://127.0.0.1:{gw.port}/api/v1/_health", headers={"Host": "a.test"}, timeout=20)
        assert r.status_code == 200
        r = httpx.get(f"http://127.0.0.1:{gw.port}/x", headers={"Host": "a.test"}, timeout=20)
        assert r.status_code == 301  # redirected, to a listener that answers once a certificate comes
        assert not Path(tmp_path, "acme").exists() or not list(Path(tmp_path, "acme").glob("*/a.test"))
    finally:
        loop_thread.run(gw.stop(grace=1.0))
