"""Run the gateway standalone (benchmarks, manual tests).

    python -m selfieless.gateway --port 8080 --route /api/v1=127.0.0.1:8000,127.0.0.1:8001

Each ``--route PREFIX=HOST:PORT[,HOST:PORT...]`` makes one service (named after the prefix)
whose replicas are the given addresses. Uses uvloop when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal

from . import Gateway, GatewayConfig, new_event_loop


def parse_route(spec: str) -> tuple[str, str, list[tuple[str, int]]]:
    """``/api/v1=127.0.0.1:8000,127.0.0.1:8001`` -> (prefix, service name, [(host, port), ...])."""
    prefix, _, backends = spec.partition("=")
    if not prefix or not backends:
        raise argparse.ArgumentTypeError(f"bad --route {spec!r}: want PREFIX=HOST:PORT[,...]")
    addrs = []
    for item in backends.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"bad backend {item!r} in --route {spec!r}")
        addrs.append((host, int(port)))
    service = prefix.strip("/").replace("/", "-") or "root"
    return prefix, service, addrs


async def serve(args) -> None:
    config = GatewayConfig(host=args.host, port=args.port, balance=args.balance,
                           no_replica_wait=args.no_replica_wait)
    routes = [parse_route(s) for s in args.route]
    gw = Gateway(config, routes={p: s for p, s, _ in routes},
                 on_eject=lambda s, r, why: logging.warning("ejected %s/%s: %s", s, r, why))
    for _, service, addrs in routes:
        pool = gw.pool(service)
        for host, port in addrs:
            pool.add(f"{service}-{port}", host, port)
    await gw.start()
    # Everything allocated so far lives as long as the process: keep the collector off it, and
    # collect young objects less often (the request path makes short-lived containers only).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    print(f"gateway listening on {args.host}:{gw.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gw.stop(grace=1.0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m selfieless.gateway", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--route", action="append", default=[], metavar="PREFIX=HOST:PORT[,...]")
    ap.add_argument("--balance", default="round_robin", choices=["round_robin", "least_outstanding"])
    ap.add_argument("--no-replica-wait", type=float, default=10.0)
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
