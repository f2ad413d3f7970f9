"""What every admin route is given: the running system it reads and acts on, and the error answer.

A route is a plain ``async def route(ctx, request)``; :func:`bind` turns it into the Starlette
endpoint (api.py lists them all), so the handlers live in small modules by topic and none of them
closes over the app factory's arguments.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def error(status: int, message: str, details: list[str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status)


@dataclass
class AdminContext:
    """`shutdown` is called (on the loop) by POST /api/shutdown; `closing` is set when the server
    stops, which ends every long poll at once; `up_overrides` is what `up` was given on its command
    line (port, driver, ports_from, stack_file)."""

    orchestrator: Any
    gateway: Any
    history: Any
    registry: Any
    shutdown: Callable[[], Any] | None = None
    closing: asyncio.Event | None = None
    up_overrides: dict[str, Any] = field(default_factory=dict)

    async def fresh_counters(self) -> None:
        # A gateway in its own process is read through a poll: make what we show current, so a
        # client that just sent requests sees them counted.
        refresh = getattr(self.gateway, "refresh", None)
        if refresh is not None:
            try:
                await refresh()
            except Exception:  # unreachable for a moment: show the last counters rather than fail
                pass

    def unknown_service(self, name: Any) -> JSONResponse:
        return error(400, f"unknown service {name!r}; this stack has: {', '.join(sorted(self.orchestrator.services))}")


Handler = Callable[[AdminContext, Request], Awaitable[Response]]


def bind(ctx: AdminContext, route: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint that runs `route` with `ctx`."""
    async def endpoint(request: Request) -> Response:
        return await route(ctx, request)

    endpoint.__name__ = route.__name__
    return endpoint
