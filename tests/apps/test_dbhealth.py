"""The health check's pure verdicts on database errors and on when to prove writes."""

import sqlite3

from sqlalchemy.exc import OperationalError

from selfieless.apps.common.dbhealth import is_lock_busy, needs_write_check


class _PgError(Exception):
    sqlstate = "55P03"


def test_a_held_lock_is_busy_not_dead():
    assert is_lock_busy(sqlite3.OperationalError("database is locked"))
    assert is_lock_busy(OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked")))
    assert is_lock_busy(_PgError("could not obtain lock on row"))
    assert is_lock_busy(Exception(1205, "Lock wait timeout exceeded"))
    assert is_lock_busy(Exception(3572, "NOWAIT is set"))


def test_other_failures_are_dead():
    assert not is_lock_busy(sqlite3.OperationalError("attempt to write a readonly database"))
    assert not is_lock_busy(sqlite3.OperationalError("no such table: request_counts"))
    assert not is_lock_busy(Exception(1045, "Access denied"))
    assert not is_lock_busy(OSError("disk full"))


def test_a_recent_write_is_proof_enough():
    assert needs_write_check(None, 100.0)
    assert not needs_write_check(99.5, 100.0)
    assert needs_write_check(99.0, 100.0)


class _Psycopg2Error(Exception):
    pgcode = "55P03"  # psycopg2 names the SQLSTATE pgcode, psycopg 3 sqlstate


def test_driver_errors_wrapped_by_sqlalchemy_are_read_from_orig():
    # What the health check really receives: SQLAlchemy's wrapper around the driver's error. The
    # wrapper's own args are not the driver's error code, so the code must come from `orig`.
    import pymysql

    busy_mysql = OperationalError("SELECT ... FOR UPDATE NOWAIT", {}, pymysql.err.OperationalError(3572, "NOWAIT"))
    assert busy_mysql.args[0] != 3572 and is_lock_busy(busy_mysql)
    assert is_lock_busy(OperationalError("SELECT", {}, pymysql.err.OperationalError(1205, "Lock wait timeout")))
    assert not is_lock_busy(OperationalError("SELECT", {}, pymysql.err.OperationalError(1045, "Access denied")))
    assert is_lock_busy(OperationalError("SELECT", {}, _Psycopg2Error("could not obtain lock")))
    assert is_lock_busy(_Psycopg2Error("could not obtain lock"))
    assert is_lock_busy(OperationalError("SELECT", {}, _PgError("x")))
    assert not is_lock_busy(OperationalError("SELECT", {}, Exception("server closed the connection")))
