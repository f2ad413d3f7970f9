"""One line per request in a replica's output, and the replica's process title.

    2026-11-28 06:55:01 GET /api/v1/categories 200 1.3 ms

The line is written with one ``os.write`` to the replica's standard output when the response is
complete (its last body chunk was sent, or the handler failed before answering). It does not go
through the ``logging`` module, whose record, formatter and handler lock cost several times more
per request, and the date is formatted once per second, not per request. uvicorn's own access log
stays off for the same reason. ``SELFIELESS_ACCESS_LOG=0`` (or ``--no-access-log``) turns it off.

Health probes that pass are not logged: the orchestrator sends one a second to every replica, and
those lines would bury the requests. A failing probe is logged like any request.
"""

from __future__ import annotations

import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def set_process_title(service: str, port: int) -> None:
    """`selfieless: acts :8003` in ps and top, instead of every replica's identical command line."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # an optional nicety: the replica runs the same without it
        return
    setproctitle(f"selfieless: {service} :{port}")


HEALTH_PATHS = frozenset({"/api/v1/_health", "/ui/_health"})


class _Clock:
    """The wall-clock date as text, formatted again only when the second changes."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return self.text


def format_line(stamp: str, method: str, path: str, query: bytes, status: int, seconds: float) -> bytes:
    """The access-log line for one request (status 0 means no response was sent)."""
    target = path + "?" + query.decode("latin-1") if query else path
    shown = str(status) if status else "-"
    return f"{stamp} {method} {target} {shown} {seconds * 1000:.1f} ms\n".encode("utf-8", "replace")


class AccessLog:
    """Pure ASGI middleware writing `format_line` for every HTTP request to a file descriptor."""

    def __init__(self, app: ASGIApp, fd: int = 1, quiet_paths: frozenset[str] = HEALTH_PATHS) -> None:
        self.app = app
        self.fd = fd
        self.quiet_paths = quiet_paths
        self.clock = _Clock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        logged = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, logged
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            await send(message)
            if kind == "http.response.body" and not message.get("more_body", False) and not logged:
                logged = True
                self._write(scope, status, start)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if not logged:  # the handler raised, or the client went away mid-answer
                self._write(scope, status or 500, start)

    def _write(self, scope: Scope, status: int, start: float) -> None:
        if status < 400 and scope["path"] in self.quiet_paths:
            return
        line = format_line(self.clock.now(), scope["method"], scope["path"], scope.get("query_string", b""),
                           status, time.perf_counter() - start)
        try:
            os.write(self.fd, line)
        except OSError:
            pass  # a full disk or a closed output must not fail the request


def access_log_enabled() -> bool:
    return os.environ.get("SELFIELESS_ACCESS_LOG", "1").strip().lower() not in ("0", "false", "no", "off")
