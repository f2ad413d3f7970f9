"""Database access shared by the services: engines for SQLite, MariaDB/MySQL and PostgreSQL.

Every replica of a service opens the same database, so the rules here are about sharing it:
SQLite runs in WAL mode with a busy timeout and takes its write lock up front (BEGIN IMMEDIATE)
so two processes never deadlock upgrading a read lock; schema creation tolerates another
replica creating the same tables at the same moment.

Where the work runs. The requests' statements go through `fetch` and `change`, on the event loop:
each is one statement, compiled once by SQLAlchemy and handed straight to a driver. On MariaDB
and PostgreSQL that driver is asynchronous (aiodb.py: asyncmy, asyncpg), with at most `pool_size`
connections. A SQLite read takes microseconds and, in WAL mode, never waits for a writer, so it
runs on the loop as a plain call; a SQLite write runs on the loop when the write lock is free at
that instant (`write_now`), else in the one writer thread (it may wait for another process).
What takes several statements in one transaction (deleting a category, the health check) runs
through SQLAlchemy in a thread (`read`, `write`, `writing`), on an engine of at most
SYNC_POOL connections.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import sqlite3
import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from sqlalchemy import Connection, Engine, MetaData, Text, create_engine, event
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from .aiodb import ServerPool, async_dialect, open_pool
from .counter import SharedReads
from .dberrors import DatabaseUnavailable, Duplicate, Reporter, classify
from .settings import DEFAULT_DB_POOL

T = TypeVar("T")

# The threaded engine's connections on the server databases: rare multi-statement writes and the
# health check. A replica thus holds at most pool_size + SYNC_POOL connections.
SYNC_POOL = 2

log = logging.getLogger("selfieless.db")

# TEXT is 64 KiB on MySQL: images and long captions need LONGTEXT there. The binary collation
# keeps comparisons case-sensitive, like every other backend.
LongText = Text().with_variant(mysql.LONGTEXT(collation="utf8mb4_bin"), "mysql", "mariadb")


def name_key(name: str) -> str:
    """Unique, case-sensitive key for a name of any length (MySQL cannot index long TEXT)."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def normalise_url(url: str) -> str:
    """Pick the drivers this project ships with when a URL names only the database kind."""
    parsed = make_url(url)
    driver = {"mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql", "postgresql": "postgresql+psycopg",
              "postgres": "postgresql+psycopg"}.get(parsed.drivername)
    if driver:
        parsed = parsed.set(drivername=driver)
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=8, max_overflow=8)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800, pool_size=1, max_overflow=SYNC_POOL - 1,
                         pool_timeout=10)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # We issue BEGIN ourselves (below); the driver's implicit transactions would get in the way.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        write = conn.get_execution_options().get("write", False)
        # Straight to the driver: this runs for every transaction, and SQLAlchemy's statement
        # machinery (events, result objects) costs more than SQLite's BEGIN itself.
        raw = conn.connection.dbapi_connection
        if not raw.in_transaction:
            raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")


class CountDue:
    """A counted request's increment of the shared request counter, still owed: it must be committed
    before or with the request's first write (a write is never committed uncounted).

    On a server database `Database.change` commits it in the same transaction as that write, sent
    in the same round trip: one commit per upvote or upload instead of two in a row, each a log
    flush of the server's. Every other way of writing pays it first (`settle`), and a request that
    wrote nothing pays it before its answer (hotpath.py).
    """

    __slots__ = ("stmt", "parameters", "_pay", "paid")

    def __init__(self, stmt, parameters: dict, pay: Callable[[], Awaitable[None]]):
        self.stmt, self.parameters, self._pay = stmt, parameters, pay
        self.paid = False

    async def settle(self) -> None:
        if not self.paid:
            await self._pay()
            self.paid = True

    @classmethod
    def together(cls, dues: list[CountDue]) -> CountDue:
        """One increment for all of `dues` (the counter's parameter `k` is how many it adds)."""
        async def pay_each() -> None:
            for due in dues:
                await due.settle()
        return cls(dues[0].stmt, {**dues[0].parameters, "k": len(dues)}, pay_each)


# The count the request being served still owes (None: nothing owed, or not a counted write).
COUNT_DUE: ContextVar[CountDue | None] = ContextVar("selfieless_count_due", default=None)


