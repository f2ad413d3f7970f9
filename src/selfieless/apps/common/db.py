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
import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import Connection, Engine, MetaData, Text, create_engine, event
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError
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
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")


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
        self._loop_thread: int | None = None
        # SQLite writes of this process take turns anyway (the lock above), so one thread runs
        # them all: a plain executor hand-off is lighter than the general thread pool's.
        self._writer = ThreadPoolExecutor(1, "sqlite-writer") if self.backend == "sqlite" else None
        # Monotonic time of this process's last committed write: the health check's write proof.
        self.last_write_proof: float | None = None

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        if self._loop_reader is not None and threading.get_ident() == self._loop_thread:
            with self._loop_reader.begin():
                yield self._loop_reader
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
            return fn(*args)
        return await run_in_threadpool(fn, *args)

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
        if self._loop_reader is not None:
            self._loop_reader.close()
            self._loop_reader = None
        if self._writer is not None:
            self._writer.shutdown()
        self.engine.dispose()
