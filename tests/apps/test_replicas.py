"""Several replicas of one service on one database: they see the same data and the same counter."""

from __future__ import annotations

import httpx
import pytest
from concurrent.futures import ThreadPoolExecutor

from conftest import act_body
from support.databases import BACKENDS, fresh_database
from support.processes import ServiceProcess


@pytest.fixture
def second_acts(stack, tmp_path):
    replica = ServiceProcess("acts", stack.database_url, tmp_path, users_url=stack.users.url,
                             extra_args=["--allow-crash"]).wait_healthy()
    yield httpx.Client(base_url=replica.url + "/api/v1", timeout=30)
    replica.stop()


def test_write_through_one_read_through_the_other(api, second_acts):
    api.add_user()
    api.add_category()
    body = api.upload("alice", "Nature")
    (act,) = second_acts.get("/categories/Nature/acts").json()
    assert act["actId"] == body["actId"]
    assert second_acts.post("/acts/upvote", json=[body["actId"]]).status_code == 200
    assert api.acts.get("/categories/Nature/acts").json()[0]["upvotes"] == 1
    assert second_acts.get("/categories").json() == {"Nature": 1}


def test_count_agrees_on_both_replicas(api, second_acts):
    for _ in range(3):
        api.acts.get("/categories")
    for _ in range(2):
        second_acts.get("/acts/count")
    assert api.acts.get("/_count").json() == second_acts.get("/_count").json() == [5]
    second_acts.delete("/_count")
    assert api.acts.get("/_count").json() == [0]


def test_crash_on_one_leaves_the_other_healthy(api, second_acts):
    assert second_acts.post("/_crash").status_code == 200
    assert second_acts.get("/_health").status_code == 500
    assert api.acts.get("/_health").status_code == 200
    api.add_category("Still")
    assert api.acts.get("/categories").json() == {"Still": 0}


def test_concurrent_upvotes_across_replicas(api, second_acts):
    api.add_user()
    api.add_category()
    body = api.upload("alice", "Nature")
    clients = [api.acts, second_acts]
    with ThreadPoolExecutor(max_workers=25) as pool:
        codes = list(pool.map(lambda i: clients[i % 2].post("/acts/upvote", json=[body["actId"]]).status_code,
                              range(50)))
    assert codes == [200] * 50
    assert api.acts.get("/categories/Nature/acts").json()[0]["upvotes"] == 50


def test_concurrent_uploads_with_one_act_id_store_one(api, second_acts):
    api.add_user()
    api.add_category()
    body = act_body("alice", "Nature")
    clients = [api.acts, second_acts] * 5
    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = sorted(pool.map(lambda c: c.post("/acts", json=body).status_code, clients))
    assert codes == [201] + [400] * 9
    assert api.act_count() == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_replicas_starting_together_create_the_schema_once(backend, tmp_path):
    """Three replicas racing to create the same tables on an empty database all come up."""
    with fresh_database(backend, tmp_path) as url:
        replicas = [ServiceProcess("acts", url, tmp_path, users_url="http://127.0.0.1:9") for _ in range(3)]
        try:
            for replica in replicas:
                replica.wait_healthy()
            counts = {tuple(httpx.get(r.url + "/api/v1/_count").json()) for r in replicas}
            assert counts == {(0,)}
        finally:
            for replica in replicas:
                replica.stop()


def test_count_is_exact_under_concurrent_load_on_three_replicas(api, stack, tmp_path):
    """Counted requests are committed in batches (group commit): none may be lost or doubled,
    and every replica must answer the same count."""
    import asyncio

    extra = [ServiceProcess("acts", stack.database_url, tmp_path, users_url=stack.users.url) for _ in range(2)]
    try:
        for replica in extra:
            replica.wait_healthy()
        urls = [stack.acts.url] + [r.url for r in extra]
        api.add_category()
        api.acts.delete("/_count")
        # Several clients per replica, each with many requests in flight; reads, failed writes
        # (400) and unknown paths (404) all count.
        paths = [("GET", "/categories"), ("GET", "/acts/count"), ("POST", "/acts/upvote"), ("GET", "/no/such/route")]
        per_client, clients_per_replica, in_flight = 250, 3, 20

        async def client(base: str, offset: int) -> list[int]:
            async with httpx.AsyncClient(base_url=base + "/api/v1", timeout=60,
                                         limits=httpx.Limits(max_connections=in_flight)) as c:
                async def one(i: int) -> int:
                    method, path = paths[(i + offset) % len(paths)]
                    body = [999999999999] if method == "POST" else None
                    return (await c.request(method, path, json=body)).status_code
                return await asyncio.gather(*(one(i) for i in range(per_client)))

        async def everyone() -> list[list[int]]:
            return await asyncio.gather(*(client(url, k) for url in urls for k in range(clients_per_replica)))

        statuses = [code for codes in asyncio.run(everyone()) for code in codes]
        sent = len(urls) * clients_per_replica * per_client
        assert len(statuses) == sent == 2250
        assert set(statuses) <= {200, 400, 404}, sorted(set(statuses))
        counts = [httpx.get(url + "/api/v1/_count", timeout=30).json() for url in urls]
        assert counts == [[sent]] * 3
    finally:
        for replica in extra:
            replica.stop()
