"""Real databases for tests: a SQLite file, or a fresh database on a MariaDB / PostgreSQL server.

The servers are found at SELFIELESS_TEST_MYSQL_URL / SELFIELESS_TEST_POSTGRES_URL, defaulting to the
user that `scripts/provision` creates. When a server is not reachable, the tests that need it skip
and say how to get one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

BACKENDS = ("sqlite", "mariadb", "postgresql")

SERVER_URLS = {
    "mariadb": os.environ.get("SELFIELESS_TEST_MYSQL_URL",
                              "mysql+pymysql://selfieless:selfieless@127.0.0.1:3306/mysql"),
    "postgresql": os.environ.get("SELFIELESS_TEST_POSTGRES_URL",
                                 "postgresql+psycopg://selfieless:selfieless@127.0.0.1:5432/postgres"),
}

HOW_TO_GET = {
    "mariadb": "MariaDB is not reachable at {url}: run `scripts/provision mariadb` as root "
               "(installs and starts it with the test user) or set SELFIELESS_TEST_MYSQL_URL",
    "postgresql": "PostgreSQL is not reachable at {url}: run `scripts/provision postgresql` as root "
                  "or set SELFIELESS_TEST_POSTGRES_URL",
}


@contextmanager
def fresh_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """Yield the URL of an empty database of this kind; drop it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_dir / f'test-{uuid.uuid4().hex[:8]}.db'}"
        return
    server = SERVER_URLS[backend]
    name = f"selfieless_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:  # not installed, not started, wrong credentials
        pytest.skip(HOW_TO_GET[backend].format(url=make_url(server).render_as_string()) + f" ({exc.__class__.__name__})")
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
