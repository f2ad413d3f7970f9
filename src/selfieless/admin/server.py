"""Serving the admin API with uvicorn inside the orchestrator's own event loop.

:class:`AdminServer` binds its socket itself (so a busy port raises a normal ``OSError`` here,
instead of uvicorn calling ``sys.exit`` inside a task), leaves signal handling to its host (``up``
owns SIGINT/SIGTERM), and stops by setting ``should_exit``.

Binding to anything but a loopback address without a token is refused: the API can scale and shut
the stack down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from typing import Any, Callable

import uvicorn

from .api import create_app
from .history import SAMPLE_INTERVAL, RateHistory, api_request_counts

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090


class AdminConfigError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: we cannot know where it points, treat it as exposed


def check_exposure(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise AdminConfigError(
            f"refusing to serve the admin API on {host} without a token: it can scale and shut down the "
            f"stack. Pass --admin-token (or SELFIELESS_ADMIN_TOKEN), or bind to 127.0.0.1.")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the host process owns SIGINT/SIGTERM
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn spelling of the same thing
        pass


class AdminServer:
    """`await start()` binds and serves in the background; `await stop()` shuts it down."""

    def __init__(self, orchestrator: Any, gateway: Any, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 token: str | None = None, shutdown: Callable[[], Any] | None = None,
                 state_dir: str | None = None, up_overrides: dict | None = None) -> None:
        check_exposure(host, token)
        self.host, self.token = host, token
        self.requested_port = port
        self.port: int | None = None
        self.closing = asyncio.Event()  # set by stop(): long polls answer at once instead of holding it up
        self.history = RateHistory()
        self._counts = lambda: api_request_counts(orchestrator, gateway)
        self.app = create_app(orchestrator, gateway, token=token, shutdown=shutdown, state_dir=state_dir,
                              closing=self.closing, history=self.history, up_overrides=up_overrides)
        self._sampler: asyncio.Task | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # says TCP, and without it a keep-alive client waits 40 ms (Nagle + delayed ACK) per answer.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, server_header=False)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="admin-api")
        self._sampler = asyncio.create_task(self._sample(), name="admin-history")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what went wrong
                raise RuntimeError("admin API stopped while starting")
            await asyncio.sleep(0.01)

    async def _sample(self) -> None:
        """The requests/s history: the gateway's counters once a second, on the loop that owns them."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                self.history.record(time.time(), self._counts())
            except Exception:  # never let a sampling hiccup end the history
                pass
            next_at = max(next_at + SAMPLE_INTERVAL, loop.time())  # a stalled loop does not burst
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self.closing.set()
        if self._sampler is not None:
            self._sampler.cancel()
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, 5.0)
        except (asyncio.TimeoutError, Exception):
            self._server.force_exit = True
            self._task.cancel()
        if self._sock is not None:
            self._sock.close()
        self._server = None
