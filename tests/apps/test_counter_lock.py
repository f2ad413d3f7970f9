"""The shared request counter never leaves its row locked behind a replica that vanishes.

Every replica of a service adds to the same row of `request_counts`, and every counted request
waits for its add. If the add ran in a transaction, the row's lock would be held from the UPDATE
until our COMMIT reached the server; a replica whose node is cut off in between never sends it,
and the server keeps the lock until it notices the dead connection (hours), so every sibling's
add waits behind it and the whole service stalls (issue 29). The tests look at the row at the
moment the UPDATE has run on the server and before anything else is said: the moment a node
cut would freeze.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, MetaData, event, select

from selfieless.apps.common.db import Database
from selfieless.apps.common.dbhealth import is_lock_busy
from selfieless.apps.common.ops import OperationalContext, request_counts_table
from support.databases import fresh_database


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_the_counter_row_is_free_as_soon_as_the_increment_has_run(backend, tmp_path):
    with fresh_database(backend, tmp_path) as url:
        db, sibling = Database(url), Database(url)
        metadata = MetaData()
        counts = request_counts_table(metadata)
        db.create_schema(metadata)
        ops = OperationalContext("acts", db, counts, allow_crash=False)
        ops.ensure_counter()
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
