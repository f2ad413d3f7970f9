"""The shared request counter never leaves its row locked behind a replica that vanishes.

Every replica of a service adds to the same row of `request_counts`, and every counted request
waits for its add. If the add ran in a transaction, the row's lock would be held from the UPDATE
until our COMMIT reached the server; a replica whose node is cut off in between never sends it,
and the server keeps the lock until it notices the dead connection (hours), so every sibling's
add waits behind it and the whole service stalls (issue 29). The same holds for the health
check's write proof, a transaction of several round trips: it locks a row of its own. The tests
look at the counter row at the moment a statement has run on the server and before anything
else is said: the moment a node cut would freeze.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, MetaData, event, select

from selfieless.apps.common.db import Database
from selfieless.apps.common.dbhealth import is_lock_busy
from selfieless.apps.common.ops import OperationalContext, request_counts_table
from support.databases import fresh_database

SERVERS = ["mariadb", "postgresql"]


def _counter(url):
    db = Database(url)
    metadata = MetaData()
    counts = request_counts_table(metadata)
    db.create_schema(metadata)
    ops = OperationalContext("acts", db, counts, allow_crash=False)
    ops.ensure_counter()
    return db, counts, ops


@pytest.mark.parametrize("backend", SERVERS)
def test_the_counter_row_is_free_as_soon_as_the_increment_has_run(backend, tmp_path):
    with fresh_database(backend, tmp_path) as url:
        (db, counts, ops), sibling = _counter(url), Database(url)
        seen: list[str] = []

        def sibling_tries_the_row(conn, cursor, statement, parameters, context, executemany):
            if not statement.startswith("UPDATE request_counts") or seen:
                return
            try:
                with sibling.engine.connect() as other, other.begin():
                    other.execute(select(counts.c.n).where(counts.c.service == "acts").with_for_update(nowait=True))
                seen.append("free")
            except Exception as exc:
                seen.append("locked" if is_lock_busy(exc) else f"error: {exc}")

        event.listen(Engine, "after_cursor_execute", sibling_tries_the_row)
        try:
            ops.increment(3)
        finally:
            event.remove(Engine, "after_cursor_execute", sibling_tries_the_row)
            sibling.dispose()
        try:
            assert seen == ["free"]
            assert ops.count() == 3
            assert db.last_write_proof is not None  # a counted request still proves writes
        finally:
            db.dispose()


@pytest.mark.parametrize("backend", SERVERS)
def test_the_health_checks_write_proof_never_locks_the_counter_row(backend, tmp_path):
    """The check's write transaction spans round trips (lock, update, roll back): cut off in the
    middle, it must leave locked only a row that no request waits for."""
    with fresh_database(backend, tmp_path) as url:
        (db, counts, ops), sibling = _counter(url), Database(url)
        sibling_ops = OperationalContext("acts", sibling, counts, allow_crash=False)
        seen: list[str] = []

        def sibling_counts_a_request(conn, cursor, statement, parameters, context, executemany):
            if "FOR UPDATE" not in statement or conn.engine is sibling.engine or seen:
                return
            try:  # what every counted request of a sibling does, told not to wait
                with sibling.engine.connect() as other, other.begin():
                    other.execute(select(counts.c.n).where(counts.c.service == "acts").with_for_update(nowait=True))
                    other.execute(sibling_ops._add, {"which": "acts", "k": 1})
                seen.append("counted")
            except Exception as exc:
                seen.append("locked" if is_lock_busy(exc) else f"error: {exc}")

        db.last_write_proof = None  # no write of its own lately: the check must prove one itself
        event.listen(Engine, "after_cursor_execute", sibling_counts_a_request)
        try:
            assert ops.check_database() == "ok"
        finally:
            event.remove(Engine, "after_cursor_execute", sibling_counts_a_request)
            sibling.dispose()
        try:
            assert seen == ["counted"]
            assert ops.count() == 1
        finally:
            db.dispose()
