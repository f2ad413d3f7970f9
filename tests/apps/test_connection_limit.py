"""Ten acts replicas against a MariaDB whose max_connections is far below what they may open.

The requests that get no connection are retryable 503s with a JSON body, never 500s; a refused
upvote wrote nothing; the refusals are logged as one event per burst, not a traceback each; and
once the server has room again every replica serves, without a restart. The server is the
test's own (support/private_mariadb.py): a low max_connections on the shared one would fail
everyone else's tests.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from support.private_mariadb import private_mariadb
from support.processes import ServiceProcess

pytestmark = pytest.mark.mysql

REPLICAS = 10
POOL = 4
MAX_CONNECTIONS = 16  # MariaDB's least is 10; the replicas could open 10 x (4 + 2)
REQUESTS = 3000
IN_FLIGHT = 80


async def _load(urls: list[str], act_id: int) -> tuple[Counter, int, list[httpx.Response]]:
    statuses: Counter = Counter()
    upvoted = 0
    refused: list[httpx.Response] = []
    limit = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=IN_FLIGHT)) as client:
        async def one(i: int) -> None:
            nonlocal upvoted
            base = urls[i % len(urls)] + "/api/v1"
            async with limit:
                if i % 2:
                    r = await client.post(base + "/acts/upvote", json=[act_id])
                    upvoted += r.status_code == 200
                else:
                    r = await client.get(base + ("/categories" if i % 4 == 0 else "/_count"))
            statuses[r.status_code] += 1
            if r.status_code == 503 and len(refused) < 20:
                refused.append(r)
        await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    return statuses, upvoted, refused


def test_too_many_connections_is_a_retryable_503_never_a_500(tmp_path):
    with private_mariadb(tmp_path, f"--max-connections={MAX_CONNECTIONS}") as server:
        users = ServiceProcess("users", f"sqlite:///{tmp_path}/users.db", tmp_path)
        replicas = [ServiceProcess("acts", server.url, tmp_path, users_url=users.url,
                                   extra_args=["--db-pool", str(POOL)]) for _ in range(REPLICAS)]
        try:
            for replica in [users, *replicas]:
                replica.wait_healthy(90)
            first = replicas[0].url + "/api/v1"
            assert httpx.post(f"{users.url}/api/v1/users",
                              json={"username": "alice", "password": "a" * 40}).status_code == 201
            assert httpx.post(first + "/categories", json=["Nature"]).status_code == 201
            act = {"actId": 7, "username": "alice", "timestamp": "09-04-2019:00-30-14", "caption": "c",
                   "categoryName": "Nature", "imgB64": "aGVsbG8="}
            assert httpx.post(first + "/acts", json=act, timeout=30).status_code == 201

            statuses, upvoted, refused = asyncio.run(_load([r.url for r in replicas], 7))

            assert set(statuses) <= {200, 503}, statuses
            assert statuses[503] > 0, f"the limit was never reached: {statuses}"
            for r in refused:
                assert "too many connections" in r.json()["error"] and r.headers["retry-after"] == "1"
            logs = [r.log_path.read_text(errors="replace") for r in replicas]
            assert any("event=db_no_connection" in log for log in logs)
            assert sum(log.count("Traceback") for log in logs) == 0

            # Room again: every replica serves, and only the answered upvotes were written.
            server.admin("SET GLOBAL max_connections = 200")
            for replica in replicas:
                assert replica.healthy()
                assert httpx.get(replica.url + "/api/v1/categories").json() == {"Nature": 1}
            listed = httpx.get(first + "/categories/Nature/acts").json()
            assert listed[0]["upvotes"] == upvoted
        finally:
            for replica in replicas:
                replica.stop()
            users.stop()
