#!/usr/bin/env python3
"""Benchmark: our gateway vs nginx as a reverse proxy, same backend, same load (not a test).

    python benchmarks/gateway_vs_nginx.py                      # fast nginx `return 200` backend
    python benchmarks/gateway_vs_nginx.py --acts 2              # in front of 2 real acts replicas
    python benchmarks/gateway_vs_nginx.py --backends http://127.0.0.1:8000,http://127.0.0.1:8001 \
        --path /api/v1/categories                               # replicas you started yourself

Installs nothing: needs nginx, wrk and taskset on PATH (Debian: `apt-get install nginx wrk`).
Each proxy runs as one process/worker pinned to its own core with taskset; wrk and the backend
share the other core. Runs alternate A B A B (nginx, gateway) --runs times each and print
requests/s, p50 and p99 per run, the medians and the ratios gateway/nginx.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BACKEND_CONF = """
worker_processes 1;
daemon off;
master_process {master};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/pt; fastcgi_temp_path {tmp}/ft;
    uwsgi_temp_path {tmp}/ut; scgi_temp_path {tmp}/st;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type {content_type}; return 200 "{body}\\n"; }}
    }}
}}
"""


def backend_conf(tmp: str, port, name: str = "backend", content_type: str = "text/plain",
                 body: str = "ok", master: bool = True) -> str:
    """nginx answering every request with 200 and a fixed body: the fast backend both
    benchmarks put behind a proxy. ``port`` may be a placeholder string filled in later."""
    return BACKEND_CONF.format(tmp=tmp, port=port, name=name, content_type=content_type,
                               body=body, master="on" if master else "off")


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
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port}{ssl} backlog=4096;{tls}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto {scheme};
            proxy_buffering on;
        }}
    }}
}}
"""


def proxy_conf(tmp: str, port: int, servers: str, tls: str = "") -> str:
    """nginx as the reverse proxy under test; ``tls``: its ssl_* directives (then HTTPS)."""
    return PROXY_CONF.format(tmp=tmp, port=port, servers=servers, ssl=" ssl" if tls else "",
                             tls=tls, scheme="https" if tls else "http")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port}")


def parse_backend(spec: str) -> tuple[str, int]:
    """``127.0.0.1:8000`` or ``http://127.0.0.1:8000[/...]`` -> (host, port)."""
    spec = spec.strip()
    if "://" in spec:
        spec = spec.split("://", 1)[1].split("/", 1)[0]
    host, _, port = spec.rpartition(":")
    return host, int(port)


def to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(value)
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def nginx_worker(master_pid: int) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise SystemExit("nginx worker did not start")


