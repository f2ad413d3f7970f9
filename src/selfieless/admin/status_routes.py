"""The admin API's read-only routes: status, events (a long poll), requests/s history, metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from selfieless.orchestrator.status import summarise, to_json

from . import metrics
from .context import AdminContext, error
from .history import KEEP_SECONDS, SAMPLE_INTERVAL

MAX_WAIT = 30.0          # longest long poll, seconds


async def status(ctx: AdminContext, request: Request) -> Response:
    limit = request.query_params.get("list")
    if limit is not None and not (limit.isdigit() and int(limit) >= 1):
        return error(400, f"list must be a whole number >= 1 (replicas listed per service), not {limit!r}")
    await ctx.fresh_counters()
    snap = ctx.orchestrator.snapshot()
    return JSONResponse(to_json(snap if limit is None else summarise(snap, int(limit))))


async def events(ctx: AdminContext, request: Request) -> Response:
    q = request.query_params
    try:
        after = int(q.get("after", "0"))
        wait = float(q.get("wait", "0"))
        limit = int(q["limit"]) if "limit" in q else None
    except ValueError:
        return error(400, "after and limit must be integers, wait a number of seconds")
    if after < 0 or (limit is not None and limit <= 0) or not 0 <= wait <= 3600:
        return error(400, "after must be >= 0, limit > 0, wait between 0 and 3600")
    log = ctx.orchestrator.events
    if after > log.last_id:
        # A cursor from an earlier run of the orchestrator: start from what exists now.
        after = 0
    got = log.since(after, limit)
    if not got and wait > 0:
        got = await _wait_unless(log.wait(after, min(wait, MAX_WAIT)), ctx.closing)
        if limit:
            got = got[:limit]
    return JSONResponse({"events": [e.to_dict() for e in got], "last_id": log.last_id,
                         "next": got[-1].id if got else after})


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


async def history(ctx: AdminContext, request: Request) -> Response:
    try:
        seconds = float(request.query_params.get("seconds", "300"))
    except ValueError:
        return error(400, "seconds must be a number")
    if not 0 < seconds <= KEEP_SECONDS:
        return error(400, f"seconds must be between 0 and {KEEP_SECONDS} (the history kept)")
    return JSONResponse({"interval": SAMPLE_INTERVAL, "seconds": seconds,
                         "services": ctx.history.series(seconds, time.time())})


async def metrics_text(ctx: AdminContext, request: Request) -> Response:
    await ctx.fresh_counters()
    # Async on purpose: the collector runs on the event loop thread, never in a worker thread.
    return Response(metrics.render(ctx.registry), media_type=metrics.CONTENT_TYPE)
