"""`python -m selfieless.orchestrator STACK.yaml`: run a stack in the foreground (until Ctrl-C).

A minimal runner for development and tests; the `selfieless` CLI is the user-facing front end.
Events are printed as they happen. SIGINT/SIGTERM drain and stop every replica; `--detach-on-exit`
leaves them running for the next start to adopt. `--gateway-process` runs the gateway as its own
process (as `selfieless up` does): it keeps serving if this one dies, and the next start
re-attaches to it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..gateway import new_event_loop
from .assemble import default_state_dir
from .runner import Runner
from .stack import StackError, load_stack


async def _main(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    overrides = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host

    def started(system) -> None:
        orch = system.orchestrator
        orch.events.subscribe(lambda e: print(e, flush=True))
        how = "re-attached to the running gateway" if system.gateway_attached else "gateway"
        host = system.gateway.host if args.gateway_process else system.gateway.config.host
        print(f"stack {stack.name}: {how} on {host}:{system.gateway.port}, driver {orch.driver.name}", flush=True)

    await Runner(detach=args.detach_on_exit).run(
        stack, args.state_dir, on_started=started, driver_setting=args.driver, gateway_overrides=overrides,
        gateway_process=args.gateway_process)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m selfieless.orchestrator", description=__doc__.splitlines()[0])
    p.add_argument("stack", help="stack file (YAML)")
    p.add_argument("--state-dir", default=str(default_state_dir()), help="replica state files and logs")
    p.add_argument("--driver", choices=["process", "docker", "auto"], help="override the stack's driver")
    p.add_argument("--host", help="gateway listen address (overrides the stack)")
    p.add_argument("--port", type=int, help="gateway port (overrides the stack)")
    p.add_argument("--detach-on-exit", action="store_true", help="leave replicas running on exit")
    p.add_argument("--gateway-process", action="store_true",
                   help="run the gateway as its own process (it outlives this one; a restart re-attaches)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # uvloop, as the gateway: the control plane's probes and timers cost about half the CPU.
        with asyncio.Runner(loop_factory=new_event_loop) as loop:
            return loop.run(_main(args))
    except StackError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
