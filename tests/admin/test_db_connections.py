"""Each replica's connections to its server database, in `GET /api/status` and `/metrics`: the
replica reports them with its passing health answer and the probe carries them over."""

import time

import httpx
import pytest

from admin_support import RunningStack
from support.databases import fresh_database
from test_metrics import scrape, value


@pytest.mark.mysql
def test_status_and_metrics_show_the_connections_each_replica_holds(tmp_path):
    with fresh_database("mariadb", tmp_path) as url:
        stack = RunningStack(tmp_path, database_url=url)
        try:
            def held():
                replicas = httpx.get(stack.url + "/api/status", timeout=10).json()["services"]["acts"]["replicas"]
                return replicas[0]["id"], replicas[0]["port"], replicas[0]["db_connections"]
            deadline = time.monotonic() + 30
            while held()[2] is None:  # until a probe after the replica's first query
                assert time.monotonic() < deadline, "no replica reported its connections"
                time.sleep(0.2)
            rid, port, n = held()
            assert 1 <= n <= 6  # the health check's own at least; the pool (4) and 2 threaded ones at most
            m = scrape(stack)
            assert 1 <= value(m, "selfieless_replica_db_connections", service="acts", replica=rid, port=str(port)) <= 6
        finally:
            stack.close()
