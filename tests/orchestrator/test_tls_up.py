"""`selfieless up --tls-cert FILE --tls-key FILE`: the gateway process serves HTTPS beside HTTP.

The SelfieLessActs API contract walked through HTTPS (users, categories, acts, upvotes, ranges,
counters, error answers) with three acts replicas behind the gateway; a host-routed site; plain
HTTP redirected; `curl --cacert` as in the README; the certificate in `selfieless status` and
/metrics; a replaced certificate swapped in by `selfieless tls reload` without a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trustme
import yaml

from selfieless.orchestrator.stack import BUNDLED_STACK
from support.pebble import run_pebble
from support.ports import free_port, free_port_range
from support.up_process import UpProcess


class TlsUp(UpProcess):
    driver = "process"
    converge_timeout = 120.0

    @contextlib.contextmanager
    def running(self):
        """Started and converged; its log printed if the test fails; `down` at the end."""
        self.start()
        try:
            self.wait_converged()
            yield self
        except BaseException:
            print(self.log())
            raise
        finally:
            r = self.down()
            assert r.returncode == 0, r.stdout + r.stderr

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`selfieless ARGS --state-dir` of this `up`."""
        return subprocess.run([sys.executable, "-m", "selfieless", *args, "--state-dir", str(self.state_dir)],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})


def _stack(tmp_path: Path, name: str = "tls-e2e", tls: dict | None = None) -> Path:
    data = yaml.safe_load(BUNDLED_STACK.read_text())
    data["name"] = name
    data["gateway"]["host"] = "127.0.0.1"
    if tls is not None:
        data["gateway"]["tls"] = tls
    acts, users, web = free_port_range(10), free_port_range(10), free_port_range(10)
    data["services"]["acts"].update(host_ports=f"{acts[0]}-{acts[-1]}", autoscale={"policy": "none"},
                                    replicas={"initial": 3, "min": 3, "max": 3})
    data["services"]["users"]["host_ports"] = f"{users[0]}-{users[-1]}"
    # the web page as a site of its own host, at its root and under /ui as before
    data["services"]["web"].update(host_ports=f"{web[0]}-{web[-1]}", hosts=["site.test"])
    f = tmp_path / "stack.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def _serial(port: int, host: str, ctx: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), 10) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        return s.getpeercert()["serialNumber"]


