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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_vs_nginx import ROOT, backend_conf, cpu_ticks, free_port, nginx_worker, to_ms, wait_port  # noqa: E402

from selfieless.gateway.tls import MOZILLA_INTERMEDIATE  # noqa: E402

PROXY_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/proxy.pid;
error_log {tmp}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/cb2; proxy_temp_path {tmp}/pt2; fastcgi_temp_path {tmp}/ft2;
    uwsgi_temp_path {tmp}/ut2; scgi_temp_path {tmp}/st2;
    keepalive_requests 1000000;
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        ssl_prefer_server_ciphers off;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"""


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


def run_wrk(url: str, args, pid: int, close: bool) -> dict:
    import re

    before = cpu_ticks(pid)
    cmd = ["taskset", "-c", args.wrk_cpu, "wrk", f"-t{args.threads}", f"-c{args.connections}",
           f"-d{args.duration}s", "--latency", *(["-H", "Connection: close"] if close else []), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    ticks = cpu_ticks(pid) - before
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p99": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
            "cpu_us": ticks / os.sysconf("SC_CLK_TCK") * 1e6 / max(total, 1),
            "errors": errors.group(0) if errors else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--proxy-cpu", default="1", help="core for the proxy under test")
    ap.add_argument("--wrk-cpu", default="0", help="core(s) for wrk and the backend")
    args = ap.parse_args()
    missing = [t for t in ("nginx", "wrk", "taskset") if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: apt-get install nginx wrk util-linux")

    tmp = tempfile.mkdtemp(prefix="tlsbench-")
    procs: list[subprocess.Popen] = []

    def start(cmd, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        procs.append(p)
        return p

    try:
        make_cert(tmp)
        bport, nport, gport, gplain = free_port(), free_port(), free_port(), free_port()
        Path(tmp, "backend.conf").write_text(backend_conf(tmp, bport))
        start(["taskset", "-c", args.wrk_cpu, "nginx", "-p", tmp, "-c", f"{tmp}/backend.conf",
               "-e", f"{tmp}/backend-error.log"])
        Path(tmp, "proxy.conf").write_text(PROXY_CONF.format(tmp=tmp, port=nport, backend=bport,
                                                             ciphers=MOZILLA_INTERMEDIATE))
        nginx_master = start(["taskset", "-c", args.proxy_cpu, "nginx", "-p", tmp, "-c", f"{tmp}/proxy.conf",
                              "-e", f"{tmp}/proxy-error.log"])
        tls = {"port": gport, "default": {"cert": f"{tmp}/cert.pem", "key": f"{tmp}/key.pem"}, "reload_interval": 0}
        gateway = start(["taskset", "-c", args.proxy_cpu, sys.executable, "-m", "selfieless.gateway",
                         "--port", str(gplain), "--route", f"/api/v1=127.0.0.1:{bport}", "--tls-json", json.dumps(tls)],
                        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        for port in (bport, nport, gport):
            wait_port(port)
        pids = {"nginx": nginx_worker(nginx_master.pid), "gateway": gateway.pid}
        urls = {"nginx": f"https://127.0.0.1:{nport}/api/v1/bench", "gateway": f"https://127.0.0.1:{gport}/api/v1/bench"}
        for url in urls.values():
            subprocess.run(["wrk", "-t1", "-c10", "-d1s", url], capture_output=True, check=True)
        ratios = {}
        for load, close in (("keepalive", False), ("handshake", True)):
            results: dict[str, list[dict]] = {k: [] for k in urls}
            for i in range(args.runs):
                for name, url in urls.items():
                    res = run_wrk(url, args, pids[name], close)
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
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
