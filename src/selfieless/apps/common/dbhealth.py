"""What a database error met by the health check means: busy (a lock held by another writer) or dead.

A replica's `_health` must prove it can read and write its database, but a legitimate long write
(a large category delete holds SQLite's only write lock for seconds) must not make every replica
look dead at once: the orchestrator would replace them all and kill the write. So the write check
waits only a short while for the lock, and a lock that is merely held by someone else is "busy",
which is healthy. Anything else (read-only, disk full, gone, bad credentials) is a failure.
"""

from __future__ import annotations

# How long the write check waits for the write lock before calling the database busy. Well inside
# the course's 1 s probe timeout, so a busy database still answers in time.
LOCK_WAIT = 0.3
# A write committed by this replica within this many seconds already proves writes work; the
# health check then does not take the write lock itself (it would not write on every call).
WRITE_PROOF_AGE = 1.0

# Lock-not-available errors: PostgreSQL SQLSTATE 55P03; MariaDB 1205 (lock wait timeout) and
# 3572 (NOWAIT could not lock).
_PG_LOCK_NOT_AVAILABLE = "55P03"
_MYSQL_LOCK_ERRORS = (1205, 3572)
_SQLITE_BUSY = ("database is locked", "database is busy", "database table is locked")


def is_lock_busy(exc: BaseException) -> bool:
    """True when `exc` (a SQLAlchemy error or the driver's own) only says a lock is held by another."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE or getattr(orig, "pgcode", None) == _PG_LOCK_NOT_AVAILABLE:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_LOCK_ERRORS:
        return True
    text = str(orig).lower()
    return any(s in text for s in _SQLITE_BUSY)


def needs_write_check(last_write_proof: float | None, now: float, max_age: float = WRITE_PROOF_AGE) -> bool:
    """Whether the health check must take the write lock itself this time."""
    return last_write_proof is None or now - last_write_proof >= max_age
