"""What a database error means to a request, whichever driver raised it.

Three kinds matter: a unique key already taken (a 400 of the route that inserts), no connection to
be had (the server's `max_connections` reached, this replica's pool exhausted for too long, the
server not accepting connections): a retryable 503 with a JSON body rather than a 500 storm, and a
connection the server closed under us (a restart), after which a read may be tried again once.
`classify` is pure: it reads error codes and types, so the table tests need no server.
"""

from __future__ import annotations

import logging
import time

from .errors import ApiError

log = logging.getLogger("selfieless.db")


class Duplicate(Exception):
    """A unique key is already taken (the route says which, in its own 400)."""


class DatabaseUnavailable(ApiError):
    """503 with Retry-After: the database could not be used for this request; nothing was written."""

    def __init__(self, message: str):
        super().__init__(503, message, {"Retry-After": "1"})


class NoConnection(DatabaseUnavailable):
    def __init__(self, detail: str = ""):
        super().__init__("the database has no free connection for this replica (too many connections); "
                         "retry shortly")
        self.detail = detail


class ConnectionLost(DatabaseUnavailable):
    def __init__(self, detail: str = ""):
        super().__init__("the connection to the database was lost; retry shortly")
        self.detail = detail


# MariaDB/MySQL client and server error numbers.
_MYSQL_DUPLICATE = {1062}
_MYSQL_NO_CONNECTION = {1040, 1203, 2003}  # too many connections, too many for this user, cannot connect
_MYSQL_LOST = {2006, 2013, 2055}           # gone away, lost during query, lost at handshake
# PostgreSQL SQLSTATEs.
_PG_DUPLICATE = {"23505"}
_PG_NO_CONNECTION = {"53300", "57P03"}      # too many connections, cannot connect now (starting)
_PG_LOST_CLASS = "08"                       # connection exception
_PG_ADMIN_SHUTDOWN = {"57P01", "57P02"}     # the server terminated the session


def classify(exc: BaseException) -> type[Exception] | None:
    """Duplicate, NoConnection, ConnectionLost, or None for anything else (then it is a bug or a
    failure of another kind, and stays a 500)."""
    if isinstance(exc, (Duplicate, DatabaseUnavailable)):
        return type(exc)
    name = type(exc).__name__
    if name == "TimeoutError" and type(exc).__module__ == "sqlalchemy.exc":
        return NoConnection  # SQLAlchemy's QueuePool had no connection to give in time
    orig = getattr(exc, "orig", None)
    if orig is not None and orig is not exc:  # SQLAlchemy's wrapper: the driver's error decides
        return classify(orig)
    # MySQL drivers first: asyncmy also sets a `sqlstate`, too coarse (23000 is any integrity error).
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and not isinstance(exc, OSError):
        code = args[0]
        if code in _MYSQL_DUPLICATE:
            return Duplicate
        if code in _MYSQL_NO_CONNECTION:
            return NoConnection
        if code in _MYSQL_LOST:
            return ConnectionLost
        return None
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(sqlstate, str):
        if sqlstate in _PG_DUPLICATE:
            return Duplicate
        if sqlstate in _PG_NO_CONNECTION:
            return NoConnection
        if sqlstate.startswith(_PG_LOST_CLASS) or sqlstate in _PG_ADMIN_SHUTDOWN:
            return ConnectionLost
        return None
    if name == "IntegrityError" and "UNIQUE constraint failed" in str(exc):  # sqlite3
        return Duplicate
    if isinstance(exc, (ConnectionRefusedError, TimeoutError)):
        return NoConnection  # nothing listens, or no pooled connection came free in time
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return ConnectionLost
    if name in ("ConnectionDoesNotExistError", "InterfaceError") and "closed" in str(exc):
        return ConnectionLost  # asyncpg: the connection was closed under the pool
    return None


class Reporter:
    """A warning when the database starts refusing connections, then at most one line per
    `every` seconds while it goes on (with how many requests were refused meanwhile), so a
    burst of 503s is one clear event in the log rather than a traceback per request."""

    def __init__(self, every: float = 5.0, clock=time.monotonic):
        self.every, self.clock = every, clock
        self._last: float | None = None
        self._since = 0

    def refused(self, service: str, detail: str) -> str | None:
        """The line to log for this refusal, or None when one was logged recently."""
        now = self.clock()
        self._since += 1
        if self._last is not None and now - self._last < self.every:
            return None
        self._last, count, self._since = now, self._since, 0
        return (f"event=db_no_connection service={service} refused={count} "
                f"action=answering 503 with Retry-After detail={detail[:200]!r}")

    def report(self, service: str, exc: DatabaseUnavailable) -> None:
        line = self.refused(service, getattr(exc, "detail", "") or exc.message)
        if line is not None:
            log.warning(line)
