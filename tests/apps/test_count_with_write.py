"""A counted write's count committed with the write itself (common/db.py: CountDue, COUNT_DUE):
on every backend both are committed or neither; a write that fails leaves the count owed, and the
hot path then counts the request on its own, so `_count` stays exact; over HTTP, every counted
upload and upvote, accepted or refused, adds exactly one."""

from __future__ import annotations

import asyncio

import pytest

from selfieless.apps.acts.rules import timestamp_sort_key
from selfieless.apps.acts.store import ActsStore, NewAct
from selfieless.apps.common.aiodb import _each_as_one, _with_also
from selfieless.apps.common.db import COUNT_DUE, CountDue, Database
from selfieless.apps.common.dberrors import Duplicate
from selfieless.apps.common.errors import ApiError
from selfieless.apps.common.ops import OperationalContext
from conftest import act_body
from test_db_on_loop import any_database, counts, on_loop  # noqa: F401 - the fixture is used by name


@pytest.mark.parametrize("also, sql, taken, expected", [
    ("UPDATE c SET n = n + $1 WHERE s = $2", "UPDATE a SET v = v + 1 WHERE id = $1", 1,
     "WITH also_write AS (UPDATE c SET n = n + $2 WHERE s = $3) UPDATE a SET v = v + 1 WHERE id = $1"),
    ("UPDATE c SET n = n + $1 WHERE s = $2", "DELETE FROM a WHERE id = $10", 10,
     "WITH also_write AS (UPDATE c SET n = n + $11 WHERE s = $12) DELETE FROM a WHERE id = $10"),
    ("UPDATE c SET n = 0", "DELETE FROM a", 0, "WITH also_write AS (UPDATE c SET n = 0) DELETE FROM a"),
])
def test_postgresql_also_write_is_a_with_clause_numbered_after_the_statement(also, sql, taken, expected):
    assert _with_also(also, sql, taken) == expected


@pytest.mark.parametrize("statements, also, expected", [
    ((("INSERT INTO a (x) SELECT $1::BIGINT WHERE k = $2", 2),), None,
     "WITH write_0 AS (INSERT INTO a (x) SELECT $1::BIGINT WHERE k = $2 RETURNING 1) "
     "SELECT (SELECT count(*) FROM write_0)"),
    ((("INSERT INTO a (x) VALUES ($1)", 1), ("INSERT INTO a (x) VALUES ($1)", 1)),
     "UPDATE c SET n = n + $1 WHERE s = $2",
     "WITH write_0 AS (INSERT INTO a (x) VALUES ($1) RETURNING 1), write_1 AS (INSERT INTO a (x) VALUES ($2) "
     "RETURNING 1), also_write AS (UPDATE c SET n = n + $3 WHERE s = $4) "
     "SELECT (SELECT count(*) FROM write_0), (SELECT count(*) FROM write_1)"),
])
def test_postgresql_writes_in_one_statement_count_each_and_number_parameters_in_order(statements, also, expected):
    assert _each_as_one(statements, also) == expected


def _act(act_id: int, category: str = "Nature") -> NewAct:
    ts = "09-04-2019:00-30-14"
    return NewAct(act_id, "alice", ts, timestamp_sort_key(ts), "caption", category, "aGVsbG8=")


def test_count_and_write_commit_together_or_not_at_all(any_database):
    db = any_database
    ops = OperationalContext("acts", db, counts, allow_crash=False)
    ops.ensure_counter()
    store = ActsStore(db)

    async def as_request(write) -> CountDue:
        """`write` as a counted request's work: with a count owed, as the hot path runs it."""
        due = ops.count_due()
        token = COUNT_DUE.set(due)
        try:
            await write()
        except (ApiError, Duplicate):
            pass
        finally:
            COUNT_DUE.reset(token)
        return due

    async def work():
        await store.add_category("Nature")
        paid = []
        due = await as_request(lambda: store.insert_act(_act(1)))        # written: counted with it
        paid.append(due.paid)
        assert await ops.count() == 1 and await store.count_acts() == 1
        due = await as_request(lambda: store.upvote(1))                  # written: counted with it
        paid.append(due.paid)
        due = await as_request(lambda: store.upvote(2))                  # no such act: 0 rows, still counted
        paid.append(due.paid)
        assert await ops.count() == 3
        due = await as_request(lambda: store.insert_act(_act(1)))        # duplicate: neither
        paid.append(due.paid)
        due = await as_request(lambda: store.insert_act(_act(5, "Gone")))  # no category: nothing inserted
        paid.append(due.paid)
        return paid, await ops.count(), await store.count_acts()

    paid, counted, acts = on_loop(db, work)
    if db.folds_counts:
        assert paid == [True, True, True, False, True]
        assert counted == 4  # the duplicate's count was rolled back with its insert
    else:  # SQLite: the count is committed first, on its own, whatever the write does
        assert paid == [True] * 5 and counted == 5
    assert acts == 1


