"""`python -m selfieless.orchestrator STACK.yaml`: run a stack in the foreground (until Ctrl-C).

A minimal runner for development and tests; the `selfieless` CLI is the user-facing front end.
Events are printed as they happen. SIGINT/SIGTERM drain and stop every replica; `--detach-on-exit`
leaves them running for the next start to adopt.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .assemble import DEFAULT_STATE_DIR, start_system
from .stack import StackError, load_stack


async def _main(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    overrides = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    system = await start_system(stack, args.state_dir, driver_setting=args.driver, gateway_overrides=overrides)
    orch = system.orchestrator
    orch.events.subscribe(lambda e: print(e, flush=True))
    print(f"stack {stack.name}: gateway on {system.gateway.config.host}:{system.gateway.port}, "
          f"driver {orch.driver.name}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await system.stop(detach=args.detach_on_exit)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m selfieless.orchestrator", description=__doc__.splitlines()[0])
    p.add_argument("stack", help="stack file (YAML)")
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="replica state files and logs")
    p.add_argument("--driver", choices=["process", "docker", "auto"], help="override the stack's driver")
    p.add_argument("--host", help="gateway listen address (overrides the stack)")
    p.add_argument("--port", type=int, help="gateway port (overrides the stack)")
    p.add_argument("--detach-on-exit", action="store_true", help="leave replicas running on exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_main(args))
    except StackError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
