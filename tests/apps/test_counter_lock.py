"""The health check never leaves the shared request counter's row locked behind a replica that
vanishes.

Every replica of a service adds to the same row of `request_counts`, and every counted request
waits for its add (a statement of its own, in autocommit: see common/aiodb.py). The health
check's write proof is a transaction of several round trips (lock, update, roll back). A replica
whose node is cut off in the middle never sends the rollback, and the server keeps its locks
until it notices the dead connection (hours); on the counter's row that stalled every sibling's
counted request, so the whole service (issue 29). The check locks a row of its own. The test
looks at the counter row at the moment the check holds its lock: the moment a node cut would
freeze.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, MetaData, event, select

from selfieless.apps.common.db import Database
from selfieless.apps.common.dbhealth import is_lock_busy
from selfieless.apps.common.ops import OperationalContext, request_counts_table
from support.databases import fresh_database


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_the_health_checks_write_proof_never_locks_the_counter_row(backend, tmp_path):
    with fresh_database(backend, tmp_path) as url:
        db, sibling = Database(url), Database(url)
        metadata = MetaData()
        counts = request_counts_table(metadata)
        db.create_schema(metadata)
        ops = OperationalContext("acts", db, counts, allow_crash=False)
        ops.ensure_counter()
        seen: list[str] = []

        def sibling_counts_a_request(conn, cursor, statement, parameters, context, executemany):
            if "FOR UPDATE" not in statement or conn.engine is sibling.engine or seen:
                return
            try:  # what every counted request of a sibling does, told not to wait
                with sibling.engine.connect() as other, other.begin():
                    other.execute(select(counts.c.n).where(counts.c.service == "acts").with_for_update(nowait=True))
                    other.execute(ops._add, {"which": "acts", "k": 1})
                seen.append("counted")
            except Exception as exc:
                seen.append("locked" if is_lock_busy(exc) else f"error: {exc}")

        db.last_write_proof = None  # no write of its own lately: the check must prove one itself
        event.listen(Engine, "after_cursor_execute", sibling_counts_a_request)
        try:
            assert ops.check_database() == "ok"
            assert seen == ["counted"]
            with sibling.engine.connect() as conn:
                assert conn.execute(select(counts.c.n).where(counts.c.service == "acts")).scalar_one() == 1
        finally:
            event.remove(Engine, "after_cursor_execute", sibling_counts_a_request)
            sibling.dispose()
            db.dispose()
