"""SQL for the acts service. Every function is one short transaction with bound parameters.

The statements are built once, here: SQLAlchemy then finds each one's compiled form in its cache
straight away, instead of building and hashing a new statement object on every request.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from ..common.db import Database, name_key
from ..common.errors import ApiError
from .schema import acts, categories

# The listed shape of an act: exactly these keys, in this order (api.md).
_ACT_COLUMNS = (acts.c.act_id, acts.c.username, acts.c.ts_text, acts.c.caption, acts.c.upvotes, acts.c.img)
_NEWEST_FIRST = (acts.c.ts_sort.desc(), acts.c.seq.desc())

_CATEGORY_ID = select(categories.c.id).where(categories.c.name_key == bindparam("key"))
_CATEGORY_COUNTS = (select(categories.c.name, func.count(acts.c.seq))
                    .select_from(categories.outerjoin(acts, acts.c.category_id == categories.c.id))
                    .group_by(categories.c.id, categories.c.name)
                    .order_by(categories.c.id))
_CATEGORY_SIZE = select(func.count()).where(acts.c.category_id == bindparam("category_id"))
_LIST = select(*_ACT_COLUMNS).where(acts.c.category_id == bindparam("category_id")).order_by(*_NEWEST_FIRST)
_LIST_RANGE = _LIST.offset(bindparam("offset")).limit(bindparam("limit"))
_COUNT_ACTS = select(func.count()).select_from(acts)
_UPVOTE = update(acts).where(acts.c.act_id == bindparam("id")).values(upvotes=acts.c.upvotes + 1)
_ACT_EXISTS = select(acts.c.seq).where(acts.c.act_id == bindparam("id"))


@dataclass(frozen=True)
class NewAct:
    act_id: int
    username: str
    timestamp: str
    ts_sort: int
    caption: str
    category: str
    img: str


def _act_json(row) -> dict:
    return {"actId": row[0], "username": row[1], "timestamp": row[2], "caption": row[3],
            "upvotes": row[4], "imgB64": row[5]}


def _category_id(conn, name: str) -> int | None:
    return conn.execute(_CATEGORY_ID, {"key": name_key(name)}).scalar()


class ActsStore:
    def __init__(self, db: Database):
        self.db = db

    # categories -------------------------------------------------------------------------
    def category_counts(self) -> dict[str, int]:
        with self.db.read() as conn:
            return {name: count for name, count in conn.execute(_CATEGORY_COUNTS)}

    def add_category(self, name: str) -> None:
        try:
            with self.db.write() as conn:
                conn.execute(categories.insert().values(name=name, name_key=name_key(name)))
        except IntegrityError:
            raise ApiError(400, f"category {name!r} already exists") from None

    def delete_category(self, name: str) -> None:
        with self.db.write() as conn:
            category_id = _category_id(conn, name)
            if category_id is None:
                raise ApiError(400, f"no such category: {name!r}")
            # Explicit rather than trusting ON DELETE CASCADE, which SQLite honours only per connection.
            conn.execute(delete(acts).where(acts.c.category_id == category_id))
            conn.execute(delete(categories).where(categories.c.id == category_id))

    def category_size(self, name: str) -> int | None:
        with self.db.read() as conn:
            category_id = _category_id(conn, name)
            if category_id is None:
                return None
            return conn.execute(_CATEGORY_SIZE, {"category_id": category_id}).scalar_one()

    def list_acts(self, name: str, limit_all: int) -> list[dict] | None:
        """Every act of a category newest first; None when missing or empty; 413 at `limit_all` or more."""
        with self.db.read() as conn:
            category_id = _category_id(conn, name)
            if category_id is None:
                return None
            size = conn.execute(_CATEGORY_SIZE, {"category_id": category_id}).scalar_one()
            if size == 0:
                return None
            if size >= limit_all:
                raise ApiError(413, f"category {name!r} holds {size} acts; list it with ?start=&end= "
                                    f"(at most {limit_all} at a time)")
            rows = conn.execute(_LIST, {"category_id": category_id})
            return [_act_json(r) for r in rows]

    def list_range(self, name: str, start: int, end: int) -> list[dict] | None:
        """Acts at positions start..end (1 = newest); None when missing, empty or out of bounds."""
        with self.db.read() as conn:
            category_id = _category_id(conn, name)
            if category_id is None:
                return None
            size = conn.execute(_CATEGORY_SIZE, {"category_id": category_id}).scalar_one()
            if size == 0 or start < 1 or end > size or start > end:
                return None
            rows = conn.execute(_LIST_RANGE, {"category_id": category_id, "offset": start - 1,
                                              "limit": end - start + 1})
            return [_act_json(r) for r in rows]

    # acts -----------------------------------------------------------------------------------
    def count_acts(self) -> int:
        with self.db.read() as conn:
            return conn.execute(_COUNT_ACTS).scalar_one()

    def upvote(self, act_id: int) -> None:
        with self.db.write() as conn:
            # One statement: concurrent upvotes on any number of replicas all count.
            done = conn.execute(_UPVOTE, {"id": act_id})
            if done.rowcount == 0:
                raise ApiError(400, f"no such act: {act_id}")

    def upvote_now(self, act_id: int) -> bool:
        """`upvote` on the event loop when SQLite's write lock is free (Database.write_now); False,
        with nothing done, when it is not (or on a server database): then call `upvote`."""
        done = self.db.write_now(_UPVOTE, {"id": act_id})
        if done is None:
            return False
        if done == 0:
            raise ApiError(400, f"no such act: {act_id}")
        return True

    def delete_act(self, act_id: int) -> None:
        with self.db.write() as conn:
            if conn.execute(delete(acts).where(acts.c.act_id == act_id)).rowcount == 0:
                raise ApiError(400, f"no such act: {act_id}")

    def check_new_act(self, act_id: int, category: str) -> None:
        """The checks an upload needs from the database, before asking the users service."""
        with self.db.read() as conn:
            if conn.execute(_ACT_EXISTS, {"id": act_id}).first() is not None:
                raise ApiError(400, f"an act with actId {act_id} already exists")
            if _category_id(conn, category) is None:
                raise ApiError(400, f"no such category: {category!r}")

    def insert_act(self, act: NewAct) -> None:
        try:
            with self.db.write() as conn:
                category_id = _category_id(conn, act.category)
                if category_id is None:  # deleted since check_new_act
                    raise ApiError(400, f"no such category: {act.category!r}")
                conn.execute(acts.insert().values(
                    act_id=act.act_id, category_id=category_id, username=act.username,
                    ts_text=act.timestamp, ts_sort=act.ts_sort, caption=act.caption, upvotes=0, img=act.img))
        except IntegrityError:
            raise ApiError(400, f"an act with actId {act.act_id} already exists") from None
