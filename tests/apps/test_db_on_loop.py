"""The statements the requests run on the event loop (common/db.py: fetch, change), on every
backend: the same rows as SQLAlchemy gives, duplicates and missing rows as before; and SQLite's
commit on the loop when the database is free (Database.write_now)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from sqlalchemy import MetaData, PickleType, literal, select

from selfieless.apps.acts import store as acts_sql
from selfieless.apps.acts.rules import timestamp_sort_key
from selfieless.apps.acts.schema import metadata
from selfieless.apps.acts.store import ActsStore, NewAct
from selfieless.apps.common import db as dbmod
from selfieless.apps.common.db import Database, name_key
from selfieless.apps.common.errors import ApiError
from selfieless.apps.common.ops import OperationalContext, request_counts_table
from support.databases import BACKENDS, fresh_database

counter_metadata = MetaData()  # the services add this table to their own metadata at start-up
counts = request_counts_table(counter_metadata)


@pytest.fixture(params=BACKENDS)
def any_database(request, tmp_path):
    with fresh_database(request.param, tmp_path) as url:
        db = Database(url)
        db.create_schema(metadata)
        db.create_schema(counter_metadata)
        yield db
        db.dispose()


@pytest.fixture
def database(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/fast.db")
    db.create_schema(metadata)
    db.create_schema(counter_metadata)
    yield db
    db.dispose()


def on_loop(db: Database, work):
    """Run `work()` on a fresh event loop; the server pools belong to it, so close them there."""
    async def main():
        try:
            return await work()
        finally:
            if db._server is not None:
                await db._server.close()
    return asyncio.run(main())


async def _seed(db: Database) -> ActsStore:
    store = ActsStore(db)
    for name in ("Nature", "Empty", "Ünïcode ✓"):
        await store.add_category(name)
    for i in range(7):
        ts = f"{1 + i:02d}-04-2019:00-30-14"
        await store.insert_act(NewAct(100 + i, f"user{i}", ts, timestamp_sort_key(ts), f"caption {i} ✓",
                                      "Nature" if i < 5 else "Ünïcode ✓", "aGVsbG8="))
    return store


def test_loop_statements_give_what_sqlalchemy_gives(any_database):
    db = any_database
    nature, missing = name_key("Nature"), name_key("Missing")
    statements = [(acts_sql._CATEGORY_COUNTS, None), (acts_sql._CATEGORY_SIZE, {"key": nature}),
                  (acts_sql._CATEGORY_SIZE, {"key": missing}), (acts_sql._LIST, {"key": nature, "limit_all": 100}),
                  (acts_sql._LIST, {"key": nature, "limit_all": 5}),
                  (acts_sql._LIST_RANGE, {"key": nature, "end": 4, "offset": 1, "limit": 3}),
                  (acts_sql._LIST_RANGE, {"key": nature, "end": 9, "offset": 3, "limit": 6}),
                  (acts_sql._UPLOAD_CHECK, {"id": 100, "key": missing}), (acts_sql._COUNT_ACTS, None)]

    async def work():
        store = await _seed(db)
        fast = [[tuple(row) for row in await db.fetch(stmt, params)] for stmt, params in statements]
        answers = [await store.category_counts(), await store.list_acts("Nature", 100),
                   await store.list_acts("Empty", 100), await store.list_acts("Missing", 100),
                   await store.list_range("Nature", 2, 4), await store.list_range("Nature", 4, 9),
                   await store.category_size("Ünïcode ✓"), await store.category_size("Missing"),
                   await store.count_acts()]
        with pytest.raises(ApiError) as too_many:
            await store.list_acts("Nature", 5)
        return fast, answers, too_many.value
    fast, answers, too_many = on_loop(db, work)
    with db.read() as conn:
        assert fast == [[tuple(row) for row in conn.execute(stmt, params).all()] for stmt, params in statements]
    assert fast[4] == [] and fast[6] == [] and fast[7] == [(1, None)]
    assert answers[0] == {"Nature": 5, "Empty": 0, "Ünïcode ✓": 2}
    assert [a["actId"] for a in answers[1]] == [104, 103, 102, 101, 100]
    assert answers[2:4] == [None, None] and answers[5] is None
    assert [a["actId"] for a in answers[4]] == [103, 102, 101]
    assert answers[6:] == [2, None, 7]
    assert (too_many.status, "holds 5 acts" in too_many.message) == (413, True)


def test_a_duplicate_or_a_missing_row_is_a_400_that_writes_nothing(any_database):
    db = any_database

    async def work():
        store = await _seed(db)
        failures = []
        for attempt in (lambda: store.add_category("Nature"), lambda: store.upvote(999),
                        lambda: store.delete_act(999),
                        lambda: store.insert_act(NewAct(100, "u", "09-04-2019:00-30-14", 20190409003014, "c",
                                                        "Empty", "aGVsbG8=")),
                        lambda: store.insert_act(NewAct(900, "u", "09-04-2019:00-30-14", 20190409003014, "c",
                                                        "Missing", "aGVsbG8="))):
            with pytest.raises(ApiError) as failed:
                await attempt()
            failures.append((failed.value.status, failed.value.message))
        await store.upvote(100)
        return failures, await store.category_counts(), await store.list_range("Nature", 5, 5)
    failures, categories, oldest = on_loop(db, work)
    assert [status for status, _ in failures] == [400] * 5
    assert "already exists" in failures[0][1] and "no such act" in failures[1][1]
    assert "already exists" in failures[3][1] and "no such category" in failures[4][1]
    assert categories == {"Nature": 5, "Empty": 0, "Ünïcode ✓": 2}
    assert oldest[0]["upvotes"] == 1


def test_a_statement_that_needs_sqlalchemys_types(any_database):
    """SQLite runs it through SQLAlchemy; the server databases' loop driver refuses it outright."""
    db = any_database
    typed = select(literal({"pickled": [1, 2]}, PickleType()))  # pickled on the way in and out
    if db.backend == "sqlite":
        assert on_loop(db, lambda: db.fetch_value(typed)) == {"pickled": [1, 2]}
    else:
        with pytest.raises(TypeError, match="only SQLAlchemy"):
            on_loop(db, lambda: db.fetch_value(typed))


