"""SQL for the acts service. Every request's work is one statement with bound parameters, so it
is atomic by itself and costs one round trip on a server database (common/db.py: fetch, change);
only deleting a category takes a transaction of several. On a server database the uploads on
their way at once are inserted in one transaction (insert_act), each still answered on its own.

The statements are built once, here, and compiled once per database kind (common/db.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Integer, bindparam, delete, func, insert, literal, select, update

from ..common.counter import Batcher, KeyedBatches
from ..common.db import COUNT_DUE, CountDue, Database, LongText, name_key
from ..common.dberrors import Duplicate
from ..common.errors import ApiError
from .schema import acts, categories

# The listed shape of an act: exactly these keys, in this order (api.md).
_ACT_COLUMNS = (acts.c.act_id, acts.c.username, acts.c.ts_text, acts.c.caption, acts.c.upvotes, acts.c.img)
_NEWEST_FIRST = (acts.c.ts_sort.desc(), acts.c.seq.desc())

_CATEGORY_ID = select(categories.c.id).where(categories.c.name_key == bindparam("key"))
_ID_OF_NAMED = _CATEGORY_ID.scalar_subquery()
_SIZE_OF_NAMED = select(func.count()).select_from(acts).where(acts.c.category_id == _ID_OF_NAMED).scalar_subquery()
# A count per category from the category index, rather than GROUP BY over an outer join: MariaDB
# builds a temporary table for that one (measured on MariaDB, 6 categories and 20 acts: 96-115
# instead of 320-835 µs per query).
_CATEGORY_COUNTS = (select(categories.c.name, select(func.count()).select_from(acts)
                           .where(acts.c.category_id == categories.c.id).scalar_subquery())
                    .order_by(categories.c.id))
# No row: no such category; else its number of acts.
_CATEGORY_SIZE = (select(select(func.count()).select_from(acts).where(acts.c.category_id == categories.c.id)
                         .scalar_subquery())
                  .where(categories.c.name_key == bindparam("key")))
# A category's acts, newest first, or no row when it holds `limit_all` or more.
_LIST = (select(*_ACT_COLUMNS)
         .where(acts.c.category_id == _ID_OF_NAMED, _SIZE_OF_NAMED < bindparam("limit_all", type_=Integer))
         .order_by(*_NEWEST_FIRST))
# Positions offset+1 .. offset+limit, or no row when the category holds fewer than `end` acts.
_LIST_RANGE = (select(*_ACT_COLUMNS)
               .where(acts.c.category_id == _ID_OF_NAMED, _SIZE_OF_NAMED >= bindparam("end", type_=Integer))
               .order_by(*_NEWEST_FIRST).offset(bindparam("offset")).limit(bindparam("limit")))
_COUNT_ACTS = select(func.count()).select_from(acts)
_UPVOTE = (update(acts).where(acts.c.act_id == bindparam("id"))
           .values(upvotes=acts.c.upvotes + bindparam("k", type_=BigInteger)))
_DELETE_ACT = delete(acts).where(acts.c.act_id == bindparam("id"))
# (the act's seq or None, the category's id or None): what an upload needs to know, in one read.
_UPLOAD_CHECK = select(select(acts.c.seq).where(acts.c.act_id == bindparam("id")).scalar_subquery(), _ID_OF_NAMED)
_ADD_CATEGORY = insert(categories).values(name=bindparam("name", type_=LongText), name_key=bindparam("key"))
# Inserts nothing when the category is gone: then the row count is 0.
_INSERT_ACT = insert(acts).from_select(
    ["act_id", "category_id", "username", "ts_text", "ts_sort", "caption", "upvotes", "img"],
    select(bindparam("act_id", type_=BigInteger), categories.c.id, bindparam("username", type_=LongText),
           bindparam("ts_text", type_=LongText), bindparam("ts_sort", type_=BigInteger),
           bindparam("caption", type_=LongText), literal(0, BigInteger), bindparam("img", type_=LongText))
    .where(categories.c.name_key == bindparam("key")))


# Server databases: transactions of uploads on their way at once (one: two made smaller batches
# for more CPU per upload, measured), and the most uploads one transaction holds.
INSERTS_IN_FLIGHT = 1
INSERTS_PER_TRANSACTION = 16


@dataclass(frozen=True)
class NewAct:
    act_id: int
    username: str
    timestamp: str
    ts_sort: int
    caption: str
    category: str
    img: str


class _PendingInsert:
    """One upload's insert waiting in a batch (ActsStore.insert_act), and what became of it."""

    __slots__ = ("act", "due", "rows", "error")

    def __init__(self, act: NewAct, due: CountDue | None):
        self.act, self.due = act, due
        self.rows: int | None = None
        self.error: Exception | None = None


