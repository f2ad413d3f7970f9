"""What a driver's error means to a request (common/dberrors.py), from the drivers' own error
types and codes, without a server; and the one-line event a burst of refusals logs."""

from __future__ import annotations

import sqlite3

import asyncmy.errors
import asyncpg.exceptions
import psycopg.errors
import pymysql.err
import pytest
import sqlalchemy.exc

from selfieless.apps.common.dberrors import ConnectionLost, Duplicate, NoConnection, Reporter, classify


def _wrapped(orig: Exception) -> sqlalchemy.exc.DBAPIError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize("exc, kind", [
    (asyncmy.errors.IntegrityError(1062, "Duplicate entry 'x' for key 'name_key'"), Duplicate),
    (asyncmy.errors.OperationalError(1040, "Too many connections"), NoConnection),
    (asyncmy.errors.OperationalError(1203, "User already has more than 'max_user_connections'"), NoConnection),
    (asyncmy.errors.OperationalError(2013, "Lost connection to MySQL server during query"), ConnectionLost),
    (asyncmy.errors.OperationalError(2006, "MySQL server has gone away"), ConnectionLost),
    (asyncmy.errors.ProgrammingError(1064, "You have an error in your SQL syntax"), None),
    (asyncmy.errors.IntegrityError(1452, "Cannot add or update a child row"), None),
    (_wrapped(pymysql.err.OperationalError(1040, "Too many connections")), NoConnection),
    (_wrapped(pymysql.err.IntegrityError(1062, "Duplicate entry")), Duplicate),
    (asyncpg.exceptions.UniqueViolationError("duplicate key value"), Duplicate),
    (asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"), NoConnection),
    (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), NoConnection),
    (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
     ConnectionLost),
    (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), ConnectionLost),
    (asyncpg.exceptions.UndefinedTableError("relation does not exist"), None),
    (_wrapped(psycopg.errors.TooManyConnections("sorry, too many clients already")), NoConnection),
    (_wrapped(psycopg.errors.UniqueViolation("duplicate key")), Duplicate),
    (sqlite3.IntegrityError("UNIQUE constraint failed: categories.name_key"), Duplicate),
    (sqlite3.IntegrityError("FOREIGN KEY constraint failed"), None),
    (sqlite3.OperationalError("database is locked"), None),
    (sqlalchemy.exc.TimeoutError("QueuePool limit of size 1 overflow 1 reached"), NoConnection),
    (TimeoutError(), NoConnection),
    (ConnectionRefusedError(111, "Connection refused"), NoConnection),
    (ConnectionResetError(104, "Connection reset by peer"), ConnectionLost),
    (ValueError("a bug"), None),
])
def test_classify(exc, kind):
    assert classify(exc) is kind


def test_a_burst_of_refusals_is_one_line_then_one_per_interval():
    now = [100.0]
    reporter = Reporter(every=5.0, clock=lambda: now[0])
    first = reporter.refused("acts", "Too many connections")
    assert first is not None and "event=db_no_connection" in first and "refused=1" in first
    for _ in range(40):
        now[0] += 0.1
        assert reporter.refused("acts", "Too many connections") is None
    now[0] += 1.5
    later = reporter.refused("acts", "Too many connections")
    assert later is not None and "refused=41" in later
