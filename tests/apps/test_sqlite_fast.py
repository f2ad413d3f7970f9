"""SQLite's fast paths in common/db.py: reads on the driver's connection (SqliteReads) and a
counter commit on the event loop when the database is free (Database.write_now)."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import threading

import pytest
from sqlalchemy import DateTime, MetaData, bindparam, literal, select
from sqlalchemy.exc import NoResultFound

from selfieless.apps.acts.rules import timestamp_sort_key
from selfieless.apps.acts.schema import acts, metadata
from selfieless.apps.acts.store import ActsStore, NewAct
from selfieless.apps.common import db as dbmod
from selfieless.apps.common.db import Database
from selfieless.apps.common.errors import ApiError
from selfieless.apps.common.ops import OperationalContext, request_counts_table

counter_metadata = MetaData()  # the services add this table to their own metadata at start-up
counts = request_counts_table(counter_metadata)


@pytest.fixture
def database(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/fast.db")
    db.create_schema(metadata)
    db.create_schema(counter_metadata)
    yield db
    db.dispose()


def _seed(db: Database) -> ActsStore:
    store = ActsStore(db)
    for name in ("Nature", "Empty", "Ünïcode ✓"):
        store.add_category(name)
    for i in range(7):
        ts = f"{1 + i:02d}-04-2019:00-30-14"
        store.insert_act(NewAct(100 + i, f"user{i}", ts, timestamp_sort_key(ts), f"caption {i} ✓",
                                "Nature" if i < 5 else "Ünïcode ✓", "aGVsbG8="))
    return store


def _off_loop(fn, *args):
    """The same read through SQLAlchemy, from another thread (not the loop's connection)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join()
    return out[0]


def test_reads_on_the_driver_give_what_sqlalchemy_gives(database):
    store = _seed(database)
    calls = [(store.category_counts,), (store.list_acts, "Nature", 100), (store.list_acts, "Empty", 100),
             (store.list_acts, "Missing", 100), (store.list_range, "Nature", 2, 4),
             (store.list_range, "Nature", 4, 9), (store.category_size, "Ünïcode ✓"),
             (store.category_size, "Missing"), (store.count_acts,)]

    async def on_loop():
        return [await database.reading(*call) for call in calls]
    fast = asyncio.run(on_loop())
    assert database._loop_reads is not None  # the loop's reads did take the driver's path
    assert fast == [_off_loop(*call) for call in calls]
    assert fast[1][0]["actId"] == 104 and fast[0] == {"Nature": 5, "Empty": 0, "Ünïcode ✓": 2}


def test_a_read_that_needs_sqlalchemys_types_still_works_between_driver_reads(database):
    _seed(database)
    when = datetime.datetime(2019, 4, 9, 0, 30, 14)
    typed = select(literal(when, DateTime()))
    one = select(acts.c.act_id).where(acts.c.act_id == bindparam("id"))

    def read():
        with database.read() as conn:
            got = conn.execute(typed).scalar()
            with pytest.raises(NoResultFound):
                conn.execute(one, {"id": 1}).scalar_one()
            return got, conn.execute(one, {"id": 100}).scalar_one()

    async def on_loop():
        return [await database.reading(read) for _ in range(3)]
    assert asyncio.run(on_loop()) == [(when, 100)] * 3


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


def test_an_upvote_commits_on_the_loop_and_a_missing_act_is_still_a_400(database):
    store = _seed(database)
    assert store.upvote_now(100) is True
    with pytest.raises(ApiError) as missing:
        store.upvote_now(999)
    assert missing.value.status == 400
    assert [a["upvotes"] for a in store.list_range("Nature", 1, 5)] == [0, 0, 0, 0, 1]
