"""The admin API: a small Starlette app over the running orchestrator and gateway.

Routes (JSON unless said otherwise):

- ``GET  /api/status[?list=N]``              the orchestrator's snapshot (orchestrator/status.py) as JSON;
                                              with ``list``, at most N replicas per service (status.summarise)
- ``GET  /api/events?after=ID&wait=S&limit=N`` events after cursor ID; with ``wait`` a long poll
- ``POST /api/scale``    ``{"service": str, "replicas": int}``
- ``POST /api/apply``    ``{"stack": {...}, "dry_run": bool[, "port", "driver", "ports_from"]}`` a new
                          stack file onto the running stack (409 when refused or rolled back)
- ``GET  /api/stack``                        the file the running ``up`` was started from, and its overrides
- ``POST /api/rollout``  ``{"service": str, "action": "status|history|undo|restart"}``
- ``POST /api/shutdown[?volumes=1]``         graceful stop of the whole ``selfieless up`` (volumes: a
                                              driver that removes its data volumes itself, swarm's
                                              on every node, does so at the end)
- ``POST /api/tls/reload``                   load the gateway's certificate files again (409 with
                                              the problems when one cannot be served)
- ``GET  /api/logs?service=S[&port=P][&tail=N][&offsets=P:O,...]`` replica log files (process driver)
- ``GET  /api/history?seconds=S``             requests/s per service, one point a second (history.py)
- ``GET  /metrics``                          Prometheus text format
- ``GET  /``, ``/static/...``                the dashboard (static files, no data in them)

With a token configured every route but the static dashboard shell needs
``Authorization: Bearer <token>`` (compared with hmac.compare_digest); the page asks for the token
and sends it on every API call. Bad input answers 400 ``{"error": "...", "details": [...]}``.

This module only lists the routes; their handlers live by topic in status_routes.py,
action_routes.py, stack_routes.py and log_routes.py, the middlewares in middleware.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from . import action_routes, log_routes, metrics, stack_routes, status_routes
from .context import AdminContext, bind, error
from .history import RateHistory
from .middleware import BearerAuth, SecurityHeaders

STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app(orchestrator: Any, gateway: Any, *, token: str | None = None,
               shutdown: Callable[[], Any] | None = None, state_dir: str | Path | None = None,
               closing: asyncio.Event | None = None, history: Any = None,
               up_overrides: dict[str, Any] | None = None) -> ASGIApp:
    """The admin ASGI app. `shutdown` is called (on the loop) by POST /api/shutdown; `closing` is set
    when the server stops, which ends every long poll at once. `state_dir` is no longer read: the
    driver says where its logs are (Driver.log_files). `up_overrides`: what `up` was given on its
    command line (port, driver), kept by POST /api/apply (apply_plan.with_up_overrides)."""
    ctx = AdminContext(orchestrator, gateway, history=history if history is not None else RateHistory(),
                       registry=metrics.make_registry(gateway, orchestrator), shutdown=shutdown,
                       closing=closing, up_overrides=up_overrides or {})
    api = [
        ("/api/status", status_routes.status, ["GET"]),
        ("/api/events", status_routes.events, ["GET"]),
        ("/api/scale", action_routes.scale, ["POST"]),
        ("/api/apply", stack_routes.apply, ["POST"]),
        ("/api/stack", stack_routes.stack, ["GET"]),
        ("/api/rollout", action_routes.rollout, ["POST"]),
        ("/api/shutdown", action_routes.shutdown, ["POST"]),
        ("/api/tls/reload", action_routes.tls_reload, ["POST"]),
        ("/api/logs", log_routes.logs, ["GET"]),
        ("/api/history", status_routes.history, ["GET"]),
        ("/metrics", status_routes.metrics_text, ["GET"]),
    ]
    routes = [Route("/", _index), Route("/index.html", _index),
              *(Route(path, bind(ctx, handler), methods=methods) for path, handler, methods in api),
              Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static")]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _bad_method})
    return SecurityHeaders(BearerAuth(app, token))


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, f"no such route: {request.method} {request.url.path}")


async def _bad_method(request: Request, exc: Exception) -> Response:
    return error(405, f"method {request.method} not allowed on {request.url.path}")