def test_every_counted_write_adds_one_whatever_its_answer(api):
    api.add_user("alice")
    api.add_category("Nature")
    assert api.acts.delete("/_count").status_code == 200
    body = api.upload("alice", "Nature")                                       # 201
    answers = [api.acts.post("/acts", json=body).status_code,                  # duplicate actId
               api.acts.post("/acts", json=act_body("mallory", "Nature")).status_code,   # no such user
               api.acts.post("/acts", json=act_body("alice", "Roads")).status_code,      # no such category
               api.acts.post("/acts", content=b"{").status_code,               # not JSON
               api.acts.post("/acts/upvote", json=[body["actId"]]).status_code,
               api.acts.post("/acts/upvote", json=[body["actId"] + 1]).status_code]     # no such act
    assert answers == [400, 400, 400, 400, 200, 400]
    assert api.acts.get("/_count").json() == [7]
    assert api.act_count() == 1
    assert api.acts.get("/categories/Nature/acts").json()[0]["upvotes"] == 1


async def _concurrent_upvotes(url: str, act_id: int, n: int) -> list[int]:
    import httpx
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        answers = await asyncio.gather(*(client.post("/acts/upvote", json=[act_id]) for _ in range(n)))
    return [r.status_code for r in answers]


def test_concurrent_upvotes_of_one_act_all_count_once(api):
    api.add_user("alice")
    api.add_category("Nature")
    body = api.upload("alice", "Nature")
    assert api.acts.delete("/_count").status_code == 200
    url = api.stack.acts.url + "/api/v1"
    codes = asyncio.run(_concurrent_upvotes(url, body["actId"], 60))
    assert codes == [200] * 60
    assert api.acts.get("/_count").json() == [60]
    assert api.acts.get("/categories/Nature/acts").json()[0]["upvotes"] == 60
    # Upvotes of a missing act share their batches too: each is refused, each is counted once.
    assert asyncio.run(_concurrent_upvotes(url, body["actId"] + 1, 30)) == [400] * 30
    assert api.acts.get("/_count").json() == [91]


def test_uploads_on_their_way_at_once_share_a_transaction_and_each_get_their_own_answer(any_database):
    """ActsStore.insert_act on a server database: concurrent uploads are inserted together, with
    their counts; a batch with a repeated actId is rolled back and inserted one by one, so only
    the repeat is refused. On SQLite each upload is inserted on its own, with the same answers."""
    db = any_database
    ops = OperationalContext("acts", db, counts, allow_crash=False)
    ops.ensure_counter()
    store = ActsStore(db)
    transactions = []
    if db.folds_counts:
        real = db.change_each

        async def change_each(stmt, parameter_list, dues):  # the real one, its batches noted
            transactions.append(len(parameter_list))
            return await real(stmt, parameter_list, dues)
        db.change_each = change_each

    async def upload(act: NewAct):
        """As the hot path serves a counted upload: its count owed, settled on its own if unpaid."""
        due = ops.count_due()
        token = COUNT_DUE.set(due)
        try:
            await store.insert_act(act)
            answer = "201"
        except ApiError as exc:
            answer = exc.message.split(":")[0]
        finally:
            COUNT_DUE.reset(token)
        await due.settle()
        return answer

    async def work():
        await store.add_category("Nature")
        first = await upload(_act(1))
        clean = await asyncio.gather(*(upload(_act(10 + i)) for i in range(8)), upload(_act(30, "Gone")))
        after_clean = (await ops.count(), await store.count_acts())
        mixed = await asyncio.gather(*(upload(_act(40 + i)) for i in range(4)),
                                     upload(_act(20)), upload(_act(20)), upload(_act(1)))
        return first, clean, after_clean, mixed, await ops.count(), await store.count_acts()

    first, clean, after_clean, mixed, counted, stored = on_loop(db, work)
    assert first == "201"
    assert clean == ["201"] * 8 + ["no such category"]
    assert after_clean == (10, 9)
    assert mixed == ["201"] * 5 + ["an act with actId 20 already exists", "an act with actId 1 already exists"]
    assert (counted, stored) == (17, 14)
    if db.folds_counts:
        # One transaction for the clean batch; the mixed one's was rolled back (then one by one).
        assert transactions == [9, 7]
