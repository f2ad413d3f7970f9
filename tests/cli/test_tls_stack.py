"""The stack file's `gateway.tls` and services' `hosts` / `redirect_https`: what they become for the
gateway, and `validate` naming the wrong field (certificate files included); `up --tls-cert`."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import trustme
from typer.testing import CliRunner

from selfieless.cli.main import app
from selfieless.cli.up import UpError, UpOptions, prepare_stack
from selfieless.orchestrator.stack import StackError, parse_stack
from support.certs import write_pair

runner = CliRunner()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def pair(ca, tmp_path, name, *hosts, **kw):
    p = write_pair(ca, tmp_path, name, *hosts, **kw)
    return p.cert, p.key


def stack(tls=None, **site):
    return {
        "name": "t", "driver": "process",
        "gateway": {"host": "127.0.0.1", "port": 8080, **({"tls": tls} if tls else {})},
        "services": {
            "site": {"command": ["x"], "host_ports": "9000-9001", "replicas": {"max": 2}, **site},
            "api": {"command": ["x"], "host_ports": "9010-9011", "replicas": {"max": 2}, "routes": ["/api/v1"]},
        },
    }


def test_hosts_become_host_routes_and_tls_settings(ca, tmp_path):
    cert, key = pair(ca, tmp_path, "d", "a.test")
    s = parse_stack(stack({"cert": cert, "key": key, "port": 8443},
                          hosts=["A.test", "www.a.test."], routes=["/", "/blog"], redirect_https=False))
    assert s.routes() == {"//a.test/": "site", "//a.test/blog": "site", "//www.a.test/": "site",
                          "//www.a.test/blog": "site", "/api/v1": "api"}
    tls = s.tls_settings()
    assert tls.port == 8443 and tls.default.cert == cert and tls.plain_services == frozenset({"site"})
    # hosts without routes: the whole host
    assert parse_stack(stack(hosts=["b.test"])).routes() == {"//b.test/": "site", "/api/v1": "api"}
    assert parse_stack(stack(routes=["/x"])).tls_settings() is None
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    s = parse_stack(stack({"acme": {"directory": "https://ca.test/dir", "email": "a@a.test", "ca_bundle": str(bundle)},
                           "hsts": {"max_age": 86400, "include_subdomains": True}}, hosts=["a.test"]))
    tls = s.tls_settings(tmp_path / "state")
    assert tls.acme == {"directory": "https://ca.test/dir", "email": "a@a.test", "ca_bundle": str(bundle),
                        "state_dir": str(tmp_path / "state")}
    assert tls.hsts == "max-age=86400; includeSubDomains" and tls.default is None


def _problems(data) -> list[str]:
    with pytest.raises(StackError) as e:
        parse_stack(data)
    return e.value.problems


def test_validation_names_the_field(ca, tmp_path):
    cert, key = pair(ca, tmp_path, "d", "a.test")
    _, other_key = pair(ca, tmp_path, "o", "a.test")
    old_cert, old_key = pair(ca, tmp_path, "old", "a.test", not_before=dt.datetime(2020, 1, 1),
                             not_after=dt.datetime(2021, 1, 1))
    cases = [
        (stack({"cert": cert}), "gateway.tls: cert and key: give both"),
        (stack({"port": 443}), "cert/key, certs or acme: HTTPS needs certificates"),
        (stack({"acme": {"directory": "http://ca.test/dir"}}), "gateway.tls.acme.directory: "),
        (stack({"acme": {"directory": "https://ca.test/dir", "ca_bundle": "/nope.pem"}}),
         "gateway.tls.acme.ca_bundle: cannot read /nope.pem"),
        (stack({"cert": cert, "key": other_key}),
         f"gateway.tls.key: {other_key}: the key does not match the certificate"),
        (stack({"cert": str(tmp_path / "nope.crt"), "key": key}), "gateway.tls.cert: cannot read"),
        (stack({"certs": [{"cert": old_cert, "key": old_key}]}),
         f"gateway.tls.certs[0].cert: {old_cert} expired on 2021-01-01"),
        (stack({"cert": cert, "key": key, "port": 8080}), "gateway.tls.port: 8080 is also the gateway's HTTP port"),
        (stack({"cert": cert, "key": key, "port": 9000}), "gateway.tls.port: 9000 is also used by 'site'"),
        (stack(hosts=["bad host"]), "services.site.hosts: 'bad host' is not a host name"),
        (stack({"cert": cert, "key": key, "acme": {}}), "gateway.tls.acme.directory: required"),
        (stack({"cert": cert, "key": key, "hsts": {"max_ag": 1}}), "gateway.tls.hsts.max_ag: unknown key"),
    ]
    for data, expected in cases:
        problems = _problems(data)
        assert any(expected in p for p in problems), (expected, problems)


def test_validate_command_shows_certificate_problems(ca, tmp_path):
    cert, key = pair(ca, tmp_path, "d", "a.test")
    _, other_key = pair(ca, tmp_path, "o", "a.test")
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(stack({"cert": cert, "key": key, "port": 8443}, hosts=["a.test"])))
    r = runner.invoke(app, ["validate", str(f)], env={"COLUMNS": "400"})
    assert r.exit_code == 0 and "HTTPS on :8443 (1 certificate file(s))" in r.output and "a.test: /" in r.output
    f.write_text(json.dumps(stack({"cert": cert, "key": other_key})))
    r = runner.invoke(app, ["validate", str(f)], env={"COLUMNS": "400"})
    assert r.exit_code == 1 and "gateway.tls.key:" in r.output and "does not match" in r.output


def test_up_tls_flags_fill_gateway_tls(ca, tmp_path):
    cert, key = pair(ca, tmp_path, "d", "a.test")
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(stack(routes=["/"])))
    s = prepare_stack(UpOptions(stack_path=f, tls_cert=tmp_path / "d.crt", tls_key=tmp_path / "d.key", tls_port=8443))
    assert (s.gateway.tls.cert, s.gateway.tls.key, s.gateway.tls.port) == (cert, key, 8443)
    with pytest.raises(UpError, match="--tls-cert and --tls-key: give both"):
        prepare_stack(UpOptions(stack_path=f, tls_cert=tmp_path / "d.crt"))
    pair(ca, tmp_path, "o", "a.test")
    with pytest.raises(StackError, match="gateway.tls.key: .*does not match"):
        prepare_stack(UpOptions(stack_path=f, tls_cert=tmp_path / "d.crt", tls_key=tmp_path / "o.key"))


def test_ups_example_request_names_the_host_a_route_is_for():
    from selfieless.cli.up import next_steps

    data = stack(hosts=["a.test"], routes=["/blog"])
    del data["services"]["api"]
    [example] = [line for line in next_steps("http://10.0.0.1:80", "http://127.0.0.1:9", parse_stack(data))
                 if "curl" in line]
    assert example == "  curl -i http://10.0.0.1:80/blog -H 'Host: a.test'"
    del data["services"]["site"]["hosts"]
    [example] = [line for line in next_steps("http://10.0.0.1:80", "http://127.0.0.1:9", parse_stack(data))
                 if "curl" in line]
    assert example == "  curl -i http://10.0.0.1:80/blog"
