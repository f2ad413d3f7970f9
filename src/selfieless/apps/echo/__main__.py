"""``python -m selfieless.apps.echo --port 9000 [--service NAME] [--host 127.0.0.1]``: one echo replica.

Like the other services, the flags default to SELFIELESS_HOST / SELFIELESS_PORT / SELFIELESS_SERVICE.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from ..common.accesslog import set_process_title
from .server import serve

try:
    import uvloop
except ImportError:  # the server runs the same on asyncio's own loop, a little slower
    uvloop = None


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m selfieless.apps.echo",
                                     description="Answer every GET with a fixed JSON body (the scale benchmark's replica).")
    parser.add_argument("--host", default=env("SELFIELESS_HOST", "127.0.0.1"),
                        help="address to bind (env SELFIELESS_HOST) [%(default)s]")
    parser.add_argument("--port", type=int, default=int(env("SELFIELESS_PORT", "9000")),
                        help="port to bind (env SELFIELESS_PORT) [%(default)s]")
    parser.add_argument("--service", default=env("SELFIELESS_SERVICE", "echo"),
                        help="the name its answers carry (env SELFIELESS_SERVICE) [%(default)s]")
    args = parser.parse_args(argv)
    set_process_title(args.service, args.port)
    if uvloop is not None:
        uvloop.run(serve(args.host, args.port, args.service))
    else:
        asyncio.run(serve(args.host, args.port, args.service))


if __name__ == "__main__":
    main()
