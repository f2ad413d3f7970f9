"""Database access shared by the services: engines for SQLite, MariaDB/MySQL and PostgreSQL.

Every replica of a service opens the same database, so the rules here are about sharing it:
SQLite runs in WAL mode with a busy timeout and takes its write lock up front (BEGIN IMMEDIATE)
so two processes never deadlock upgrading a read lock; schema creation tolerates another
replica creating the same tables at the same moment.

Where the work runs: a query on MariaDB/PostgreSQL waits on the network, so it runs in the thread
pool. A SQLite read takes microseconds and, in WAL mode, never waits for a writer, so it runs on
the event loop itself: handing it to a thread costs more than the query. A SQLite write can wait
for another process's write lock, so it goes to a thread, one for all of this process's writes.
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
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import Connection, Engine, MetaData, Text, create_engine, event
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")

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
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800, pool_size=8, max_overflow=8)


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
        if not raw.in_transaction:  # else inside a read of SqliteReads, which began it itself
            raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")


class _Compiled:
    """A statement compiled once for SQLite: its SQL and how to build its positional parameters."""

    __slots__ = ("sql", "names", "fixed")

    def __init__(self, sql: str, names: tuple[str, ...], fixed: dict):
        self.sql, self.names, self.fixed = sql, names, fixed

    def parameters(self, given: dict | None) -> tuple:
        if not self.names:
            return ()
        values = {**self.fixed, **given} if given else self.fixed
        return tuple(values[name] for name in self.names)


class _Rows:
    """The part of SQLAlchemy's Result that the services' reads use, over a sqlite3 cursor."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor):
        self._cursor = cursor

    def __iter__(self):
        return iter(self._cursor)

    def first(self):
        return self._cursor.fetchone()

    def scalar(self):
        row = self._cursor.fetchone()
        return None if row is None else row[0]

    def scalar_one(self):
        rows = self._cursor.fetchall()
        if not rows:
            raise NoResultFound("No row was found when one was required")
        if len(rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was required")
        return rows[0][0]

    def scalars(self):
        return (row[0] for row in self._cursor)

    def all(self) -> list:
        return self._cursor.fetchall()


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


class SqliteReads:
    """Reads on the SQLite driver's own connection, with SQL that SQLAlchemy compiled once.

    For a read that takes SQLite a few microseconds, SQLAlchemy's execution machinery (contexts,
    events, result metadata) cost about four times the query (measured: ~40 vs ~9 µs). The SQL,
    its parameters and the rows are the same: the statement is still written and compiled by
    SQLAlchemy, only its execution skips the layers. Statements whose types convert values on the
    way in or out (none of the services' reads do) go through SQLAlchemy as before.
    """

    MAX_STATEMENTS = 256  # statements built per call would otherwise be kept for ever

    def __init__(self, conn: Connection):
        self.conn = conn  # SQLAlchemy's connection: the fallback, and the owner of the driver's
        self.raw = conn.connection.dbapi_connection
        self._compiled: dict = {}

    def _compile(self, stmt) -> _Compiled | None:
        found = self._compiled.get(stmt, False)
        if found is False:
            found = compile_plain(stmt, self.conn.dialect)
            if len(self._compiled) < self.MAX_STATEMENTS:
                self._compiled[stmt] = found
        return found

    def execute(self, stmt, parameters: dict | None = None):
        compiled = self._compile(stmt)
        if compiled is None:
            return self.conn.execute(stmt, parameters)
        return _Rows(self.raw.execute(compiled.sql, compiled.parameters(parameters)))


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
    """An engine plus the two kinds of short transaction the services use."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        self.backend = self.engine.dialect.name
        # SQLite has one writer at a time. Threads of this process queue on a lock instead of in
        # SQLite's busy handler, whose sleeps grow with every retry and made the latency tail
        # seconds long under load; other processes still wait in the busy handler.
        self._write_lock = threading.Lock() if self.backend == "sqlite" else contextlib.nullcontext()
        # SQLite: the connection the event loop's own reads use (see `reading`), kept open rather
        # than checked out of the pool for every request. Each read is still its own transaction.
        self._loop_reader: Connection | None = None
        self._loop_reads: SqliteReads | None = None
        self._loop_thread: int | None = None
        # SQLite writes of this process take turns anyway (the lock above), so one thread runs
        # them all: a plain executor hand-off is lighter than the general thread pool's.
        self._writer = ThreadPoolExecutor(1, "sqlite-writer") if self.backend == "sqlite" else None
        # SQLite: the connection for `write_now`, and how many commits it made since a checkpoint.
        self._loop_writer: Connection | None = None
        self._loop_written: dict = {}
        self._since_checkpoint = 0
        # Monotonic time of this process's last committed write: the health check's write proof.
        self.last_write_proof: float | None = None
        # Server databases: a small pool of connections that stay in autocommit, for
        # `write_alone` (one round trip a write: no SET AUTOCOMMIT on checkout, no ROLLBACK on return).
        self._autocommit: Engine | None = None if self.backend == "sqlite" else create_engine(
            self.engine.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None,
            pool_pre_ping=True, pool_recycle=1800, pool_size=2, max_overflow=8)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        if self._loop_reads is not None and threading.get_ident() == self._loop_thread:
            raw = self._loop_reads.raw
            raw.execute("BEGIN")
            try:
                yield self._loop_reads
            finally:
                raw.execute("COMMIT")  # a read transaction: COMMIT just ends it
                if self._loop_reader.in_transaction():  # a statement SQLAlchemy ran (SqliteReads)
                    self._loop_reader.rollback()
            return
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

    async def reading(self, fn: Callable[..., T], *args) -> T:
        """Call `fn(*args)`, a function doing only reads, where reads are cheapest (module docstring)."""
        if self.backend == "sqlite":
            if self._loop_reader is None:
                self._loop_reader, self._loop_thread = self.engine.connect(), threading.get_ident()
                self._loop_reads = SqliteReads(self._loop_reader)
            return fn(*args)
        return await run_in_threadpool(fn, *args)

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
            compiled = self._loop_written.get(stmt, False)
            if compiled is False:
                compiled = self._loop_written[stmt] = compile_plain(stmt, self.engine.dialect)
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

    def write_alone(self, stmt, parameters: dict) -> None:
        """Run one write statement that the server commits as it runs it (autocommit).

        For a row every replica writes (the shared request counter): inside an explicit
        transaction its lock would be held from the statement until our COMMIT arrives, and a
        replica whose node is cut off between the two never sends it. The server keeps that
        lock until it notices the connection is dead (hours, with the default TCP settings), and
        every replica's next write of the row waits behind it: the whole service stalls
        (issue 29). In autocommit the lock ends with the statement, on the server, whatever
        happens to us afterwards. It also saves the COMMIT's round trip.

        SQLite has no network in between: its usual write transaction.
        """
        if self._autocommit is None:
            with self.write() as conn:
                conn.execute(stmt, parameters)
            return
        with self._autocommit.connect() as conn:
            conn.execute(stmt, parameters)
        self.last_write_proof = time.monotonic()

    def _checkpoint(self) -> None:
        """Copy the write-ahead log back into the database file (the writer thread's job)."""
        try:
            with self.engine.connect() as conn:
                conn.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.exception("WAL checkpoint failed (retried after the next writes)")

    async def writing(self, fn: Callable[..., T], *args) -> T:
        """Call `fn(*args)`, a function that writes, in a thread: SQLite's writer, else the pool."""
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

    def dispose(self) -> None:
        if self._autocommit is not None:
            self._autocommit.dispose()
            self._autocommit = None
        if self._loop_writer is not None:
            self._loop_writer.close()
            self._loop_writer = None
        if self._loop_reader is not None:
            self._loop_reader.close()
            self._loop_reader = self._loop_reads = None
        if self._writer is not None:
            self._writer.shutdown()
        self.engine.dispose()
