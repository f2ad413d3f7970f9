"""The two waits of a backend exchange, off the request path: for a ready backend, and for a
new connection to one (the only coroutines of the proxy; a pooled connection needs neither).

Each runs as the request's ``waiter`` task and hands the outcome back to its
:class:`~selfieless.gateway.backend_exchange.BackendExchange`: dispatch again, attach the new
connection, answer 503, or report a failed connect (which ``exchange.on_failure`` judges). A
request the client gave up meanwhile (``ex.wants(r)`` is False) is left alone.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .exchange import Failure
from .request import Request
from .upstream import UpstreamConnection

if TYPE_CHECKING:
    from .backend_exchange import BackendExchange


async def wait_for_backend(ex: BackendExchange, r: Request) -> None:
    """No ready backend: hold the request until one is added, or answer 503."""
    loop = ex.loop
    pool = r.pool
    if not ex.gw.wait_for_backend(pool.service):
        r.waiter = None
        ex.answer(r, 503, f"no ready replica for service {pool.service} (too many requests waiting)")
        return
    try:
        deadline = loop.time() + ex.no_backend_wait
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(pool.wait_ready(), remaining)
            except asyncio.TimeoutError:
                break
            if not ex.wants(r):
                return
            if pool.ready_count:
                r.waiter = None
                r.tries -= 1  # waiting is not an attempt
                ex.dispatch(r)
                return
    finally:
        ex.gw.stop_waiting(pool.service)
    r.waiter = None
    if ex.wants(r):
        ex.answer(r, 503, f"no ready replica for service {pool.service}")


async def open_connection(ex: BackendExchange, r: Request, rep) -> None:
    """A new connection to backend ``rep`` for ``r``."""
    gw = ex.gw
    try:
        _, conn = await asyncio.wait_for(
            ex.loop.create_connection(lambda: UpstreamConnection(gw, rep), rep.host, rep.port),
            ex.connect_timeout,
        )
    except asyncio.TimeoutError:
        ex.connect_failed(r, rep, Failure.CONNECT_TIMEOUT, "")
        return
    except OSError as exc:
        kind = Failure.RESET if isinstance(exc, ConnectionResetError) else Failure.REFUSED
        ex.connect_failed(r, rep, kind, exc.strerror or exc.__class__.__name__)
        return
    if conn.closed or conn.transport.is_closing():
        # Accepted, then reset before we could write (a backend dying with connections still
        # in its listen backlog): nothing was sent, so this is a refusal, not a lost exchange.
        ex.connect_failed(r, rep, Failure.RESET, "reset right after connect")
        return
    r.waiter = None
    if not ex.wants(r) or r.backend is not rep:
        # The client left meanwhile: keep the fresh connection for the next request.
        if not rep.put_idle(conn, gw.now, ex.up_max_idle):
            conn.close()
        return
    ex.attach(r, conn, False)
