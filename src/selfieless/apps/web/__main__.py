"""``python -m selfieless.apps.web --port 8200 [--host 127.0.0.1]``: run one web front-end replica.

Like the other services, the flags default to SELFIELESS_HOST / SELFIELESS_PORT from the environment.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from ..common.accesslog import AccessLog, access_log_enabled, set_process_title
from .app import create_app


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m selfieless.apps.web",
                                     description="Serve the SelfieLessActs single-page app under /ui/.")
    parser.add_argument("--host", default=env("SELFIELESS_HOST", "127.0.0.1"),
                        help="address to bind (env SELFIELESS_HOST) [%(default)s]")
    parser.add_argument("--port", type=int, default=int(env("SELFIELESS_PORT", "8200")),
                        help="port to bind (env SELFIELESS_PORT) [%(default)s]")
    parser.add_argument("--no-access-log", action="store_true",
                        default=not access_log_enabled(),
                        help="do not write a line per request to standard output (env SELFIELESS_ACCESS_LOG=0)")
    args = parser.parse_args(argv)
    set_process_title("web", args.port)
    print(f"web: serving /ui/ on {args.host}:{args.port} (pid {os.getpid()})", flush=True)
    app = create_app() if args.no_access_log else AccessLog(create_app())
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning",
                timeout_graceful_shutdown=5, proxy_headers=False, server_header=False)


if __name__ == "__main__":
    main()
