"""MariaDB/MySQL and PostgreSQL on the event loop: asyncmy and asyncpg connections running SQL
that SQLAlchemy compiled once.

Through SQLAlchemy in the thread pool a one-row query cost 0.65-2 ms of CPU per request (the hand-off
to a thread and back, SQLAlchemy's execution layers, the blocking driver, and connections opened
and closed beyond the pool's size), 10-30 times the query's own work. Here a statement is still
written and compiled by SQLAlchemy (for the async driver's dialect, so its parameter style and
casts are the driver's), once; each request only sends it on a kept connection and reads the
rows, without leaving the loop.

Each statement runs on its own in autocommit: the services' hot statements are single statements
(an UPDATE that adds, an INSERT ... SELECT), so each is atomic by itself.

The connections are kept here (Connections), not in the drivers' pools: measured per `SELECT 1`,
asyncpg's pool cost 111 µs of CPU against 60 µs on a bare connection (it resets the session on
every release, one more round trip) and asyncmy's 79 against 60 µs (a condition variable and a
timeout task per checkout). Here a checkout is a list pop when a connection is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.engine import URL, make_url

from .dberrors import ConnectionLost, NoConnection, classify

ACQUIRE_TIMEOUT = 10.0  # s a request waits for a free connection before it is a 503
CONNECT_TIMEOUT = 5.0
STATEMENTS_PER_CONNECTION = 64  # prepared statements a MariaDB connection keeps (a service has ~15)

_SLOT = object()  # handed to a waiter instead of a connection: a slot is free, open one


def async_dialect(backend: str):
    """The SQLAlchemy dialect whose compiled SQL the async driver of `backend` takes."""
    if backend == "postgresql":
        from sqlalchemy.dialects.postgresql.asyncpg import dialect
    else:
        from sqlalchemy.dialects.mysql.asyncmy import dialect
    return dialect()


class Connections:
    """At most `size` connections: idle ones on a stack, requests waiting in line for one.

    A connection that failed is closed (`release(conn, broken=True)`) and its slot handed to the
    next waiter, which opens a new one. Any failure to open one, or a wait longer than
    ACQUIRE_TIMEOUT, is NoConnection (a 503 upstream).
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]], close: Callable[[Any], None], size: int):
        self._connect, self._close, self.size = connect, close, size
        self._idle: list = []
        self._waiting: deque[asyncio.Future] = deque()
        self.open = 0  # connections open or being opened

    async def acquire(self):
        if self._idle:
            return self._idle.pop()
        if self.open >= self.size:
            got = await self._wait()
            if got is not _SLOT:
                return got
        else:
            self.open += 1
        try:
            return await self._connect()
        except BaseException as exc:
            self._free_slot()
            if isinstance(exc, Exception) and classify(exc) is not NoConnection:
                # Whatever fails while a connection is opened means there is none to be had,
                # whatever the driver calls it (asyncmy, refused at max_connections, fails
                # reading the server's answer with a RuntimeError of its own).
                raise NoConnection(f"{type(exc).__name__}: {exc}") from exc
            raise

    async def _wait(self):
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting.append(waiter)
        timer = loop.call_later(ACQUIRE_TIMEOUT, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_back(waiter.result())  # given to us just as we were cancelled
            else:
                try:
                    self._waiting.remove(waiter)
                except ValueError:
                    pass
            raise
        finally:
            timer.cancel()

    def release(self, conn, broken: bool = False) -> None:
        if broken:
            try:
                self._close(conn)
            finally:
                self._free_slot()
            return
        self._hand_back(conn)

    def _hand_back(self, conn) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _free_slot(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(_SLOT)  # the slot passes to it: `open` stays counted
                return
        self.open -= 1

    def close_all(self) -> list:
        idle, self._idle = self._idle, []
        self.open -= len(idle)
        return idle


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(NoConnection(f"no connection came free within {ACQUIRE_TIMEOUT:g} s"))


class ServerPool:
    """One server database's connections and the two things the requests do with them. A read
    that met a connection the server had closed (a restart, a killed session) is tried once
    more, on a new one; a write is not: it may have committed before the connection went.
    (Database sorts the errors: dberrors.classify.)"""

    backend = ""

    def __init__(self, url: URL, size: int):
        self._url = url
        self.connections = Connections(self._open, self._close, size)

    async def fetch(self, sql: str, args: tuple) -> list:
        try:
            return await self._run(self._statement, sql, args, True)
        except Exception as exc:  # noqa: BLE001 - sorted, then re-raised
            if classify(exc) is not ConnectionLost:
                raise
        return await self._run(self._statement, sql, args, True)

    async def execute(self, sql: str, args: tuple) -> int:
        return await self._run(self._statement, sql, args, False)

    async def execute_with(self, sql: str, args: tuple, also: tuple[str, tuple]) -> int:
        """Run `sql` and the write `also` (SQL, arguments) in one transaction sent in one round
        trip; return the row count of `sql`. Either both are committed or neither is."""
        return await self._run(self._two_in_one, sql, args, also)

    async def execute_each(self, statements: list[tuple[str, tuple]], also: tuple[str, tuple] | None) -> list[int]:
        """Run the writes `statements` ((SQL, arguments) each), then `also` if given, in one
        transaction sent in one round trip; return each statement's row count. All are committed
        or none is: any statement's failure fails them all."""
        return await self._run(self._each_in_one, statements, also)

    async def _run(self, how, *work) -> Any:
        conn = await self.connections.acquire()
        try:
            result = await how(conn, *work)
        except BaseException:
            # A failed or cancelled statement may leave the connection mid-answer: never reuse it.
            self.connections.release(conn, broken=True)
            raise
        self.connections.release(conn)
        return result

    async def _open(self):
        raise NotImplementedError

    def _close(self, conn) -> None:
        raise NotImplementedError

    async def _statement(self, conn, sql: str, args: tuple, rows: bool) -> Any:
        """The statement's rows (`rows`), else its row count."""
        raise NotImplementedError

    async def _two_in_one(self, conn, sql: str, args: tuple, also: tuple[str, tuple]) -> int:
        raise NotImplementedError

    async def _each_in_one(self, conn, statements: list[tuple[str, tuple]], also: tuple[str, tuple] | None) -> list[int]:
        raise NotImplementedError

    @property
    def held(self) -> int:
        """Connections held open to the server now (or being opened)."""
        return self.connections.open

    async def close(self) -> None:
        for conn in self.connections.close_all():
            self._close(conn)


class PostgresPool(ServerPool):
    """asyncpg: it also prepares each statement once per connection (its statement cache)."""

    backend = "postgresql"

    async def _open(self):
        import asyncpg
        u = self._url
        return await asyncpg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username,
                                     password=u.password, database=u.database, timeout=CONNECT_TIMEOUT)

    def _close(self, conn) -> None:
        conn.terminate()

    async def _statement(self, conn, sql: str, args: tuple, rows: bool) -> Any:
        if rows:
            return await conn.fetch(sql, *args)
        status = await conn.execute(sql, *args)  # "UPDATE 1", "INSERT 0 1", "DELETE 3"
        return int(status.rsplit(" ", 1)[1])

    async def _two_in_one(self, conn, sql: str, args: tuple, also: tuple[str, tuple]) -> int:
        # One statement: `also` as a data-modifying WITH clause, which PostgreSQL runs to completion
        # whether or not the main statement reads it, in the main statement's transaction.
        also_sql, also_args = also
        return await self._statement(conn, _with_also(also_sql, sql, len(args)), args + also_args, False)

    async def _each_in_one(self, conn, statements: list[tuple[str, tuple]], also: tuple[str, tuple] | None) -> list[int]:
        # One statement again: each write a data-modifying WITH clause that returns a row per row
        # it wrote, the main SELECT counting them. Its SQL depends on the number of writes only,
        # so asyncpg prepares one per batch size.
        sql = _each_as_one(tuple((s, len(a)) for s, a in statements), also[0] if also else None)
        args = tuple(arg for _, a in statements for arg in a) + (also[1] if also else ())
        (row,) = await conn.fetch(sql, *args)
        return list(row)


class MysqlPool(ServerPool):
    """asyncmy, in autocommit, with prepared statements."""

    backend = "mysql"

    async def _open(self):
        import asyncmy
        u = self._url
        # stmt_cache_size: each statement is prepared once per connection and then sent as its
        # handle and binary arguments (measured: 35 -> 18 µs of CPU per 5-row SELECT).
        return await asyncmy.connect(host=u.host or "127.0.0.1", port=u.port or 3306, user=u.username or "",
                                     password=u.password or "", db=u.database,
                                     charset=u.query.get("charset", "utf8mb4"), autocommit=True,
                                     connect_timeout=CONNECT_TIMEOUT, stmt_cache_size=STATEMENTS_PER_CONNECTION)

    def _close(self, conn) -> None:
        conn.close()

    async def _statement(self, conn, sql: str, args: tuple, rows: bool) -> Any:
        async with conn.cursor() as cur:
            count = await cur.execute(sql, args)
            return await cur.fetchall() if rows else count

    async def _two_in_one(self, conn, sql: str, args: tuple, also: tuple[str, tuple]) -> int:
        # Several statements in one query (the text protocol: a prepared statement holds one), the
        # arguments escaped into it by the driver. The server runs them all from the one packet,
        # so a client cut off after sending it leaves no transaction open (issue 29). A failing
        # statement stops the query inside the transaction: rolled back here, and the caller
        # closes the connection anyway. `sql` goes first: the row `also` locks (the request
        # counter's) is never held by a transaction whose `sql` failed.
        (count,) = await self._each_in_one(conn, [(sql, args)], also)
        return count

    async def _each_in_one(self, conn, statements: list[tuple[str, tuple]], also: tuple[str, tuple] | None) -> list[int]:
        async with conn.cursor() as cur:
            parts = [cur.mogrify(sql, args) for sql, args in statements]
            if also is not None:
                parts.append(cur.mogrify(*also))
            query = f"START TRANSACTION; {'; '.join(parts)}; COMMIT"
            counts = []
            try:
                await cur.execute(query)
                for _ in statements:
                    await cur.nextset()      # each statement, in order
                    counts.append(cur.rowcount)
                if also is not None:
                    await cur.nextset()      # `also`
                await cur.nextset()          # COMMIT: its success is the transaction's
            except Exception:
                with contextlib.suppress(Exception):
                    await cur.execute("ROLLBACK")
                raise
            return counts


_PG_PARAMETER = re.compile(r"\$([0-9]+)")


@functools.lru_cache(maxsize=256)  # a few statements, each built once rather than per request
def _with_also(also: str, sql: str, taken: int) -> str:
    """PostgreSQL: `also` (an UPDATE) run as a WITH clause of `sql`, its $n parameters numbered
    after the `taken` ones of `sql`."""
    return f"WITH also_write AS ({_shifted(also, taken)}) {sql}"


def _shifted(sql: str, taken: int) -> str:
    """PostgreSQL: `sql` with its $n parameters numbered after `taken` others."""
    return _PG_PARAMETER.sub(lambda m: f"${int(m.group(1)) + taken}", sql)


@functools.lru_cache(maxsize=64)  # one per batch size of each statement
def _each_as_one(statements: tuple[tuple[str, int], ...], also: str | None) -> str:
    """PostgreSQL: the writes `statements` ((SQL, number of its parameters) each) and `also` as
    WITH clauses of one SELECT of each write's row count, the parameters numbered in that order."""
    clauses, taken = [], 0
    for i, (sql, n) in enumerate(statements):
        clauses.append(f"write_{i} AS ({_shifted(sql, taken)} RETURNING 1)")
        taken += n
    if also is not None:
        clauses.append(f"also_write AS ({_shifted(also, taken)})")
    counts = ", ".join(f"(SELECT count(*) FROM write_{i})" for i in range(len(statements)))
    return f"WITH {', '.join(clauses)} SELECT {counts}"


def open_pool(url: str, size: int) -> ServerPool:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return PostgresPool(parsed, size)
    return MysqlPool(parsed, size)