def run_wrk(url: str, args, pid: int, headers: tuple[str, ...] = ()) -> dict:
    before = cpu_ticks(pid)
    cmd = ["taskset", "-c", args.wrk_cpu, "wrk", f"-t{args.threads}", f"-c{args.connections}",
           f"-d{args.duration}s", "--latency", *(x for h in headers for x in ("-H", h)), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    ticks = cpu_ticks(pid) - before
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    # CPU time the proxy spent per request: unlike rps, not skewed by other load on the machine.
    cpu_us = ticks / os.sysconf("SC_CLK_TCK") * 1e6 / max(total, 1)
    return {"rps": rps, "p50": p50, "p99": p99, "cpu_us": cpu_us,
            "errors": errors.group(0) if errors else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="",
                    help="HOST:PORT or http://HOST:PORT, comma-separated: existing replicas, e.g. real "
                         "acts replicas (default: start an nginx `return 200` backend)")
    ap.add_argument("--acts", type=int, default=0,
                    help="start this many acts replicas (one SQLite database, one category) as the "
                         "backends, on the wrk core, and request /api/v1/categories")
    ap.add_argument("--path", default=None, help="request path (must be under --prefix)")
    ap.add_argument("--prefix", default="/api/v1", help="gateway route prefix")
    load_args(ap)
    ap.add_argument("--only", choices=["nginx", "gateway"], help="run one side only (profiling)")
    ap.add_argument("--gateway-python", default=sys.executable, metavar="PYTHON",
                    help="interpreter for the gateway (needs httptools and uvloop importable), e.g. "
                         "to compare CPython builds; the project comes from src/ either way")
    args = ap.parse_args()

    require_tools()
    tmp = tempfile.mkdtemp(prefix="gwbench-")
    procs: list[subprocess.Popen] = []
    start = starter(procs)

    if args.path is None:
        args.path = "/api/v1/categories" if args.acts else "/api/v1/bench"
    try:
        if args.acts:
            backends = [("127.0.0.1", free_port()) for _ in range(args.acts)]
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
            for _, port in backends:
                start(["taskset", "-c", args.wrk_cpu, sys.executable, "-m", "selfieless.apps.acts", "--port",
                       str(port), "--database-url", f"sqlite:///{tmp}/acts.db", "--users-url",
                       "http://127.0.0.1:9"], env=env)
            for _, port in backends:
                wait_port(port, timeout=60)
            seed = urllib.request.Request(f"http://127.0.0.1:{backends[0][1]}/api/v1/categories",
                                          data=b'["Nature"]', method="POST")
            with urllib.request.urlopen(seed, timeout=30) as answer:
                assert answer.status == 201, answer.status
        elif args.backends:
            backends = [parse_backend(b) for b in args.backends.split(",") if b.strip()]
        else:
            bport = free_port()
            Path(tmp, "backend.conf").write_text(backend_conf(tmp, bport))
            start(["taskset", "-c", args.wrk_cpu, "nginx", "-p", tmp, "-c", f"{tmp}/backend.conf",
                   "-e", f"{tmp}/backend-error.log"])
            backends = [("127.0.0.1", bport)]
            wait_port(bport)

        nport, gport = free_port(), free_port()
        servers = "\n".join(f"        server {h}:{p};" for h, p in backends)
        Path(tmp, "proxy.conf").write_text(proxy_conf(tmp, nport, servers))
        nginx_master = start(["taskset", "-c", args.proxy_cpu, "nginx", "-p", tmp, "-c",
                              f"{tmp}/proxy.conf", "-e", f"{tmp}/proxy-error.log"])
        route = args.prefix + "=" + ",".join(f"{h}:{p}" for h, p in backends)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        gateway = start(["taskset", "-c", args.proxy_cpu, args.gateway_python, "-m", "selfieless.gateway",
                         "--port", str(gport), "--route", route], env=env)
        wait_port(nport)
        wait_port(gport)
        pids = {"nginx": nginx_worker(nginx_master.pid), "gateway": gateway.pid}
        version = subprocess.run([args.gateway_python, "-c", "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True).stdout.strip()
        print(f"gateway interpreter: {args.gateway_python} (Python {version})", flush=True)

        sides = {"nginx": f"http://127.0.0.1:{nport}{args.path}",
                 "gateway": f"http://127.0.0.1:{gport}{args.path}"}
        if args.only:
            sides = {args.only: sides[args.only]}
        for url in sides.values():  # warm up (connection pools, caches)
            subprocess.run(["wrk", "-t1", "-c10", "-d1s", url], capture_output=True, check=True)
        results: dict[str, list[dict]] = {k: [] for k in sides}
        for i in range(args.runs):
            for name, url in sides.items():
                res = run_wrk(url, args, pids[name])
                results[name].append(res)
                print(f"run {i + 1} {name:8s} {res['rps']:10.0f} rps  p50 {res['p50']:7.3f} ms  "
                      f"p99 {res['p99']:7.3f} ms  cpu {res['cpu_us']:5.1f} us/req  {res['errors']}",
                      flush=True)
        keys = ("rps", "p50", "p99", "cpu_us")
        med = {name: {k: statistics.median(r[k] for r in rs) for k in keys}
               for name, rs in results.items()}
        print()
        for name, m in med.items():
            print(f"median {name:8s} {m['rps']:10.0f} rps  p50 {m['p50']:7.3f} ms  "
                  f"p99 {m['p99']:7.3f} ms  cpu {m['cpu_us']:5.1f} us/req")
        if len(med) == 2:
            rr = med["gateway"]["rps"] / med["nginx"]["rps"]
            pr = med["gateway"]["p99"] / med["nginx"]["p99"]
            cr = med["nginx"]["cpu_us"] / med["gateway"]["cpu_us"]
            # In front of real (slow) replicas the proxy must not be the bottleneck at all.
            bar = 0.95 if (args.acts or args.backends) else 0.60
            print(f"ratio gateway/nginx: rps {rr:.2f} (bar >= {bar:.2f})  p99 {pr:.2f} (bar <= 2.0)  "
                  f"cpu-bound rps (nginx cpu/req / gateway cpu/req) {cr:.2f}")
    finally:
        stop_all(procs, tmp)


def load_args(ap: argparse.ArgumentParser) -> None:
    """The options of the load (wrk) and of the cores, shared with tls_vs_nginx.py."""
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--proxy-cpu", default="1", help="core for the proxy under test")
    ap.add_argument("--wrk-cpu", default="0", help="core(s) for wrk and the backend")


def require_tools() -> None:
    missing = [t for t in ("nginx", "wrk", "taskset") if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: apt-get install nginx wrk util-linux")


def starter(procs: list[subprocess.Popen]):
    """``start(cmd, **kw)``: a quiet subprocess, remembered in ``procs`` for :func:`stop_all`."""
    def start(cmd, **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        procs.append(p)
        return p
    return start


def stop_all(procs: list[subprocess.Popen], tmp: str) -> None:
    """SIGTERM what a benchmark started (last first), SIGKILL what lingers, remove its folder."""
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
