"""The admin API's routes that act on running services: scale, rollout (status, history, undo,
restart), the gateway's certificates (reload) and shutdown of the whole `up`."""

from __future__ import annotations

import asyncio
import inspect
import json

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import AdminContext, error

ROLLOUT_ACTIONS = ("status", "history", "undo", "restart")


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


async def scale(ctx: AdminContext, request: Request) -> Response:
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
    orchestrator = ctx.orchestrator
    if req.service not in orchestrator.services:
        return ctx.unknown_service(req.service)
    try:
        await orchestrator.scale(req.service, req.replicas, reason="manual scale (admin API)")
    except ValueError as e:
        return error(400, str(e))
    svc = orchestrator.snapshot().services[req.service]
    return JSONResponse({"service": req.service, "desired": svc.desired, "actual": svc.actual})


async def rollout(ctx: AdminContext, request: Request) -> Response:
    from selfieless.orchestrator import rollout_exec

    try:
        data = json.loads(await request.body() or b"null")
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("action") not in ROLLOUT_ACTIONS:
        return error(400, 'body must be {"service": "<name>", "action": "status|history|undo|restart"}')
    orchestrator, service, action = ctx.orchestrator, data.get("service"), data["action"]
    svc = orchestrator.services.get(service) if isinstance(service, str) else None
    if svc is None or svc.dependency:
        return ctx.unknown_service(service)
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


async def tls_reload(ctx: AdminContext, request: Request) -> Response:
    reload = getattr(ctx.gateway, "reload_tls", None)
    if reload is None:
        return error(501, "this gateway cannot reload certificates")
    problems = reload()  # in-process: a list; a gateway process: a coroutine
    if inspect.isawaitable(problems):
        problems = await problems
    if problems:
        return error(409, "some certificates were not reloaded (the previous ones stay)", problems)
    return JSONResponse({"reloaded": True})


async def shutdown(ctx: AdminContext, request: Request) -> Response:
    if ctx.shutdown is None:
        return error(501, "this admin API cannot shut its orchestrator down")
    volumes = request.query_params.get("volumes", "0")
    if volumes not in ("0", "1", "false", "true"):
        return error(400, f"volumes must be 0 or 1, not {volumes!r}")
    if volumes in ("1", "true") and ctx.orchestrator is not None:
        # A driver that removes its volumes itself (swarm: on every node) does it after cleanup.
        ctx.orchestrator.remove_volumes_at_stop = True
    asyncio.get_running_loop().call_soon(ctx.shutdown)
    return JSONResponse({"status": "shutting down"}, status_code=202)
