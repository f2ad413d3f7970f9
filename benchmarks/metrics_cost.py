#!/usr/bin/env python3
"""Benchmark: what Prometheus metrics cost the gateway (not a test).

    python benchmarks/metrics_cost.py                 # 5 runs x 2 sides x 5 s
    python benchmarks/metrics_cost.py --runs 7 --duration 10 --scrape-interval 0.2

Runs the real thing: `selfieless up` (gateway + orchestrator + admin API on one event loop) pinned
to one core, with one replica that is an nginx `return 200` (pinned to the other core, with wrk).
Then wrk runs alternately without scraping ("off") and while this script scrapes /metrics every
--scrape-interval seconds ("on"), --runs times each, and prints requests/s, p50, p99 per run, the
medians, the scrape times and the cost = 1 - rps(on) / rps(off). The bar: cost <= 5 %.

Counters are plain integers bumped on the request path whether or not anyone scrapes; a scrape
reads them once. So the cost measured here is the scrape itself, taking its slice of the loop.

Installs nothing: needs nginx, wrk and taskset (Debian: `apt-get install nginx wrk util-linux`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_vs_nginx import backend_conf, free_port, run_wrk, wait_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

def stack_yaml(tmp: str, ports: str, replica_cpu: str) -> str:
    # The replica: a per-port copy of the nginx config, run on the wrk core (not the gateway's).
    script = (f"sed s/PORT/{{port}}/g {tmp}/replica.conf.in > {tmp}/replica-{{port}}.conf && "
              f"exec taskset -c {replica_cpu} nginx -p {tmp} -c {tmp}/replica-{{port}}.conf -e {tmp}/replica-error.log")
    return json.dumps({
        "name": "metricsbench", "driver": "process",
        "gateway": {"host": "127.0.0.1", "port": 8080},
        "services": {"bench": {
            "command": ["sh", "-c", script], "host_ports": ports, "routes": ["/api/v1"],
            "health": {"interval": 1, "timeout": 1},
            "replicas": {"initial": 1, "min": 1, "max": 1}, "autoscale": {"policy": "none"},
        }},
    })  # JSON is YAML


class Scraper(threading.Thread):
    def __init__(self, url: str, interval: float):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10, trust_env=False) as c:
            nxt = time.monotonic()
            while not self.stop.is_set():
                t0 = time.perf_counter()
                r = c.get(self.url)
                self.times.append(time.perf_counter() - t0)
                self.sizes.append(len(r.content))
                nxt += self.interval
                self.stop.wait(max(0.0, nxt - time.monotonic()))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_per_scrape(pid: int, url: str, n: int = 300) -> float:
    c0 = cpu_seconds(pid)
    time.sleep(3.0)
    idle_rate = (cpu_seconds(pid) - c0) / 3.0
    with httpx.Client(timeout=10, trust_env=False) as c:
        c1, t1 = cpu_seconds(pid), time.monotonic()
        for _ in range(n):
            c.get(url)
        c2, t2 = cpu_seconds(pid), time.monotonic()
    return max(0.0, (c2 - c1) - idle_rate * (t2 - t1)) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    ap.add_argument("--path", default="/api/v1/bench")
    ap.add_argument("--proxy-cpu", default="1", help="core for `selfieless up` (gateway + admin API)")
    ap.add_argument("--wrk-cpu", default="0", help="core for wrk, the scraper and the nginx replica")
    args = ap.parse_args()

    missing = [t for t in ("nginx", "wrk", "taskset") if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: apt-get install nginx wrk util-linux")

    tmp = tempfile.mkdtemp(prefix="metricsbench-")
    # PORT is filled in per replica by the stack's command (sed), so each gets its own file.
    Path(tmp, "replica.conf.in").write_text(backend_conf(
        tmp, "PORT", name="replica-PORT", content_type="application/json", body="{}", master=False))
    rport = free_port()
    Path(tmp, "stack.yaml").write_text(stack_yaml(tmp, str(rport), args.wrk_cpu))
    gport, aport = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    up = subprocess.Popen(
        ["taskset", "-c", args.proxy_cpu, sys.executable, "-m", "selfieless.cli.main", "up", f"{tmp}/stack.yaml",
         "--port", str(gport), "--admin-port", str(aport), "--state-dir", f"{tmp}/state", "--quiet"],
        stdout=open(f"{tmp}/up.log", "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_port(aport, 30)
        admin = f"http://127.0.0.1:{aport}"
        deadline = time.monotonic() + 30
        while not httpx.get(admin + "/api/status", trust_env=False).json()["converged"]:
            if time.monotonic() > deadline:
                sys.exit("stack not ready:\n" + Path(tmp, "up.log").read_text())
            time.sleep(0.1)
        url = f"http://127.0.0.1:{gport}{args.path}"
        subprocess.run(["wrk", "-t1", "-c10", "-d1s", url], capture_output=True, check=True)  # warm up
        # CPU time `up` spends per scrape (its /proc counters, minus its idle rate: probes...):
        # cpu_per_scrape / interval is the share of the gateway's core that scraping takes,
        # a figure that machine noise barely touches, unlike wrk's requests/s.
        cpu_ms = cpu_per_scrape(up.pid, admin + "/metrics") * 1000
        results: dict[str, list[dict]] = {"off": [], "on": []}
        scrapes: list[float] = []
        sizes: list[int] = []
        for i in range(args.runs):
            for side in ("off", "on"):
                scraper = None
                if side == "on":
                    scraper = Scraper(admin + "/metrics", args.scrape_interval)
                    scraper.start()
                res = run_wrk(url, args, up.pid)
                if scraper is not None:
                    scraper.stop.set()
                    scraper.join(10)
                    scrapes += scraper.times
                    sizes += scraper.sizes
                    res["scrapes"] = len(scraper.times)
                results[side].append(res)
                extra = f"  {res['scrapes']} scrapes" if side == "on" else ""
                print(f"run {i + 1} metrics {side:3s} {res['rps']:10.0f} rps  p50 {res['p50']:7.3f} ms  "
                      f"p99 {res['p99']:7.3f} ms{extra}  {res['errors']}", flush=True)
        med = {s: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")} for s, rs in results.items()}
        print()
        for s, m in med.items():
            print(f"median metrics {s:3s} {m['rps']:10.0f} rps  p50 {m['p50']:7.3f} ms  p99 {m['p99']:7.3f} ms")
        pair = [on["rps"] / off["rps"] for off, on in zip(results["off"], results["on"])]
        cost = 1 - med["on"]["rps"] / med["off"]["rps"]
        print(f"scrape (as seen by the scraper, under load): median {statistics.median(scrapes) * 1000:.1f} ms, "
              f"max {max(scrapes) * 1000:.1f} ms, {statistics.median(sizes)} bytes, every {args.scrape_interval:g} s")
        print(f"CPU per scrape in `up`: {cpu_ms:.2f} ms -> {cpu_ms / 10 / args.scrape_interval:.2f} % of the "
              f"gateway's core at one scrape every {args.scrape_interval:g} s")
        print(f"per-run ratio on/off: {', '.join(f'{x:.3f}' for x in pair)}")
        print(f"cost of metrics = 1 - rps(on)/rps(off) = {cost * 100:+.1f} % (bar <= 5 %)")
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
