"""Operational endpoints every replica has: _health, _crash, _count, and the middleware behind them.

The request counter lives in the shared database so that every replica of a service gives the same
answer; the crash flag is deliberately per process, so one replica fails and its siblings do not.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter
from sqlalchemy import BigInteger, Column, MetaData, String, Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .counter import GroupCounter
from .db import COUNT_DUE, CountDue, Database, LockBusy
from .dbhealth import LOCK_WAIT, is_lock_busy, needs_write_check
from .errors import ApiError, error_response
from .responses import json_response

if TYPE_CHECKING:
    from .hotpath import HotRoutes  # which imports this module

API_PREFIX = "/api/v1"
# Connections to a server database this replica holds, sent with each passing health answer.
DB_CONNECTIONS_HEADER = "X-Selfieless-Db-Connections"
OPERATIONAL = ("/api/v1/_count", "/api/v1/_health", "/api/v1/_crash")


def request_counts_table(metadata: MetaData) -> Table:
    return Table(
        "request_counts", metadata,
        Column("service", String(32), primary_key=True),
        Column("n", BigInteger, nullable=False, default=0),
    )


def is_counted(path: str) -> bool:
    if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
        return False
    return not any(path == op or path.startswith(op + "/") for op in OPERATIONAL)


class OperationalContext:
    """What the operational routes need: the database, the counter table, the crash flag. (Not the
    orchestrator's replica.ReplicaState: this is one app process's own view of itself.)"""

    def __init__(self, service: str, db: Database, counts: Table, allow_crash: bool):
        self.service = service
        self.db = db
        self.counts = counts
        self.allow_crash = allow_crash
        self.crashed = False
        self.counter = GroupCounter(self._commit_count)
        # The health check's write proof locks this row, never the counter's: a replica cut off
        # in the middle of its check would otherwise leave the row every request needs locked.
        self.probe_row = f"{service}/health"
        # Built once: the counter's statements run on every counted request.
        self._add = (update(counts).where(counts.c.service == bindparam("which"))
                     .values(n=counts.c.n + bindparam("k", type_=BigInteger)))
        self._get = select(counts.c.n).where(counts.c.service == bindparam("which"))
        self._reset = update(counts).where(counts.c.service == bindparam("which")).values(n=0)

    def ensure_counter(self) -> None:
        """The service's counter row, and the row its health checks lock to prove writes."""
        for row in (self.service, self.probe_row):
            with self.db.read() as conn:
                exists = conn.execute(select(self.counts.c.n).where(self.counts.c.service == row)).first()
            if exists is None:
                try:
                    with self.db.write() as conn:
                        conn.execute(self.counts.insert().values(service=row, n=0))
                except IntegrityError:
                    pass  # a sibling replica inserted it first

    def count_due(self) -> CountDue:
        """This request's count, to be committed with its first write (db.CountDue)."""
        return CountDue(self._add, {"which": self.service, "k": 1}, self.counter.add)

    async def _commit_count(self, k: int) -> None:
        # The batch's own task: a request's owed count, if the task inherited one, is not this.
        COUNT_DUE.set(None)
        # One statement, `n = n + k`: exact whatever the number of replicas adding at once.
        await self.db.change(self._add, {"which": self.service, "k": k})

    async def count(self) -> int:
        return await self.db.fetch_value(self._get, {"which": self.service})

    async def reset(self) -> None:
        await self.db.change(self._reset, {"which": self.service})

    def check_database(self) -> str:
        """Prove the database can be read (always) and written (unless a write of this replica
        committed within WRITE_PROOF_AGE); changes nothing. Returns "ok", or "busy" when the
        write lock is held by another writer: a busy database is alive (see dbhealth.py)."""
        with self.db.read() as conn:
            conn.execute(select(self.counts.c.n).where(self.counts.c.service == self.service)).first()
        if not needs_write_check(self.db.last_write_proof, time.monotonic()):
            return "ok"
        row = self.counts.c.service == self.probe_row
        try:
            with self.db.write_briefly(LOCK_WAIT) as conn:
                # NOWAIT: on the server databases a row lock held by another transaction fails at
                # once instead of waiting (SQLite ignores it; write_briefly bounds its wait).
                conn.execute(select(self.counts.c.n).where(row).with_for_update(nowait=True)).first()
                conn.execute(update(self.counts).where(row).values(n=self.counts.c.n))
        except LockBusy:
            return "busy"
        except Exception as exc:
            if is_lock_busy(exc):
                return "busy"
            raise
        return "ok"


_CRASHED_BODY = b'{"error":"this replica was crashed on purpose by POST /api/v1/_crash"}'


class ReplicaMiddleware:
    """Answers 500 to everything once crashed; counts API requests before they are handled;
    answers HEAD like GET."""

    def __init__(self, app: ASGIApp, state: OperationalContext):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.state.crashed:
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(_CRASHED_BODY)).encode())]})
            await send({"type": "http.response.body", "body": _CRASHED_BODY})
            return
        method = scope["method"]
        if method == "HEAD":
            # Served as GET; the server still sends no body, as it keeps its own copy of the scope.
            scope = {**scope, "method": "GET"}
        if not is_counted(scope["path"]):
            await self.app(scope, receive, send)
        elif method in ("GET", "HEAD"):
            await self._read_while_counting(scope, receive, send)
        else:
            # Anything that may write waits for its count first: a failed count is an error that
            # must not follow a committed write.
            try:
                await self.state.counter.add()
            except ApiError as exc:  # the database is unavailable: a 503 the client may retry
                await error_response(exc.status, exc.message, exc.headers)(scope, receive, send)
                return
            await self.app(scope, receive, send)

    async def _read_while_counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A read changes nothing, so it runs while its count is being committed; only its answer
        waits for the commit. The loop keeps serving instead of idling through every commit."""
        counted = asyncio.ensure_future(self.state.counter.add())
        refused: list[ApiError] = []

        async def send_when_counted(message: Message) -> None:
            if not refused:
                try:
                    await counted  # raises if the count failed: the request then gets an error
                except ApiError as exc:  # the database is unavailable: its 503 replaces the answer
                    refused.append(exc)
                    await error_response(exc.status, exc.message, exc.headers)(scope, receive, send)
                    return
                await send(message)
        try:
            await self.app(scope, receive, send_when_counted)
        finally:
            try:
                await counted  # also before an unhandled error's 500, which is sent further out
            except ApiError:
                if not refused:
                    raise


def operational_router(state: OperationalContext, hot: HotRoutes) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, tags=["operations"])

    @router.get("/_health", summary="200 {} when this replica can read and write its database")
    async def health():
        try:
            await run_in_threadpool(state.check_database)
        except Exception as exc:  # any database failure makes the replica unhealthy
            return JSONResponse({"error": f"database check failed: {type(exc).__name__}"}, status_code=500)
        if state.db.backend == "sqlite":
            return {}
        # For the control plane's status and /metrics (orchestrator/probe.py reads it).
        return JSONResponse({}, headers={DB_CONNECTIONS_HEADER: str(state.db.held_connections)})

    @router.post("/_crash", summary="Fault injection: this replica answers 500 to everything from now on")
    async def crash():
        if not state.allow_crash:
            return JSONResponse({"error": "fault injection is disabled on this replica"}, status_code=403)
        state.crashed = True
        return {}

    @hot.get(router, "/_count", summary="Requests this service received under /api/v1 since the last reset")
    async def get_count():
        return json_response([await state.count()])

    @router.delete("/_count", summary="Reset the request counter")
    async def reset_count():
        await state.reset()
        return {}

    return router
