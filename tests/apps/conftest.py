"""Fixtures for the microservice tests: a real users + acts pair on each database backend."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import httpx
import pytest

from selfieless.apps.acts.schema import acts, categories
from selfieless.apps.common.db import Database
from selfieless.apps.users.schema import users
from support.databases import BACKENDS, fresh_database
from support.processes import ServiceProcess

_act_ids = itertools.count(1554800000000)


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def next_act_id() -> int:
    return next(_act_ids)


def act_body(username: str, category: str, **overrides) -> dict:
    body = {"actId": next_act_id(), "username": username, "timestamp": "09-04-2019:00-30-14",
            "caption": "helped a neighbour", "categoryName": category, "imgB64": "aGVsbG8gd29ybGQ="}
    body.update(overrides)
    return body


@dataclass
class Stack:
    backend: str
    database_url: str
    users: ServiceProcess
    acts: ServiceProcess
    db: Database


class Api:
    """A test's view of one users + acts pair, with shortcuts for the common set-up steps."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.acts = httpx.Client(base_url=stack.acts.url + "/api/v1", timeout=30)
        self.users = httpx.Client(base_url=stack.users.url + "/api/v1", timeout=30)

    def add_user(self, name: str = "alice") -> str:
        r = self.users.post("/users", json={"username": name, "password": sha1(name)})
        assert r.status_code == 201, r.text
        return name

    def add_category(self, name: str = "Nature") -> str:
        r = self.acts.post("/categories", json=[name])
        assert r.status_code == 201, r.text
        return name

    def upload(self, username: str, category: str, **overrides) -> dict:
        body = act_body(username, category, **overrides)
        r = self.acts.post("/acts", json=body)
        assert r.status_code == 201, r.text
        return body

    def act_count(self) -> int:
        return self.acts.get("/acts/count").json()[0]

    def table_rows(self) -> dict[str, int]:
        """Row counts straight from the database: proves a rejected request wrote nothing."""
        with self.stack.db.read() as conn:
            return {t.name: len(conn.execute(t.select()).all())
                    for t in (users, categories, acts)}

    def close(self) -> None:
        self.acts.close()
        self.users.close()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"stack-{request.param}")
    with fresh_database(request.param, tmp) as url:
        users_proc = ServiceProcess("users", url, tmp)
        acts_proc = ServiceProcess("acts", url, tmp, users_url=users_proc.url)
        try:
            users_proc.wait_healthy()
            acts_proc.wait_healthy()
            db = Database(url)
            yield Stack(request.param, url, users_proc, acts_proc, db)
            db.dispose()
        finally:
            acts_proc.stop()
            users_proc.stop()


@pytest.fixture
def api(stack):
    """A clean database for each test (rows removed, counters at zero)."""
    with stack.db.write() as conn:
        for table in (acts, categories, users):
            conn.execute(table.delete())
        conn.exec_driver_sql("UPDATE request_counts SET n = 0")
    client = Api(stack)
    yield client
    client.close()