class _Compiled:
    """A statement compiled once for the event loop's driver: its SQL and how to build its positional
    parameters."""

    __slots__ = ("sql", "names", "fixed")

    def __init__(self, sql: str, names: tuple[str, ...], fixed: dict):
        self.sql, self.names, self.fixed = sql, names, fixed

    def parameters(self, given: dict | None) -> tuple:
        if not self.names:
            return ()
        values = {**self.fixed, **given} if given else self.fixed
        return tuple(values[name] for name in self.names)


def compile_plain(stmt, dialect) -> _Compiled | None:
    """`stmt` compiled for the driver, or None when its types convert values on the way in or out
    (then only SQLAlchemy runs it right)."""
    compiled = stmt.compile(dialect=dialect)
    if compiled._bind_processors or any(col[3].dialect_impl(dialect).result_processor(dialect, None) is not None
                                        for col in compiled._result_columns):
        return None
    names = tuple(compiled.positiontup or ())
    binds = compiled.binds
    fixed = {name: binds[name].effective_value for name in names if not binds[name].required}
    return _Compiled(str(compiled), names, fixed)


# Commits `write_now` makes before the writer thread checkpoints the WAL (SQLite's own default
# is every 1,000 pages; a counter commit writes one or two).
CHECKPOINT_EVERY = 500


def _is_sqlite_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class LockBusy(Exception):
    """The write lock is held by another writer: the database is busy, not broken."""


