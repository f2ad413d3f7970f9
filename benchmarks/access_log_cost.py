#!/usr/bin/env python3
"""Benchmark: what the replicas' one-line access log costs an acts replica (not a test).

    python benchmarks/access_log_cost.py                    # 3 runs x 2 sides x 5 s
    python benchmarks/access_log_cost.py --runs 5 --duration 10

Starts two real acts replicas (SQLite, one category) on one core, one with the access log and one
with `--no-access-log`, and runs wrk against `GET /api/v1/categories` on the other core, alternating
off/on --runs times. Prints requests/s and the replica's CPU time per request for each run, the
medians, and the cost = 1 - rps(on) / rps(off), and the CPU per request the log line adds.
The log goes to a file, as the process driver's replicas' output does.

Needs wrk and taskset (Debian: `apt-get install wrk util-linux`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_vs_nginx import free_port, run_wrk, wait_port  # noqa: E402


def start_replica(tmp: str, port: int, cpu: str, access_log: bool) -> subprocess.Popen:
    log = open(Path(tmp) / f"acts-{port}.log", "ab")
    cmd = ["taskset", "-c", cpu, sys.executable, "-m", "selfieless.apps.acts", "--port", str(port),
           "--database-url", f"sqlite:///{tmp}/acts.db", "--users-url", "http://127.0.0.1:9"]
    if not access_log:
        cmd.append("--no-access-log")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def per_request_cpu(n: int = 200_000) -> tuple[float, float]:
    """CPU time of the middleware alone around a trivial ASGI app, writing to a file: µs per
    request without and with it (the whole-replica figure above is noisier than the difference)."""
    import asyncio
    import time

    from selfieless.apps.common.accesslog import AccessLog

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message):
        pass

    async def receive():
        return {"type": "http.request"}

    scope = {"type": "http", "method": "GET", "path": "/api/v1/categories", "query_string": b""}
    with tempfile.NamedTemporaryFile() as f:
        logged = AccessLog(app, fd=f.fileno())

        async def loop(target) -> float:
            t0 = time.process_time()
            for _ in range(n):
                await target(scope, receive, send)
            return (time.process_time() - t0) / n * 1e6

        plain = asyncio.run(loop(app))
        with_log = asyncio.run(loop(logged))
    return plain, with_log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--replica-cpu", default="0")
    ap.add_argument("--wrk-cpu", default="1")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="accesslog-bench-") as tmp:
        ports = {"off": free_port(), "on": free_port()}
        procs = {side: start_replica(tmp, port, args.replica_cpu, side == "on") for side, port in ports.items()}
        try:
            for port in ports.values():
                wait_port(port, 60)
            base = f"http://127.0.0.1:{ports['off']}/api/v1/categories"
            httpx.post(base, json=["Nature"], trust_env=False, timeout=10)  # shared database: both see it
            results: dict[str, list[dict]] = {"off": [], "on": []}
            for i in range(args.runs):
                for side in ("off", "on"):
                    r = run_wrk(f"http://127.0.0.1:{ports[side]}/api/v1/categories", args, procs[side].pid)
                    results[side].append(r)
                    print(f"run {i + 1} log {side:>3}: {r['rps']:8.0f} rps  p99 {r['p99']:6.1f} ms  "
                          f"{r['cpu_us']:6.0f} µs CPU/request {r['errors']}", flush=True)
            med = {s: {k: statistics.median(x[k] for x in rs) for k in ("rps", "p99", "cpu_us")}
                   for s, rs in results.items()}
            lines = sum(1 for _ in open(Path(tmp) / f"acts-{ports['on']}.log", "rb"))
            print(f"\nmedians: off {med['off']['rps']:.0f} rps, {med['off']['cpu_us']:.0f} µs/request; "
                  f"on {med['on']['rps']:.0f} rps, {med['on']['cpu_us']:.0f} µs/request")
            print(f"cost: {100 * (1 - med['on']['rps'] / med['off']['rps']):.1f} % of requests/s, "
                  f"{med['on']['cpu_us'] - med['off']['cpu_us']:+.1f} µs CPU per request "
                  f"({lines} lines in the logged replica's file)")
            plain, with_log = per_request_cpu()
            print(f"the middleware alone: {with_log - plain:.1f} µs CPU per request "
                  f"({plain:.1f} µs for a trivial ASGI app, {with_log:.1f} µs with the log line to a file)")
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    os.environ.pop("SELFIELESS_ACCESS_LOG", None)
    main()