def test_up_serves_the_api_over_https(tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("api.test", "site.test")
    cert, key, ca_file = tmp_path / "gw.crt", tmp_path / "gw.key", tmp_path / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_file))
    tls_port = free_port()
    up = TlsUp(_stack(tmp_path), tmp_path / "state")
    up.extra_args = ("--tls-cert", str(cert), "--tls-key", str(key), "--tls-port", str(tls_port))
    with up.running():
        assert up.status()["services"]["acts"]["ready"] == 3
        ctx = ssl.create_default_context(cafile=str(ca_file))
        base = f"https://127.0.0.1:{tls_port}/api/v1"
        host = {"Host": "api.test"}
        sni = {"sni_hostname": "api.test"}
        with httpx.Client(verify=ctx, timeout=30, headers=host) as c:
            def call(method, path, **kw):
                return c.request(method, base + path, extensions=sni, **kw)

            # users
            assert (call("POST", "/users", json={"username": "alice", "password": "a" * 40}).status_code) == 201
            r = call("POST", "/users", json={"username": "alice", "password": "a" * 40})
            assert r.status_code == 400 and "error" in r.json()
            assert call("GET", "/users").json() == ["alice"]
            # categories and acts (acts asks users about the name through the gateway's plain port)
            assert call("GET", "/categories").status_code == 204
            assert call("POST", "/categories", json=["Nature"]).status_code == 201
            acts = [{"actId": 1000 + i, "username": "alice", "timestamp": "01-01-2020:00-00-00", "caption": f"c{i}",
                     "categoryName": "Nature", "imgB64": "aGVsbG8="} for i in range(3)]
            for a in acts:
                r = call("POST", "/acts", json=a)
                assert r.status_code == 201, r.text
            r = call("POST", "/acts", json={**acts[0], "actId": 2000, "username": "bob"})
            assert r.status_code == 400 and "error" in r.json()
            assert call("GET", "/categories").json() == {"Nature": 3}
            assert [a["actId"] for a in call("GET", "/categories/Nature/acts").json()] == [1002, 1001, 1000]
            assert call("GET", "/categories/Nature/acts/size").json() == [3]
            assert [a["actId"] for a in call("GET", "/categories/Nature/acts", params={"start": 2, "end": 3}).json()] \
                == [1001, 1000]
            assert call("GET", "/categories/Nature/acts", params={"start": 1, "end": 200}).status_code == 413
            assert call("POST", "/acts/upvote", json=[1001]).status_code == 200
            assert {a["actId"]: a["upvotes"] for a in call("GET", "/categories/Nature/acts").json()}[1001] == 1
            assert call("GET", "/acts/count").json() == [3]
            assert call("DELETE", "/acts/1000").status_code == 200
            assert call("DELETE", "/acts/1000").status_code == 400
            assert call("DELETE", "/acts/count").status_code == 405
            assert call("DELETE", "/categories/Nature").status_code == 200
            assert call("GET", "/acts/count").json() == [0]
            assert call("DELETE", "/users/alice").status_code == 200
            assert call("GET", "/users").status_code == 204
            assert call("GET", "/_count").json()[0] > 0
            r = call("GET", "/nothing/here")
            assert r.status_code == 404 and "error" in r.json()
            # a body through TLS as large as the default limit allows, refused whole beyond it
            big = {**acts[0], "actId": 3000, "imgB64": "A" * (17 * 1024 * 1024)}
            assert call("POST", "/acts", json=big).status_code == 413
            # the host-routed site: its own root and /ui
            for path in ("/ui/", "/ui/_health"):
                r = c.get(f"https://127.0.0.1:{tls_port}{path}", headers={"Host": "site.test"},
                          extensions={"sni_hostname": "site.test"})
                assert r.status_code == 200, (path, r.text[:200])
        # plain HTTP is redirected
        r = httpx.get(f"{up.gateway}/api/v1/users?x=1", headers=host, timeout=30)
        assert r.status_code == 301 and r.headers["location"] == f"https://api.test:{tls_port}/api/v1/users?x=1"
        # the README's example
        out = subprocess.run(["curl", "-sS", "--cacert", str(ca_file), "--resolve", f"api.test:{tls_port}:127.0.0.1",
                              f"https://api.test:{tls_port}/api/v1/acts/count"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and json.loads(out.stdout) == [0], out.stderr
        # status, metrics
        st = up.cli("status")
        assert "certificates:" in st.stdout and "api.test, site.test (default): expires in" in st.stdout, st.stdout
        metrics = httpx.get(f"{up.admin}/metrics", timeout=30).text
        assert 'selfieless_tls_cert_expiry_seconds{host="api.test"}' in metrics
        # a new certificate on disk, swapped in by `selfieless tls reload`
        old = _serial(tls_port, "api.test", ctx)
        leaf2 = ca.issue_cert("api.test", "site.test")
        leaf2.private_key_pem.write_to_path(str(key))
        leaf2.cert_chain_pems[0].write_to_path(str(cert))
        rl = up.cli("tls", "reload")
        assert rl.returncode == 0 and "certificates reloaded" in rl.stdout, rl.stdout + rl.stderr
        assert _serial(tls_port, "api.test", ctx) != old
        # a key that does not match: refused, the previous certificate stays, and it is an event
        ca.issue_cert("api.test").private_key_pem.write_to_path(str(key))
        rl = up.cli("tls", "reload")
        assert rl.returncode == 1 and "does not match" in rl.stdout + rl.stderr, rl.stdout + rl.stderr
        assert _serial(tls_port, "api.test", ctx) != old  # the one swapped in above, still served
        deadline = time.monotonic() + 30
        while not any(e["kind"] == "tls" and "does not match" in e["reason"] for e in up.events()):
            assert time.monotonic() < deadline, up.events()[-5:]
            time.sleep(0.2)


def test_up_gets_certificates_from_an_acme_ca(tmp_path):
    """No certificate file: the gateway process gets one from pebble for each host the routes
    name, keeps them in the stack's state directory, and `status` says where they came from."""
    with run_pebble(tmp_path) as pebble:
        tls_port = free_port()
        stack = _stack(tmp_path, "tls-acme", {"port": tls_port, "acme": {
            "directory": pebble["directory"], "email": "ops@api.test", "ca_bundle": pebble["ca_bundle"]}})
        data = yaml.safe_load(stack.read_text())
        data["services"]["acts"]["hosts"] = ["api.test"]  # acts at api.test; users stays on any host
        stack.write_text(yaml.safe_dump(data))
        up = TlsUp(stack, tmp_path / "state", gateway_port=pebble["gw_port"])
        with up.running():
            with httpx.Client(verify=ssl.create_default_context(cafile=pebble["ca_bundle"]), timeout=10) as c:
                root = c.get(f"{pebble['mgmt']}/roots/0").text
            ctx = ssl.create_default_context(cadata=root)
            for host in ("api.test", "site.test"):
                deadline = time.monotonic() + 120
                while True:
                    try:
                        _serial(tls_port, host, ctx)
                        break
                    except (ssl.SSLError, OSError):
                        assert time.monotonic() < deadline, f"no certificate for {host}:\n{up.log()}"
                        time.sleep(0.5)
            with httpx.Client(verify=ctx, timeout=30) as c:
                r = c.get(f"https://127.0.0.1:{tls_port}/api/v1/acts/count", headers={"Host": "api.test"},
                          extensions={"sni_hostname": "api.test"})
            assert r.status_code == 200 and r.json() == [0]
            stored = list((tmp_path / "state" / "tls-acme" / "acme").glob("*/api.test/cert.pem"))
            assert len(stored) == 1
            st = up.cli("status")
            assert "api.test (acme): expires in" in st.stdout and "site.test (acme)" in st.stdout, st.stdout
            assert any(e["kind"] == "tls" and e["replica"] == "api.test" for e in up.events())
