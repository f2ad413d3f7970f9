"""The gateway's CPU per proxied GET by the width of the rotation (issue 28), without a stack.

`python benchmarks/gateway_width.py --widths 3,250` starts, for each width N, N echo replicas
(`selfieless.apps.echo`'s protocol, one forked process per port as the stack runs them, or all
ports in one process with `--one-process`) and a standalone gateway routing `/e` over them round
robin, then runs `wrk -t1 -c16` through it and reads the gateway's CPU (user, system) from /proc.
It isolates the gateway from the control plane, the probes and the other services that
`benchmarks/scale.py` runs. Everything it starts is stopped on any exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def serve_ports(ports: list[int]) -> None:
    """Serve the echo answers on ``ports`` for ever (in this process)."""
    import uvloop

    from selfieless.apps.echo.server import Answers, EchoProtocol

    async def main() -> None:
        loop, conns = asyncio.get_running_loop(), set()
        for p in ports:
            answers = Answers.make("echo", p)
            await loop.create_server(lambda a=answers: EchoProtocol(a, conns), "127.0.0.1", p,
                                     reuse_address=True, backlog=1024)
        await asyncio.Event().wait()

    uvloop.run(main())


def start_replicas(ports: list[int], one_process: bool) -> list[int]:
    groups = [ports] if one_process else [[p] for p in ports]
    pids = []
    for group in groups:
        pid = os.fork()
        if pid == 0:
            try:
                serve_ports(group)
            finally:
                os._exit(0)
        pids.append(pid)
    return pids


def cpu(pid: int) -> tuple[float, float]:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def wrk(url: str, seconds: float) -> int:
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds:g}s", url], capture_output=True,
                         text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return int(re.search(r"(\d+) requests in", out).group(1))


def measure(width: int, base_port: int, gw_port: int, one_process: bool, seconds: float) -> str:
    ports = list(range(base_port, base_port + width))
    pids = start_replicas(ports, one_process)
    route = "/e=" + ",".join(f"127.0.0.1:{p}" for p in ports)
    gw = subprocess.Popen([sys.executable, "-m", "selfieless.gateway", "--port", str(gw_port),
                           "--route", route, "--log-level", "warning"])
    try:
        url = f"http://127.0.0.1:{gw_port}/e/hello"
        time.sleep(3)  # replicas listening, gateway serving
        wrk(url, 2)  # warm: one pooled connection per replica
        (u0, s0), n = cpu(gw.pid), 0
        n = wrk(url, seconds)
        u1, s1 = cpu(gw.pid)
        return (f"width {width} ({'one process' if one_process else 'a process each'}): "
                f"{(u1 - u0 + s1 - s0) / n * 1e6:.1f} µs/request (user {(u1 - u0) / n * 1e6:.1f}, "
                f"system {(s1 - s0) / n * 1e6:.1f}), {n} requests")
    finally:
        gw.terminate()
        gw.wait()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--widths", default="3,250", help="replicas behind the route, comma-separated")
    p.add_argument("--ports-from", type=int, default=23000, help="lowest replica port")
    p.add_argument("--gateway-port", type=int, default=18099)
    p.add_argument("--seconds", type=float, default=4.0, help="the measured wrk run (s)")
    p.add_argument("--one-process", action="store_true", help="all replicas' ports in one process")
    args = p.parse_args()
    for width in (int(w) for w in args.widths.split(",")):
        print(measure(width, args.ports_from, args.gateway_port, args.one_process, args.seconds), flush=True)


if __name__ == "__main__":
    main()
