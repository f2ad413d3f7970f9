"""Assembles one microservice: FastAPI app, error handlers, operational routes, schema at start-up."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import APIRouter, FastAPI
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from .accesslog import AccessLog, set_process_title
from .db import Database
from .errors import install_error_handlers
from .hotpath import HotRoutes, ServiceApp
from .ops import OperationalContext, ReplicaMiddleware, operational_router, request_counts_table
from .settings import ServiceSettings


@dataclass
class ServiceContext:
    """Everything a service's routes need, built once per process."""

    name: str
    settings: ServiceSettings
    db: Database
    metadata: MetaData
    replica: OperationalContext
    hot: HotRoutes = field(default_factory=HotRoutes)  # routes ServiceApp answers itself
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def build_app(name: str, settings: ServiceSettings, metadata: MetaData,
              make_router: Callable[[ServiceContext], APIRouter], description: str) -> FastAPI:
    db = Database(settings.database_url, settings.db_pool, name)
    counts = request_counts_table(metadata)
    ctx = ServiceContext(name, settings, db, metadata, OperationalContext(name, db, counts, settings.allow_crash))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(db.create_schema, metadata)
        await run_in_threadpool(ctx.replica.ensure_counter)
        logging.getLogger(f"selfieless.{name}").info("database schema ready; serving")
        try:
            yield
        finally:
            for close in ctx.closers:
                await close()
            await db.close()
            logging.getLogger(f"selfieless.{name}").info("stopped")

    app = ServiceApp(title=f"SelfieLessActs {name} service", description=description, version="1.0",
                     lifespan=lifespan, redirect_slashes=False, docs_url="/docs",
                     openapi_url="/openapi.json", redoc_url=None)
    install_error_handlers(app)
    app.include_router(operational_router(ctx.replica, ctx.hot))
    app.include_router(make_router(ctx))
    app.add_middleware(ReplicaMiddleware, state=ctx.replica)
    app.state.ctx = ctx
    app.hot, app.replica = ctx.hot, ctx.replica
    return app


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per users check is noise
    name = app.state.ctx.name
    set_process_title(name, settings.port)
    log = logging.getLogger(f"selfieless.{name}")
    log.info("starting on %s:%d (pid %d, database %s, access log %s)", settings.host, settings.port, os.getpid(),
             make_url(settings.database_url).render_as_string(hide_password=True),
             "on" if settings.access_log else "off")
    # Outside every FastAPI layer, so a line shows exactly what was sent, 500s from errors included.
    asgi = AccessLog(app) if settings.access_log else app
    # ws="none": no route is a websocket, and uvicorn would otherwise import a websocket library at
    # every start, which a replacement replica waits for.
    uvicorn.run(asgi, host=settings.host, port=settings.port, loop="auto", http="auto", ws="none",
                access_log=False, log_level="warning", timeout_graceful_shutdown=5,
                proxy_headers=False, server_header=False)
