#!/usr/bin/env python3
"""Benchmark: HTTPS at our gateway vs nginx, same certificate, same backend, same load (not a test).

    python benchmarks/tls_vs_nginx.py [--runs 3 --duration 10 --connections 50]

As in gateway_vs_nginx.py (whose helpers it uses): each proxy is one process pinned to its own
core, wrk and an nginx `return 200` backend share the other, runs alternate nginx, gateway. Two
loads over HTTPS (TLS 1.3, an ECDSA P-256 certificate made here, Mozilla intermediate ciphers on
both): keep-alive requests, and full handshakes (`Connection: close`, so every request is a new
connection and a new handshake; wrk does not resume sessions). Reported per run: requests/s and
CPU time of the proxy per request; the ratios compare CPU per request (nginx's / the gateway's),
which the other load on the machine does not skew. The last line:

    tls: keepalive ratio 0.58, handshake ratio 0.71

Needs nginx, wrk (built with OpenSSL, as Debian's is) and taskset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_vs_nginx import (  # noqa: E402
    ROOT, backend_conf, free_port, load_args, nginx_worker, proxy_conf, require_tools, run_wrk, starter, stop_all,
    wait_port,
)

from selfieless.gateway.tls import MOZILLA_INTERMEDIATE  # noqa: E402

TLS_CONF = """
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        ssl_prefer_server_ciphers off;"""


def make_cert(tmp: str) -> None:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (wrk does not verify; both proxies serve it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("bench.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    Path(tmp, "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(tmp, "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    load_args(ap)
    args = ap.parse_args()
    require_tools()
    tmp = tempfile.mkdtemp(prefix="tlsbench-")
    procs: list[subprocess.Popen] = []
    start = starter(procs)

    try:
        make_cert(tmp)
        bport, nport, gport, gplain = free_port(), free_port(), free_port(), free_port()
        Path(tmp, "backend.conf").write_text(backend_conf(tmp, bport))
        start(["taskset", "-c", args.wrk_cpu, "nginx", "-p", tmp, "-c", f"{tmp}/backend.conf",
               "-e", f"{tmp}/backend-error.log"])
        Path(tmp, "proxy.conf").write_text(proxy_conf(tmp, nport, f"        server 127.0.0.1:{bport};",
                                                      TLS_CONF.format(tmp=tmp, ciphers=MOZILLA_INTERMEDIATE)))
        nginx_master = start(["taskset", "-c", args.proxy_cpu, "nginx", "-p", tmp, "-c", f"{tmp}/proxy.conf",
                              "-e", f"{tmp}/proxy-error.log"])
        tls = {"port": gport, "default": {"cert": f"{tmp}/cert.pem", "key": f"{tmp}/key.pem"}, "reload_interval": 0}
        gateway = start(["taskset", "-c", args.proxy_cpu, sys.executable, "-m", "selfieless.gateway",
                         "--port", str(gplain), "--route", f"/api/v1=127.0.0.1:{bport}", "--tls-json", json.dumps(tls)],
                        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        for port in (bport, nport, gport):
            wait_port(port)
        pids = {"nginx": nginx_worker(nginx_master.pid), "gateway": gateway.pid}
        urls = {name: f"https://127.0.0.1:{port}/api/v1/bench" for name, port in (("nginx", nport), ("gateway", gport))}
        for url in urls.values():
            subprocess.run(["wrk", "-t1", "-c10", "-d1s", url], capture_output=True, check=True)
        ratios = {}
        for load, close in (("keepalive", False), ("handshake", True)):
            results: dict[str, list[dict]] = {k: [] for k in urls}
            for i in range(args.runs):
                for name, url in urls.items():
                    res = run_wrk(url, args, pids[name], ("Connection: close",) if close else ())
                    results[name].append(res)
                    print(f"{load:9s} run {i + 1} {name:8s} {res['rps']:9.0f} req/s  p99 {res['p99']:8.3f} ms  "
                          f"cpu {res['cpu_us']:6.1f} us/req  {res['errors']}", flush=True)
            med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "cpu_us")} for n, rs in results.items()}
            for n, m in med.items():
                print(f"{load:9s} median {n:8s} {m['rps']:9.0f} req/s  cpu {m['cpu_us']:6.1f} us/req")
            ratios[load] = med["nginx"]["cpu_us"] / med["gateway"]["cpu_us"]
            print(f"{load:9s} ratio (nginx cpu/req / gateway cpu/req) {ratios[load]:.2f}  "
                  f"(req/s gateway/nginx {med['gateway']['rps'] / med['nginx']['rps']:.2f})", flush=True)
        print(f"tls: keepalive ratio {ratios['keepalive']:.2f}, handshake ratio {ratios['handshake']:.2f}")
    finally:
        stop_all(procs, tmp)


if __name__ == "__main__":
    main()