def _insert_parameters(act: NewAct) -> dict:
    return {"act_id": act.act_id, "key": name_key(act.category), "username": act.username,
            "ts_text": act.timestamp, "ts_sort": act.ts_sort, "caption": act.caption, "img": act.img}


def _act_json(row) -> dict:
    return {"actId": row[0], "username": row[1], "timestamp": row[2], "caption": row[3],
            "upvotes": row[4], "imgB64": row[5]}


def _category_id(conn, name: str) -> int | None:
    return conn.execute(_CATEGORY_ID, {"key": name_key(name)}).scalar()


class ActsStore:
    def __init__(self, db: Database):
        self.db = db
        self._upvotes: KeyedBatches[int] = KeyedBatches(self._add_upvotes)
        # Server databases: the uploads that arrive while inserts are on their way share the next
        # transaction (one commit, one count increment for all of them).
        self._inserts: Batcher[None] = Batcher(self._insert_batch, concurrency=INSERTS_IN_FLIGHT)

    # categories -------------------------------------------------------------------------
    async def category_counts(self) -> dict[str, int]:
        return {name: count for name, count in await self.db.fetch(_CATEGORY_COUNTS)}

    async def add_category(self, name: str) -> None:
        try:
            await self.db.change(_ADD_CATEGORY, {"name": name, "key": name_key(name)})
        except Duplicate:
            raise ApiError(400, f"category {name!r} already exists") from None

    def delete_category(self, name: str) -> None:
        """In a thread (Database.writing): three statements in one transaction."""
        with self.db.write() as conn:
            category_id = _category_id(conn, name)
            if category_id is None:
                raise ApiError(400, f"no such category: {name!r}")
            # Explicit rather than trusting ON DELETE CASCADE, which SQLite honours only per connection.
            conn.execute(delete(acts).where(acts.c.category_id == category_id))
            conn.execute(delete(categories).where(categories.c.id == category_id))

    async def category_size(self, name: str) -> int | None:
        return await self.db.fetch_value(_CATEGORY_SIZE, {"key": name_key(name)})

    async def list_acts(self, name: str, limit_all: int) -> list[dict] | None:
        """Every act of the category, newest first; None when it is missing or empty; 413 at
        `limit_all` or more."""
        key = name_key(name)
        rows = await self.db.fetch(_LIST, {"key": key, "limit_all": limit_all})
        if rows:
            return [_act_json(r) for r in rows]
        size = await self.db.fetch_value(_CATEGORY_SIZE, {"key": key})  # why none: the rare case
        if size is not None and size >= limit_all:
            raise ApiError(413, f"category {name!r} holds {size} acts; list it with ?start=&end= "
                                f"(at most {limit_all} at a time)")
        return None

    async def list_range(self, name: str, start: int, end: int) -> list[dict] | None:
        """Acts at positions start..end (1 = newest); None when missing, empty or out of bounds."""
        if start < 1 or start > end:
            return None
        rows = await self.db.fetch(_LIST_RANGE, {"key": name_key(name), "end": end, "offset": start - 1,
                                                 "limit": end - start + 1})
        return [_act_json(r) for r in rows] or None

    # acts -----------------------------------------------------------------------------------
    async def count_acts(self) -> int:
        return await self.db.fetch_value(_COUNT_ACTS)

    async def upvote(self, act_id: int) -> None:
        # One statement, `upvotes + k`: concurrent upvotes on any number of replicas all count. The
        # upvotes of one act that arrive while one of its commits is on its way share the next
        # (a popular act's row is otherwise locked by each in turn, for a log flush each on
        # PostgreSQL); each request still gets its answer only once its own upvote is committed.
        if await self._upvotes.join((act_id,), COUNT_DUE.get()) == 0:
            raise ApiError(400, f"no such act: {act_id}")

    async def _add_upvotes(self, key: tuple, dues: list) -> int:
        (act_id,) = key
        return await self.db.change_for(dues, _UPVOTE, {"id": act_id, "k": len(dues)})

    async def delete_act(self, act_id: int) -> None:
        if await self.db.change(_DELETE_ACT, {"id": act_id}) == 0:
            raise ApiError(400, f"no such act: {act_id}")

    async def check_new_act(self, act_id: int, category: str) -> None:
        """The rules of an upload the database decides (insert_act applies them too): a 400 for a
        taken actId or a missing category, without writing."""
        (existing, category_id), = await self.db.fetch(_UPLOAD_CHECK, {"id": act_id, "key": name_key(category)})
        if existing is not None:
            raise ApiError(400, f"an act with actId {act_id} already exists")
        if category_id is None:
            raise ApiError(400, f"no such category: {category!r}")

    async def insert_act(self, act: NewAct) -> None:
        """Insert the act, committed with the count its request owes (COUNT_DUE), or a 400 for a
        taken actId or a missing category (nothing written). On a server database the uploads
        that arrive while inserts are on their way are inserted together (_insert_batch); each
        still gets its own answer, and only once its row is committed."""
        if not self.db.folds_counts:
            inserted = await self._insert_one(act)
        else:
            pending = _PendingInsert(act, COUNT_DUE.get())
            await self._inserts.join(pending)
            if pending.error is not None:
                raise pending.error
            inserted = pending.rows
        if inserted == 0:  # the INSERT ... SELECT found no such category
            raise ApiError(400, f"no such category: {act.category!r}")

    async def _insert_one(self, act: NewAct) -> int:
        try:
            return await self.db.change(_INSERT_ACT, _insert_parameters(act))
        except Duplicate:
            raise ApiError(400, f"an act with actId {act.act_id} already exists") from None

    async def _insert_batch(self, batch: list[_PendingInsert]) -> None:
        """Each chunk of at most INSERTS_PER_TRANSACTION uploads in one transaction, with their
        counts. A Duplicate anywhere rolls the whole chunk back; then each of its uploads is
        inserted on its own, so only the one that repeats an actId is refused. Any other failure
        (the database unavailable) is every upload's of the chunk: a write that may have
        committed is never sent again."""
        for start in range(0, len(batch), INSERTS_PER_TRANSACTION):
            chunk = batch[start:start + INSERTS_PER_TRANSACTION]
            if len(chunk) > 1:
                try:
                    rows = await self.db.change_each(_INSERT_ACT, [_insert_parameters(p.act) for p in chunk],
                                                     [p.due for p in chunk])
                except Duplicate:
                    pass
                except Exception as exc:  # noqa: BLE001 - handed to each upload of the chunk
                    for pending in chunk:
                        pending.error = exc
                    continue
                else:
                    for pending, count in zip(chunk, rows):
                        pending.rows = count
                    continue
            for pending in chunk:
                token = COUNT_DUE.set(pending.due)  # this upload's count, committed with its insert
                try:
                    pending.rows = await self._insert_one(pending.act)
                except Exception as exc:  # noqa: BLE001 - this upload's own answer
                    pending.error = exc
                finally:
                    COUNT_DUE.reset(token)
