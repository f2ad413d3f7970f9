"""MariaDB/MySQL and PostgreSQL on the event loop: asyncmy and asyncpg pools running SQL that
SQLAlchemy compiled once.

Through SQLAlchemy in the thread pool a one-row query cost 0.65-2 ms of CPU per request (the hand-off
to a thread and back, SQLAlchemy's execution layers, the blocking driver), 10-30 times the
query's own work. Here a statement is still written and compiled by SQLAlchemy (for the async
driver's dialect, so its parameter style and casts are the driver's), once; each request only
sends it on a pooled connection and reads the rows, without leaving the loop.

Each statement runs on its own in autocommit: the services' hot statements are single statements
(an UPDATE that adds, an INSERT ... SELECT), so each is atomic by itself. The pool holds at most
`size` connections; requests beyond that wait for one, up to ACQUIRE_TIMEOUT.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.engine import URL, make_url

from .dberrors import ConnectionLost, NoConnection, classify

ACQUIRE_TIMEOUT = 10.0  # s a request waits for a free pooled connection before it is a 503
CONNECT_TIMEOUT = 5.0


def async_dialect(backend: str):
    """The SQLAlchemy dialect whose compiled SQL the async driver of `backend` takes."""
    if backend == "postgresql":
        from sqlalchemy.dialects.postgresql.asyncpg import dialect
    else:
        from sqlalchemy.dialects.mysql.asyncmy import dialect
    return dialect()


class ServerPool:
    """What both drivers share: a read that met a connection the server had closed (a restart, a
    killed session) is tried once more, on a new one. A write is not retried: it may have
    committed before the connection went. (Database sorts the errors: dberrors.classify.)"""

    backend = ""

    def __init__(self, url: URL, size: int):
        self._url, self._size = url, size
        self._pool = None
        self._lock = asyncio.Lock()

    async def _ready(self):
        """The driver's pool, created on first use: on the loop that serves the requests."""
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await self._create(self._url)
        return self._pool

    async def _create(self, u: URL):
        raise NotImplementedError

    async def fetch(self, sql: str, args: tuple) -> list:
        try:
            return await self._fetch(sql, args)
        except Exception as exc:  # noqa: BLE001 - sorted, then re-raised
            if classify(exc) is not ConnectionLost:
                raise
        return await self._fetch(sql, args)

    async def execute(self, sql: str, args: tuple) -> int:
        return await self._execute(sql, args)

    async def _fetch(self, sql: str, args: tuple) -> list:
        raise NotImplementedError

    async def _execute(self, sql: str, args: tuple) -> int:
        raise NotImplementedError

    @property
    def held(self) -> int:
        """Connections this pool holds open to the server now."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def _keep_session(_conn) -> None:
    """asyncpg's default reset on every release is one more round trip (RESET ALL, UNLISTEN, ...;
    measured: 111 instead of 60 µs of CPU per pooled query). These connections run autocommit
    statements only and never change their session, so there is nothing to reset."""


class PostgresPool(ServerPool):
    """asyncpg: it also prepares each statement once per connection (its statement cache)."""

    backend = "postgresql"

    async def _create(self, u: URL):
        import asyncpg
        return await asyncpg.create_pool(
            host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username, password=u.password,
            database=u.database, min_size=0, max_size=self._size, timeout=CONNECT_TIMEOUT,
            max_inactive_connection_lifetime=300, reset=_keep_session)

    async def _acquire(self):
        pool = self._pool or await self._ready()
        return pool, await connecting(pool.acquire(timeout=ACQUIRE_TIMEOUT))

    async def _fetch(self, sql: str, args: tuple) -> list:
        pool, conn = await self._acquire()
        try:
            return await conn.fetch(sql, *args)
        finally:
            await pool.release(conn)

    async def _execute(self, sql: str, args: tuple) -> int:
        pool, conn = await self._acquire()
        try:
            status = await conn.execute(sql, *args)  # "UPDATE 1", "INSERT 0 1", "DELETE 3"
        finally:
            await pool.release(conn)
        return int(status.rsplit(" ", 1)[1])

    @property
    def held(self) -> int:
        return 0 if self._pool is None else self._pool.get_size()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class MysqlPool(ServerPool):
    """asyncmy, in autocommit."""

    backend = "mysql"

    async def _create(self, u: URL):
        import asyncmy
        return await asyncmy.create_pool(
            minsize=0, maxsize=self._size, pool_recycle=1800, host=u.host or "127.0.0.1",
            port=u.port or 3306, user=u.username or "", password=u.password or "",
            db=u.database, charset=u.query.get("charset", "utf8mb4"), autocommit=True,
            connect_timeout=CONNECT_TIMEOUT)

    async def _run(self, sql: str, args: tuple, rows: bool) -> Any:
        pool = self._pool or await self._ready()
        conn = await connecting(asyncio.wait_for(pool.acquire(), ACQUIRE_TIMEOUT))
        try:
            async with conn.cursor() as cur:
                count = await cur.execute(sql, args)
                return await cur.fetchall() if rows else count
        except BaseException:
            # A failed or cancelled statement may leave unread results behind: never reuse it.
            conn.close()
            raise
        finally:
            pool.release(conn)

    async def _fetch(self, sql: str, args: tuple) -> list:
        return await self._run(sql, args, rows=True)

    async def _execute(self, sql: str, args: tuple) -> int:
        return await self._run(sql, args, rows=False)

    @property
    def held(self) -> int:
        return 0 if self._pool is None else self._pool.size

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None


async def connecting(acquire):
    """A pooled connection, or NoConnection: whatever fails while a connection is being opened or
    waited for means there is none to be had, whatever the driver calls it (asyncmy, refused at
    max_connections, fails reading the server's answer with a RuntimeError of its own)."""
    try:
        return await acquire
    except Exception as exc:  # noqa: BLE001 - re-raised, sorted
        if classify(exc) is None:
            raise NoConnection(f"{type(exc).__name__}: {exc}") from exc
        raise


def open_pool(url: str, size: int) -> ServerPool:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return PostgresPool(parsed, size)
    return MysqlPool(parsed, size)

