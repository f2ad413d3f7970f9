"""Run the gateway as its own process: standalone (benchmarks, manual tests) or under a control plane.

    python -m selfieless.gateway --port 8080 --route /api/v1=127.0.0.1:8000,127.0.0.1:8001

Each ``--route PREFIX=HOST:PORT[,HOST:PORT...]`` makes one service (named after the prefix)
whose replicas are the given addresses. Uses uvloop when installed.

With ``--control-socket PATH`` it also serves the control API (selfieless.gateway.control_api) on
that unix socket, and ``--state-file`` records its pid, public port and socket for a control
plane to find (``selfieless up`` starts it so: the gateway outlives a crashed control plane).
``--control-listen HOST:PORT`` serves it on TCP instead, for a control plane on another machine
(the swarm driver runs the gateway so on every node): a token is then required unless HOST is
loopback. ``--config-json`` gives every GatewayConfig field, ``--tls-json`` the HTTPS listener (TlsSettings);
the control token, if any, comes from the environment (SELFIELESS_GATEWAY_TOKEN), never the
command line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import os
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


def write_state(path: str, data: dict) -> None:
    """Replace the state file in one rename, so a reader never sees half of it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def build_gateway(args) -> Gateway:
    """The gateway the command line describes: its config, routes, TLS settings and any fixed
    backends (`--route PREFIX=SERVICE@HOST:PORT,...`)."""
    config = GatewayConfig(host=args.host, port=args.port, balance=args.balance,
                           no_replica_wait=args.no_replica_wait)
    if args.config_json:
        fields = json.loads(args.config_json)
        if "count_exclude" in fields:  # a tuple, which JSON carries as a list
            fields["count_exclude"] = tuple(fields["count_exclude"])
        config = dataclasses.replace(config, **fields)
    routes = [parse_route(s) for s in args.route]
    table = {p: s for p, s, _ in routes}
    if args.routes_json:
        table.update(json.loads(args.routes_json))
    tls = None
    if args.tls_json:
        from .tls import TlsSettings

        tls = TlsSettings.from_json(json.loads(args.tls_json))
    gw = Gateway(config, routes=table, tls=tls,
                 on_eject=lambda s, r, why: logging.warning("ejected %s/%s: %s", s, r, why))
    for _, service, addrs in routes:
        pool = gw.pool(service)
        for host, port in addrs:
            pool.add(f"{service}-{port}", host, port)
    return gw


async def start_listening(gw: Gateway, state_file: str | None) -> None:
    """Bind the public ports; a port or a certificate that cannot be used ends the process, with
    why in the state file for the starter to say in one line."""
    try:
        await gw.start()
    except OSError as e:
        if state_file:
            write_state(state_file, {"pid": os.getpid(), "error": e.strerror or str(e), "errno": e.errno})
        raise SystemExit(1) from None
    except ValueError as e:  # tls.CertError: a certificate that cannot be served
        if state_file:
            write_state(state_file, {"pid": os.getpid(), "error": str(e), "errno": 0})
        raise SystemExit(f"gateway: {e}") from None


def forget_state(state_file: str | None) -> None:
    """Remove the state file on the way out, unless a newer gateway has written its own there."""
    if not state_file:
        return
    try:
        with open(state_file) as f:
            mine = json.load(f).get("pid") == os.getpid()
    except (OSError, ValueError):
        mine = False
    if mine:
        os.unlink(state_file)


async def serve(args) -> None:
    gw = build_gateway(args)
    stop = asyncio.Event()
    await start_listening(gw, args.state_file)
    control = None
    listen = args.control_listen or args.control_socket
    if listen:
        from .control_api import ControlServer

        control = ControlServer(gw, listen, token=os.environ.get("SELFIELESS_GATEWAY_TOKEN") or None,
                                on_stop=stop.set)
        try:
            await control.start()
        except ValueError as e:  # listen_problem: no token beyond loopback, a bad address
            raise SystemExit(f"gateway: {e}") from None
    if args.state_file:
        write_state(args.state_file, {"pid": os.getpid(), "host": gw.config.host, "port": gw.port, "tls_port": gw.tls_port,
                                      "control_socket": listen, "instance": control and control.instance})
    # Everything allocated so far lives as long as the process: keep the collector off it, and
    # collect young objects less often (the request path makes short-lived containers only).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    print(f"gateway listening on {gw.config.host}:{gw.port}", flush=True)
    if gw.tls_port:
        print(f"gateway listening for HTTPS on {gw.config.host}:{gw.tls_port}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gw.stop(grace=args.grace)
    if control is not None:
        await control.stop()
    forget_state(args.state_file)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m selfieless.gateway", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--route", action="append", default=[], metavar="PREFIX=HOST:PORT[,...]")
    ap.add_argument("--balance", default="round_robin", choices=["round_robin", "least_outstanding"])
    ap.add_argument("--no-replica-wait", type=float, default=10.0)
    ap.add_argument("--log-level", default="WARNING")
    ap.add_argument("--control-socket", metavar="PATH", help="serve the control API on this unix socket")
    ap.add_argument("--control-listen", metavar="HOST:PORT",
                    help="serve the control API on this TCP address (a token is required beyond loopback)")
    ap.add_argument("--state-file", metavar="PATH", help="write pid, port and control socket here (JSON)")
    ap.add_argument("--config-json", metavar="JSON", help="GatewayConfig fields (override the flags above)")
    ap.add_argument("--routes-json", metavar="JSON", help="route table {prefix: service}")
    ap.add_argument("--tls-json", metavar="JSON", help="HTTPS listener settings (gateway.tls.TlsSettings)")
    ap.add_argument("--grace", type=float, default=1.0, help="seconds requests in flight get at stop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