class Database:
    """An engine, the event loop's driver for the server databases, and the short transactions
    the services use."""

    MAX_STATEMENTS = 256  # statements built per call would otherwise be compiled and kept for ever

    def __init__(self, url: str, pool_size: int = DEFAULT_DB_POOL, service: str = ""):
        self.engine = make_engine(url)
        self.backend = self.engine.dialect.name
        self.service = service
        self.pool_size = pool_size
        # SQLite has one writer at a time. Threads of this process queue on a lock instead of in
        # SQLite's busy handler, whose sleeps grow with every retry and made the latency tail
        # seconds long under load; other processes still wait in the busy handler.
        self._write_lock = threading.Lock() if self.backend == "sqlite" else contextlib.nullcontext()
        # The server databases' connections for `fetch` and `change`; SQLite's are the two below.
        self._server: ServerPool | None = None
        self._dialect = self.engine.dialect
        if self.backend != "sqlite":
            self._server = open_pool(normalise_url(url), pool_size)
            self._dialect = async_dialect(self.backend)
        self._statements: dict = {}  # statement -> _Compiled (None: only SQLAlchemy runs it)
        # Server databases: identical reads in flight at once share one query (counter.py). A
        # SQLite read completes before the next request is even parsed: nothing to share.
        self._shared_reads = SharedReads(self._server_fetch)
        # SQLite: the connection the event loop's reads use, kept open rather than checked out of
        # the pool for every request; in autocommit, each statement is its own read transaction.
        self._loop_reader: Connection | None = None
        # SQLite writes of this process take turns anyway (the lock above), so one thread runs
        # them all: a plain executor hand-off is lighter than the general thread pool's.
        self._writer = ThreadPoolExecutor(1, "sqlite-writer") if self.backend == "sqlite" else None
        # SQLite: the connection for `write_now`, and how many commits it made since a checkpoint.
        self._loop_writer: Connection | None = None
        self._since_checkpoint = 0
        # Monotonic time of this process's last committed write: the health check's write proof.
        self.last_write_proof: float | None = None
        self._refusals = Reporter()

    def _compiled(self, stmt) -> _Compiled | None:
        found = self._statements.get(stmt, False)
        if found is False:
            found = compile_plain(stmt, self._dialect)
            if found is None and self._server is not None:
                raise TypeError(f"statement converts values on the way in or out, which only SQLAlchemy "
                                f"does; the event loop's driver cannot run it: {stmt}")
            if len(self._statements) < self.MAX_STATEMENTS:
                self._statements[stmt] = found
        return found

    def _failed(self, exc: Exception) -> Exception:
        """The error a statement's failure becomes: Duplicate, a 503 (logged as one event per burst),
        or the error itself."""
        kind = classify(exc)
        if kind is None:
            return exc
        if isinstance(exc, kind):
            failure = exc
        else:
            failure = kind(str(exc)) if kind is not Duplicate else Duplicate(str(exc))
        if isinstance(failure, DatabaseUnavailable):
            self._refusals.report(self.service, failure)
        return failure

    async def fetch(self, stmt, parameters: dict | None = None) -> list:
        """The rows of one read statement (tuples, or records indexable like them)."""
        compiled = self._compiled(stmt)
        try:
            if self._server is not None:
                return await self._shared_reads.read((compiled.sql, compiled.parameters(parameters)))
            if compiled is None:
                with self.read() as conn:
                    return conn.execute(stmt, parameters).all()
            if self._loop_reader is None:
                self._loop_reader = self.engine.connect()
            raw = self._loop_reader.connection.dbapi_connection
            return raw.execute(compiled.sql, compiled.parameters(parameters)).fetchall()
        except Exception as exc:
            raise self._failed(exc) from exc

    async def _server_fetch(self, key: tuple) -> list:
        sql, args = key
        return await self._server.fetch(sql, args)

    async def fetch_value(self, stmt, parameters: dict | None = None):
        """The first column of the first row, or None when there is no row."""
        rows = await self.fetch(stmt, parameters)
        return rows[0][0] if rows else None

    async def change(self, stmt, parameters: dict | None = None) -> int:
        """Run one write statement in its own transaction and return its row count once it is
        committed. Raises Duplicate when it would repeat a unique key (and changed nothing)."""
        due = COUNT_DUE.get()
        try:
            if self._server is not None:
                compiled = self._compiled(stmt)
                if due is not None and not due.paid:
                    count = self._compiled(due.stmt)
                    rows = await self._server.execute_with(compiled.sql, compiled.parameters(parameters),
                                                           (count.sql, count.parameters(due.parameters)))
                    due.paid = True
                else:
                    rows = await self._server.execute(compiled.sql, compiled.parameters(parameters))
                self.last_write_proof = time.monotonic()
                return rows
            if due is not None:
                await due.settle()
            rows = self.write_now(stmt, parameters)
            if rows is None:
                rows = await self.writing(self._change_in_thread, stmt, parameters)
            return rows
        except Exception as exc:
            raise self._failed(exc) from exc

    async def change_for(self, dues: list[CountDue | None], stmt, parameters: dict) -> int:
        """`change`, as the one write of several requests (a batch of them, common/counter.py):
        the counts they owe are committed with it, as one increment, or they stay owed."""
        owed = [due for due in dues if due is not None and not due.paid]
        together = CountDue.together(owed) if owed else None
        token = COUNT_DUE.set(together)
        try:
            rows = await self.change(stmt, parameters)
        finally:
            COUNT_DUE.reset(token)
        if together is not None and together.paid:
            for due in owed:
                due.paid = True
        return rows

    async def change_each(self, stmt, parameter_list: list[dict], dues: list[CountDue | None]) -> list[int]:
        """A server database: the write `stmt` once per parameters of `parameter_list`, all in one
        transaction and round trip, with the counts `dues` owe (as one increment); each run's row
        count once all are committed. Any run's failure fails them all and leaves the counts owed
        (a Duplicate: nothing was written)."""
        compiled = self._compiled(stmt)
        statements = [(compiled.sql, compiled.parameters(p)) for p in parameter_list]
        owed = [due for due in dues if due is not None and not due.paid]
        also = None
        if owed:
            together = CountDue.together(owed)
            count = self._compiled(together.stmt)
            also = (count.sql, count.parameters(together.parameters))
        try:
            rows = await self._server.execute_each(statements, also)
        except Exception as exc:
            raise self._failed(exc) from exc
        for due in owed:
            due.paid = True
        self.last_write_proof = time.monotonic()
        return rows

    def _change_in_thread(self, stmt, parameters: dict | None) -> int:
        with self.write() as conn:
            return conn.execute(stmt, parameters).rowcount

    @property
    def folds_counts(self) -> bool:
        """Whether `change` commits an owed count together with the write (COUNT_DUE)."""
        return self._server is not None

    @property
    def held_connections(self) -> int:
        """Connections this replica holds open to a server database now (0 on SQLite)."""
        if self._server is None:
            return 0
        pool = self.engine.pool
        return self._server.held + pool.checkedin() + pool.checkedout()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def write(self, commit: bool = True) -> Iterator[Connection]:
        """A write transaction; `commit=False` rolls it back (a probe that changes nothing)."""
        with self._write_lock, self.engine.connect().execution_options(write=True) as conn:
            tx = conn.begin()
            try:
                yield conn
            except BaseException:
                tx.rollback()
                raise
            if commit:
                tx.commit()
            else:
                tx.rollback()
            self.last_write_proof = time.monotonic()

    @contextlib.contextmanager
    def write_briefly(self, lock_wait: float) -> Iterator[Connection]:
        """A write transaction that is always rolled back and waits at most about `lock_wait`
        seconds for SQLite's write lock; raises LockBusy when another writer holds it. (On the
        server databases the caller locks its rows with NOWAIT instead.)"""
        if self.backend != "sqlite":
            with self.write(commit=False) as conn:
                yield conn
            return
        if not self._write_lock.acquire(timeout=lock_wait):
            raise LockBusy("this replica's own write is holding the database")
        try:
            with self.engine.connect().execution_options(write=True) as conn:
                raw = conn.connection.dbapi_connection
                raw.execute(f"PRAGMA busy_timeout = {int(lock_wait * 1000)}")
                try:
                    tx = conn.begin()  # BEGIN IMMEDIATE: the write lock, or "database is locked"
                    try:
                        yield conn
                    finally:
                        tx.rollback()
                finally:
                    raw.execute("PRAGMA busy_timeout = 30000")
            self.last_write_proof = time.monotonic()
        finally:
            self._write_lock.release()

    def write_now(self, stmt, parameters: dict) -> int | None:
        """SQLite, on the event loop: run one plain write statement in its own transaction at
        once when no writer holds the database, and return its row count once it is committed.
        Returns None, having changed nothing, when a writer (of this process or another) holds
        it, and on the server databases: then use `writing`.

        A short UPDATE commits in tens of microseconds in WAL mode (no fsync at commit with
        synchronous=NORMAL); handing it to the writer thread cost several times that on the
        loop's own core. The loop never waits: the lock is tried, not waited for (busy_timeout 0).
        """
        if self.backend != "sqlite" or not self._write_lock.acquire(blocking=False):
            return None
        try:
            if self._loop_writer is None:
                self._loop_writer = self.engine.connect()
                raw = self._loop_writer.connection.dbapi_connection
                raw.execute("PRAGMA busy_timeout = 0")
                # Checkpoints write and fsync the database file: the writer thread does them (below).
                raw.execute("PRAGMA wal_autocheckpoint = 0")
            raw = self._loop_writer.connection.dbapi_connection
            compiled = self._compiled(stmt)
            if compiled is None:
                return None
            try:
                raw.execute("BEGIN IMMEDIATE")
                rows = raw.execute(compiled.sql, compiled.parameters(parameters)).rowcount
                raw.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                if _is_sqlite_busy(exc):
                    return None  # another process is writing: nothing was done here
                raise
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
        finally:
            self._write_lock.release()
        self.last_write_proof = time.monotonic()
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self._writer.submit(self._checkpoint)
        return rows

    def _checkpoint(self) -> None:
        """Copy the write-ahead log back into the database file (the writer thread's job)."""
        try:
            with self.engine.connect() as conn:
                conn.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.exception("WAL checkpoint failed (retried after the next writes)")

    async def writing(self, fn: Callable[..., T], *args) -> T:
        """Call `fn(*args)`, a function that writes, in a thread: SQLite's writer, else the pool."""
        due = COUNT_DUE.get()
        if due is not None:
            await due.settle()
        if self._writer is not None:
            return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)
        return await run_in_threadpool(fn, *args)

    def create_schema(self, metadata: MetaData, attempts: int = 20) -> None:
        """Create missing tables; another replica doing the same at the same time is fine."""
        for attempt in range(attempts):
            try:
                metadata.create_all(self.engine, checkfirst=True)
                return
            except DBAPIError as exc:
                # Lost a race with a sibling replica ("already exists"), or SQLite was busy.
                if attempt == attempts - 1:
                    raise
                log.info("schema creation retry after: %s", exc.orig)
                time.sleep(0.05 + random.random() * 0.2)

    async def close(self) -> None:
        """Close the event loop's connections (on the loop that opened them), then the rest."""
        if self._server is not None:
            await self._server.close()
        self.dispose()

    def dispose(self) -> None:
        if self._loop_writer is not None:
            self._loop_writer.close()
            self._loop_writer = None
        if self._loop_reader is not None:
            self._loop_reader.close()
            self._loop_reader = None
        if self._writer is not None:
            self._writer.shutdown()
        self.engine.dispose()
