"""The acts service's tables: categories and acts, images stored in the shared database."""

from __future__ import annotations

from sqlalchemy import CHAR, BigInteger, Column, ForeignKey, Index, Integer, MetaData, Table

from ..common.db import LongText

metadata = MetaData()

categories = Table(
    "categories", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", LongText, nullable=False),
    Column("name_key", CHAR(64), nullable=False, unique=True),  # sha256(name), see common.db
)

acts = Table(
    "acts", metadata,
    # Insertion order: breaks ties between equal timestamps (newest insert first).
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("act_id", BigInteger, nullable=False, unique=True),
    Column("category_id", Integer, ForeignKey("categories.id", ondelete="CASCADE"), nullable=False),
    Column("username", LongText, nullable=False),
    Column("ts_text", LongText, nullable=False),     # returned exactly as uploaded
    Column("ts_sort", BigInteger, nullable=False),   # parsed timestamp, YYYYMMDDHHMMSS
    Column("caption", LongText, nullable=False),
    Column("upvotes", BigInteger, nullable=False, default=0),
    Column("img", LongText, nullable=False),
)

Index("acts_by_category_time", acts.c.category_id, acts.c.ts_sort, acts.c.seq)
