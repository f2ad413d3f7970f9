"""Real databases for tests: a SQLite file, or a fresh database on a MariaDB / PostgreSQL server.

The servers are found at SELFIELESS_TEST_MYSQL_URL / SELFIELESS_TEST_POSTGRES_URL, defaulting to the
user that `scripts/provision` creates. When a server's driver is not installed or nothing listens
at its address, the tests that need it skip and say how to get one; any other error (wrong
credentials, a server that accepts the connection and then fails) is a test failure, not a skip.
"""

from __future__ import annotations

import os
import socket
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


def _unreachable(url) -> str | None:
    """Why nothing can be reached at this server URL (refused, no route, timed out), or None."""
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or DEFAULT_PORTS[url.get_backend_name()]),
                                      timeout=3):
            return None
    except OSError as exc:
        return f"{exc.__class__.__name__}: {exc}"


DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432}


@contextmanager
def fresh_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """Yield the URL of an empty database of this kind; drop it afterwards.

    Skips only for "not installed / not reachable"; every other setup error propagates, so that a
    half-provisioned server fails the test instead of hiding it.
    """
    if backend == "sqlite":
        yield f"sqlite:///{tmp_dir / f'test-{uuid.uuid4().hex[:8]}.db'}"
        return
    server = SERVER_URLS[backend]
    url = make_url(server)
    how_to = HOW_TO_GET[backend].format(url=url.render_as_string())
    try:
        admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    except ImportError as exc:  # the DB-API driver is not installed
        pytest.skip(f"{how_to} (driver not installed: {exc})")
    why = _unreachable(url)
    if why is not None:
        pytest.skip(f"{how_to} ({why})")
    name = f"selfieless_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
