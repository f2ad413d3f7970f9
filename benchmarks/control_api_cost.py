#!/usr/bin/env python3
"""Benchmark: what the control API costs the gateway's hot path (not a test).

    python benchmarks/control_api_cost.py              # 5 runs x 2 sides x 5 s

Two gateway processes, the program `selfieless up` starts, pinned to the same core and measured
alternately (A B A B): "plain" (no control API) and "controlled" (`--control-socket`,
with a RemoteGateway in this script long-polling it as the control plane does: counters every
0.5 s). Both proxy to one nginx `return 200` backend; wrk and nginx share the other core. Prints
requests/s, p99 and the gateway's CPU time per request per run, the medians, and the cost =
cpu/req(controlled) / cpu/req(plain) - 1. The bar: cost <= 3 %.

Installs nothing: needs nginx, wrk and taskset (Debian: `apt-get install nginx wrk util-linux`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_vs_nginx import backend_conf, free_port, run_wrk, wait_port  # noqa: E402

BAR = 0.03


class ControlPlanePoller(threading.Thread):
    """A RemoteGateway attached to the controlled gateway, on its own event loop in this process."""

    def __init__(self, socket_path: str):
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.ready = threading.Event()
        self.polls = 0
        self._done = None
        self._loop = None

    def run(self) -> None:
        from selfieless.gateway.control_client import RemoteGateway

        async def main():
            self._done = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            gw = RemoteGateway(self.socket_path)
            await gw.attach()
            self.ready.set()
            while not self._done.is_set():
                await asyncio.sleep(0.5)
                self.polls += 1 if gw.counters("api-v1") is not None else 0
            await gw.close()

        asyncio.run(main())

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self.join(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--proxy-cpu", default="0")
    ap.add_argument("--wrk-cpu", default="1")
    args = ap.parse_args()
    missing = [t for t in ("nginx", "wrk", "taskset") if shutil.which(t) is None]
    if missing:
        print(f"needs {', '.join(missing)} (Debian: apt-get install nginx wrk util-linux)", file=sys.stderr)
        return 2
    procs: list[subprocess.Popen] = []
    poller = None
    with tempfile.TemporaryDirectory(prefix="selfieless-ctlcost-") as tmp:
        try:
            bport, plain_port, ctl_port = free_port(), free_port(), free_port()
            Path(tmp, "backend.conf").write_text(backend_conf(tmp, bport))
            procs.append(subprocess.Popen(["taskset", "-c", args.wrk_cpu, "nginx", "-p", tmp, "-c",
                                           f"{tmp}/backend.conf"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(bport)
            route = ["--route", f"/api/v1=127.0.0.1:{bport}"]
            sock = f"{tmp}/gw.sock"
            sides = {
                "plain": ["--port", str(plain_port), *route],
                "controlled": ["--port", str(ctl_port), *route, "--control-socket", sock,
                               "--state-file", f"{tmp}/gw.json"],
            }
            pids = {}
            for name, extra in sides.items():
                p = subprocess.Popen(["taskset", "-c", args.proxy_cpu, sys.executable, "-m", "selfieless.gateway",
                                      "--host", "127.0.0.1", *extra], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                procs.append(p)
                pids[name] = p.pid
            wait_port(plain_port)
            wait_port(ctl_port)
            poller = ControlPlanePoller(sock)
            poller.start()
            if not poller.ready.wait(10):
                raise SystemExit("could not attach to the controlled gateway")
            urls = {"plain": f"http://127.0.0.1:{plain_port}/api/v1/x",
                    "controlled": f"http://127.0.0.1:{ctl_port}/api/v1/x"}
            results: dict[str, list[dict]] = {"plain": [], "controlled": []}
            for i in range(args.runs):
                for name in ("plain", "controlled"):
                    r = run_wrk(urls[name], args, pids[name])
                    results[name].append(r)
                    print(f"run {i + 1} {name:10} {r['rps']:9.0f} req/s  p99 {r['p99']:6.2f} ms  "
                          f"cpu/req {r['cpu_us']:6.2f} us {r['errors']}", flush=True)
            med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p99", "cpu_us")}
                   for n, rs in results.items()}
            cost = med["controlled"]["cpu_us"] / med["plain"]["cpu_us"] - 1
            for n, m in med.items():
                print(f"median {n:10} {m['rps']:9.0f} req/s  p99 {m['p99']:6.2f} ms  cpu/req {m['cpu_us']:6.2f} us")
            print(f"control API cost (cpu/req, controlled vs plain): {cost * 100:+.1f} % (bar <= {BAR * 100:.0f} %), "
                  f"{poller.polls} counter polls during the runs: {'PASS' if cost <= BAR else 'FAIL'}")
            return 0 if cost <= BAR else 1
        finally:
            if poller is not None:
                poller.stop()
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    sys.exit(main())
