"""The admin API: a small Starlette app over the running orchestrator and gateway.

Routes (JSON unless said otherwise):

- ``GET  /api/status[?list=N]``              the orchestrator's snapshot (orchestrator/status.py) as JSON;
                                              with ``list``, at most N replicas per service (status.summarise)
- ``GET  /api/events?after=ID&wait=S&limit=N`` events after cursor ID; with ``wait`` a long poll
- ``POST /api/scale``    ``{"service": str, "replicas": int}``
- ``POST /api/shutdown[?volumes=1]``         graceful stop of the whole ``selfieless up`` (volumes: a
                                              driver that removes its data volumes itself, swarm's
                                              on every node, does so at the end)
- ``GET  /api/logs?service=S[&port=P][&tail=N][&offsets=P:O,...]`` replica log files (process driver)
- ``GET  /api/history?seconds=S``             requests/s per service, one point a second (history.py)
- ``GET  /metrics``                          Prometheus text format
- ``GET  /``, ``/static/...``                the dashboard (static files, no data in them)

With a token configured every route but the static dashboard shell needs
``Authorization: Bearer <token>`` (compared with hmac.compare_digest); the page asks for the token
and sends it on every API call. Bad input answers 400 ``{"error": "...", "details": [...]}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from selfieless.orchestrator.status import summarise, to_json

from . import metrics
from .history import KEEP_SECONDS, SAMPLE_INTERVAL, RateHistory

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_WAIT = 30.0          # longest long poll, seconds
MAX_LOG_BYTES = 1 << 20  # one /api/logs answer carries at most this much per file


def error(status: int, message: str, details: list[str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status)


class ScaleRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    service: str
    replicas: int


def _pydantic_details(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"]) or "body"
        msg = "required" if err["type"] == "missing" else \
            "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(f"{where}: {msg}")
    return out


class BearerAuth:
    """Pure ASGI middleware: 401 JSON unless the bearer token matches (when one is configured)."""

    PUBLIC = ("/", "/index.html", "/favicon.ico")

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                given = v
                break
        scheme, _, cred = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(cred.strip(), self.token):
            resp = error(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="selfieless"'
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _public(self, path: str) -> bool:
        return path in self.PUBLIC or path.startswith("/static/")


class SecurityHeaders:
    """Pure ASGI middleware: every admin response forbids framing, sniffing and foreign content.

    The dashboard is same-origin static files with no inline script or style, so a strict policy
    costs nothing and stops a page elsewhere from framing the scale buttons (clickjacking) or a
    reflected value from running as script.
    """

    HEADERS = [
        (b"content-security-policy",
         b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
         b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _read_tail(path: Path, lines: int) -> tuple[str, int]:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        start = max(0, end - MAX_LOG_BYTES)
        fh.seek(start)
        data = fh.read(end - start)
    # The last `lines` lines as they are (an unfinished last one stays unfinished: the rest of it
    # comes with the next read); `lines` 0 is none at all (text[-0:] would be every line).
    text = data.decode(errors="replace").splitlines(keepends=True)[-lines:] if lines > 0 else []
    return "".join(text), end


def _read_from(path: Path, offset: int) -> tuple[str, int]:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        if offset > end:  # truncated or replaced: start over
            offset = 0
        fh.seek(offset)
        data = fh.read(min(end - offset, MAX_LOG_BYTES))
    return data.decode(errors="replace"), offset + len(data)


async def _wait_unless(waiting: Any, closing: asyncio.Event | None) -> list:
    """`await waiting`, or [] as soon as `closing` is set (the server is stopping: a long poll must
    not hold its shutdown up, nor be cut off with a 500)."""
    if closing is None:
        return await waiting
    task = asyncio.ensure_future(waiting)
    closed = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return []


def create_app(orchestrator: Any, gateway: Any, *, token: str | None = None,
               shutdown: Callable[[], Any] | None = None, state_dir: str | Path | None = None,
               closing: asyncio.Event | None = None, history: Any = None,
               up_overrides: dict[str, Any] | None = None) -> ASGIApp:
    """The admin ASGI app. `shutdown` is called (on the loop) by POST /api/shutdown; `closing` is set
    when the server stops, which ends every long poll at once. `state_dir` is no longer read: the
    driver says where its logs are (Driver.log_files). `up_overrides`: what `up` was given on its
    command line (port, driver), kept by POST /api/apply (apply_plan.with_up_overrides)."""
    registry = metrics.make_registry(gateway, orchestrator)
    history = history if history is not None else RateHistory()

    async def fresh_counters() -> None:
        # A gateway in its own process is read through a poll: make what we show current, so a
        # client that just sent requests sees them counted.
        refresh = getattr(gateway, "refresh", None)
        if refresh is not None:
            try:
                await refresh()
            except Exception:  # unreachable for a moment: show the last counters rather than fail
                pass

    async def status(request: Request) -> Response:
        limit = request.query_params.get("list")
        if limit is not None and not (limit.isdigit() and int(limit) >= 1):
            return error(400, f"list must be a whole number >= 1 (replicas listed per service), not {limit!r}")
        await fresh_counters()
        snap = orchestrator.snapshot()
        return JSONResponse(to_json(snap if limit is None else summarise(snap, int(limit))))

    async def events(request: Request) -> Response:
        q = request.query_params
        try:
            after = int(q.get("after", "0"))
            wait = float(q.get("wait", "0"))
            limit = int(q["limit"]) if "limit" in q else None
        except ValueError:
            return error(400, "after and limit must be integers, wait a number of seconds")
        if after < 0 or (limit is not None and limit <= 0) or not 0 <= wait <= 3600:
            return error(400, "after must be >= 0, limit > 0, wait between 0 and 3600")
        log = orchestrator.events
        if after > log.last_id:
            # A cursor from an earlier run of the orchestrator: start from what exists now.
            after = 0
        got = log.since(after, limit)
        if not got and wait > 0:
            got = await _wait_unless(log.wait(after, min(wait, MAX_WAIT)), closing)
            if limit:
                got = got[:limit]
        return JSONResponse({"events": [e.to_dict() for e in got], "last_id": log.last_id,
                             "next": got[-1].id if got else after})

    async def scale(request: Request) -> Response:
        raw = await request.body()
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return error(400, 'body must be JSON: {"service": "<name>", "replicas": <integer>}')
        if not isinstance(data, dict):
            return error(400, 'body must be a JSON object: {"service": "<name>", "replicas": <integer>}')
        try:
            req = ScaleRequest.model_validate(data)
        except ValidationError as e:
            details = _pydantic_details(e)
            return error(400, "invalid scale request: " + "; ".join(details), details)
        services = orchestrator.services
        if req.service not in services:
            return error(400, f"unknown service {req.service!r}; this stack has: {', '.join(sorted(services))}")
        try:
            await orchestrator.scale(req.service, req.replicas, reason="manual scale (admin API)")
        except ValueError as e:
            return error(400, str(e))
        svc = orchestrator.snapshot().services[req.service]
        return JSONResponse({"service": req.service, "desired": svc.desired, "actual": svc.actual})

    async def apply_route(request: Request) -> Response:
        # Imported here: the admin app must not pull the orchestrator in for a bare status page.
        from selfieless.orchestrator.apply_exec import apply_stack
        from selfieless.orchestrator.apply_plan import with_up_overrides
        from selfieless.orchestrator.port_shift import shift_ports
        from selfieless.orchestrator.stack import StackError, parse_stack

        try:
            data = json.loads(await request.body() or b"null")
        except ValueError:
            return error(400, 'body must be JSON: {"stack": {...}, "dry_run": false}')
        if not isinstance(data, dict) or not isinstance(data.get("stack"), dict):
            return error(400, 'body must be a JSON object with "stack": the stack file as a mapping')
        port, driver = data.get("port"), data.get("driver")
        ports_from = data.get("ports_from", (up_overrides or {}).get("ports_from"))
        if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535):
            return error(400, f'"port" must be a port number (0-65535), not {port!r}')
        if ports_from is not None and (not isinstance(ports_from, int) or isinstance(ports_from, bool)
                                       or not 1 <= ports_from <= 65535):
            return error(400, f'"ports_from" must be a port number (1-65535), not {ports_from!r}')
        if driver is not None and not isinstance(driver, str):
            return error(400, f'"driver" must be a driver name, not {driver!r}')
        try:
            new = shift_ports(parse_stack(with_up_overrides(data["stack"], up_overrides, port, driver),
                                          "request body"), ports_from)
        except StackError as e:
            return error(400, str(e).splitlines()[0], e.problems)
        result = await apply_stack(orchestrator, new, dry_run=bool(data.get("dry_run")))
        if not result.ok:
            return JSONResponse({"error": result.reason, **result.to_dict()}, status_code=409)
        return JSONResponse(result.to_dict())

    async def stack_route(request: Request) -> Response:
        """The file the running `up` was started from and what its command line changed, so that
        `apply` (and a second `up`) without a file re-apply that file, not the bundled one."""
        given = up_overrides or {}
        return JSONResponse({"file": given.get("stack_file"), "port": given.get("port"),
                             "driver": given.get("driver"), "ports_from": given.get("ports_from")})

    async def rollout_route(request: Request) -> Response:
        from selfieless.orchestrator import rollout_exec

        try:
            data = json.loads(await request.body() or b"null")
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("action") not in ("status", "history", "undo", "restart"):
            return error(400, 'body must be {"service": "<name>", "action": "status|history|undo|restart"}')
        service = data.get("service")
        svc = orchestrator.services.get(service) if isinstance(service, str) else None
        if svc is None or svc.dependency:
            return error(400, f"unknown service {service!r}; this stack has: {', '.join(sorted(orchestrator.services))}")
        action = data["action"]
        if action in ("status", "history"):
            hist = rollout_exec.history_json(orchestrator, service)
            return JSONResponse({"service": service, "rolling": svc.rollout_owner,
                                 "history": hist if action == "history" else hist[-1:]})
        if svc.rollout_owner is not None:
            return error(409, f"{service}: a rollout is already under way ({svc.rollout_owner})")
        try:
            r = await (rollout_exec.undo if action == "undo" else rollout_exec.restart)(orchestrator, service)
        except ValueError as e:
            return error(409, str(e))
        body = {"service": service, "outcome": r.outcome, "reason": r.reason, "seconds": round(r.seconds, 3)}
        return JSONResponse(body if r.outcome == "complete" else {"error": r.reason, **body},
                            status_code=200 if r.outcome == "complete" else 409)

    async def shutdown_route(request: Request) -> Response:
        if shutdown is None:
            return error(501, "this admin API cannot shut its orchestrator down")
        volumes = request.query_params.get("volumes", "0")
        if volumes not in ("0", "1", "false", "true"):
            return error(400, f"volumes must be 0 or 1, not {volumes!r}")
        if volumes in ("1", "true") and orchestrator is not None:
            # A driver that removes its volumes itself (swarm: on every node) does it after cleanup.
            orchestrator.remove_volumes_at_stop = True
        asyncio.get_running_loop().call_soon(shutdown)
        return JSONResponse({"status": "shutting down"}, status_code=202)

    async def logs(request: Request) -> Response:
        q = request.query_params
        service = q.get("service")
        if service not in orchestrator.services:
            return error(400, f"unknown service {service!r}; this stack has: {', '.join(sorted(orchestrator.services))}")
        try:
            port = int(q["port"]) if q.get("port") else None
            tail = int(q.get("tail", "100"))
            offsets = {}
            for part in filter(None, q.get("offsets", "").split(",")):
                p, _, o = part.partition(":")
                offsets[int(p)] = int(o)
        except ValueError:
            return error(400, "port and tail must be integers, offsets like 8000:1234,8001:0")
        files = orchestrator.driver.log_files(service)
        if not files and orchestrator.driver.name != "process":
            return error(501, f"logs are only kept for the process driver (this stack runs "
                              f"{getattr(orchestrator.driver, 'name', '?')}); use `docker logs` for containers")
        if port is not None:
            if port not in files:
                return error(404, f"no log for {service} on port {port}; have: {sorted(files) or 'none'}")
            files = {port: files[port]}
        out = []
        for p, path in sorted(files.items()):
            try:
                if p in offsets:
                    text, end = _read_from(path, offsets[p])
                else:
                    text, end = _read_tail(path, max(0, tail))
            except OSError:
                continue
            out.append({"port": p, "path": str(path), "text": text, "offset": end})
        return JSONResponse({"service": service, "files": out})

    async def history_route(request: Request) -> Response:
        try:
            seconds = float(request.query_params.get("seconds", "300"))
        except ValueError:
            return error(400, "seconds must be a number")
        if not 0 < seconds <= KEEP_SECONDS:
            return error(400, f"seconds must be between 0 and {KEEP_SECONDS} (the history kept)")
        return JSONResponse({"interval": SAMPLE_INTERVAL, "seconds": seconds,
                             "services": history.series(seconds, time.time())})

    async def metrics_route(request: Request) -> Response:
        await fresh_counters()
        # Async on purpose: the collector runs on the event loop thread, never in a worker thread.
        return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, f"no such route: {request.method} {request.url.path}")

    async def bad_method(request: Request, exc: Exception) -> Response:
        return error(405, f"method {request.method} not allowed on {request.url.path}")

    routes = [
        Route("/", index),
        Route("/index.html", index),
        Route("/api/status", status),
        Route("/api/events", events),
        Route("/api/scale", scale, methods=["POST"]),
        Route("/api/apply", apply_route, methods=["POST"]),
        Route("/api/stack", stack_route, methods=["GET"]),
        Route("/api/rollout", rollout_route, methods=["POST"]),
        Route("/api/shutdown", shutdown_route, methods=["POST"]),
        Route("/api/logs", logs),
        Route("/api/history", history_route),
        Route("/metrics", metrics_route),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method})
    return SecurityHeaders(BearerAuth(app, token))
