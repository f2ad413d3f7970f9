"""The users service's tables."""

from __future__ import annotations

from sqlalchemy import CHAR, Column, Integer, MetaData, Table, Text

from ..common.db import LongText

metadata = MetaData()

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", LongText, nullable=False),
    # sha256 of the name: a unique, case-sensitive key whatever the name's length or the backend
    Column("name_key", CHAR(64), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
)