def test_write_now_commits_at_once_when_the_database_is_free(database, tmp_path):
    state = OperationalContext("acts", database, counts, allow_crash=False)
    state.ensure_counter()

    async def count_twice():
        await state._commit_count(2)
        await state._commit_count(3)
    asyncio.run(count_twice())
    assert database._loop_writer is not None  # committed on the loop, not by the writer thread
    other = sqlite3.connect(tmp_path / "fast.db")
    assert other.execute("SELECT n FROM request_counts WHERE service = 'acts'").fetchone() == (5,)
    other.close()


def test_write_now_leaves_a_held_database_to_the_writer_thread(database, tmp_path):
    state = OperationalContext("acts", database, counts, allow_crash=False)
    state.ensure_counter()
    holder = sqlite3.connect(tmp_path / "fast.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write in progress
    assert database.write_now(state._add, {"which": "acts", "k": 1}) is None
    holder.execute("COMMIT")
    assert database.write_now(state._add, {"which": "acts", "k": 1}) == 1
    # This process's own writer holds the lock: not taken either.
    with database.write():
        assert database.write_now(state._add, {"which": "acts", "k": 1}) is None
    assert holder.execute("SELECT n FROM request_counts WHERE service = 'acts'").fetchone() == (1,)
    holder.close()


def test_the_writer_thread_checkpoints_after_loop_commits(database, tmp_path, monkeypatch):
    monkeypatch.setattr(dbmod, "CHECKPOINT_EVERY", 3)
    state = OperationalContext("acts", database, counts, allow_crash=False)
    state.ensure_counter()
    ran = []
    real = database._checkpoint
    monkeypatch.setattr(database, "_checkpoint", lambda: ran.append(threading.current_thread().name) or real())
    for _ in range(7):
        assert database.write_now(state._add, {"which": "acts", "k": 1}) == 1
    database._writer.submit(lambda: None).result()  # the writer thread has done what it was given
    assert len(ran) == 2 and all(name.startswith("sqlite-writer") for name in ran)


def test_an_upvote_commits_on_the_loop(database):
    async def work():
        store = await _seed(database)
        await store.upvote(100)
        return await store.list_range("Nature", 5, 5)
    assert on_loop(database, work)[0]["upvotes"] == 1
    assert database._loop_writer is not None  # committed on the loop, not by the writer thread
