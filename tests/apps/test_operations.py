"""Operational endpoints: _health, _crash, _count (api.md, "Operational endpoints")."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from selfieless.apps.common.settings import parse_settings
from support.processes import ServiceProcess


def test_health(api):
    r = api.acts.get("/_health")
    assert (r.status_code, r.json()) == (200, {})
    assert api.users.get("/_health").json() == {}


def test_health_tells_the_connections_held_to_a_server_database(api):
    header = api.acts.get("/_health").headers.get("x-selfieless-db-connections")
    if api.stack.backend == "sqlite":
        assert header is None
    else:  # at least the health check's own; at most the pool (4) and the 2 threaded ones
        assert header is not None and 1 <= int(header) <= 6


def test_count_includes_failures_and_excludes_operational_routes(api):
    assert api.acts.get("/_count").json() == [0]
    api.acts.get("/categories")                 # 204
    api.acts.post("/categories", json=[])      # 400
    api.acts.get("/nothing")                    # 404
    api.acts.put("/categories")                 # 405
    api.acts.get("/_health")
    api.acts.get("/_count")
    api.acts.get("/_count/")
    assert api.acts.get("/_count").json() == [4]
    r = api.acts.delete("/_count")
    assert (r.status_code, r.json()) == (200, {})
    assert api.acts.get("/_count").json() == [0]


def test_count_is_per_service_and_username_checks_count_for_users(api):
    api.add_user()
    api.add_category()
    api.users.delete("/_count")
    api.acts.delete("/_count")
    api.upload("alice", "Nature")
    assert api.acts.get("/_count").json() == [1]
    assert api.users.get("/_count").json() == [1]  # the acts service's username check


def test_requests_outside_the_api_are_not_counted(api):
    httpx.get(api.stack.acts.url + "/openapi.json")
    httpx.get(api.stack.acts.url + "/")
    assert api.acts.get("/_count").json() == [0]


@pytest.fixture
def spare_acts(stack, tmp_path):
    """A replica of its own, so crashing it leaves the shared fixture alone."""
    replica = ServiceProcess("acts", stack.database_url, tmp_path, users_url=stack.users.url,
                             extra_args=["--allow-crash"]).wait_healthy()
    yield replica
    replica.stop()


def test_crash_makes_every_request_of_that_replica_500(api, spare_acts):
    base = spare_acts.url + "/api/v1"
    r = httpx.post(base + "/_crash")
    assert (r.status_code, r.json()) == (200, {})
    for method, path in [("GET", "/_health"), ("GET", "/categories"), ("GET", "/_count"),
                         ("POST", "/_crash"), ("GET", "/nothing"), ("DELETE", "/acts/1")]:
        r = httpx.request(method, base + path)
        assert r.status_code == 500, (method, path)
        assert "crash" in r.json()["error"]
    # Its sibling on the same database is untouched.
    assert api.acts.get("/_health").status_code == 200
    assert api.acts.get("/acts/count").json() == [0]


@pytest.mark.parametrize("argv, env, allowed", [
    ([], None, False),                            # opt-in: a replica started by hand cannot be broken
    (["--allow-crash"], None, True),
    ([], "1", True),                              # how the bundled course stacks turn it on
    (["--no-crash"], "1", False),
    ([], "0", False),
])
def test_crash_is_opt_in(monkeypatch, argv, env, allowed):
    if env is None:
        monkeypatch.delenv("SELFIELESS_ALLOW_CRASH", raising=False)
    else:
        monkeypatch.setenv("SELFIELESS_ALLOW_CRASH", env)
    assert parse_settings("acts", ["--database-url", "sqlite://", *argv]).allow_crash is allowed


def test_crash_is_off_unless_asked_for(stack, tmp_path):
    replica = ServiceProcess("acts", stack.database_url, tmp_path, users_url=stack.users.url).wait_healthy()
    try:
        r = httpx.post(replica.url + "/api/v1/_crash")
        assert r.status_code == 403 and "disabled" in r.json()["error"]
        assert httpx.get(replica.url + "/api/v1/_health").status_code == 200
    finally:
        replica.stop()


def test_health_fails_when_the_database_is_broken(tmp_path):
    path = tmp_path / "users.db"
    replica = ServiceProcess("users", f"sqlite:///{path}", tmp_path).wait_healthy()
    try:
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE request_counts")
        r = httpx.get(replica.url + "/api/v1/_health")
        assert r.status_code == 500 and "database" in r.json()["error"]
    finally:
        replica.stop()


def test_health_is_ok_while_another_writer_holds_the_database(tmp_path):
    """A long legitimate write (e.g. a large category delete) makes the database busy, not dead:
    the check answers 200 well inside the orchestrator's 1 s probe timeout."""
    path = tmp_path / "users.db"
    replica = ServiceProcess("users", f"sqlite:///{path}", tmp_path).wait_healthy()
    writer = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE request_counts SET n = n")
        time.sleep(1.2)  # older than the replica's last write proof: the check must try to write
        for _ in range(3):
            t0 = time.monotonic()
            r = httpx.get(replica.url + "/api/v1/_health", timeout=30)
            took = time.monotonic() - t0
            assert (r.status_code, r.json()) == (200, {})
            assert took < 3.0, f"the health check waited {took:.2f} s for the lock"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        replica.stop()


def test_health_fails_when_the_database_refuses_writes(tmp_path):
    path = tmp_path / "users.db"
    replica = ServiceProcess("users", f"sqlite:///{path}", tmp_path).wait_healthy()
    try:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON request_counts "
                         "BEGIN SELECT RAISE(ABORT, 'writes refused'); END")
        time.sleep(1.2)  # past the last write proof
        r = httpx.get(replica.url + "/api/v1/_health")
        assert r.status_code == 500 and "database" in r.json()["error"]
    finally:
        replica.stop()


def test_client_gone_mid_body_is_quiet_and_writes_nothing(api):
    """A client (or the gateway, refusing a body) that goes away halfway through a request body:
    the replica writes nothing and logs no traceback, for a sized body and a chunked one."""
    import socket
    import time

    before = api.table_rows()
    port = int(api.acts.base_url.port)
    for head, part in (
        (b"POST /api/v1/categories HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", b'["Half'),
        (b"POST /api/v1/acts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"6\r\n{\"act\r\n"),
    ):
        with socket.create_connection(("127.0.0.1", port), 5) as sock:
            sock.sendall(head + part)
            time.sleep(0.3)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        time.sleep(0.3)  # an RST, as the gateway's abort sends
    assert api.acts.get("/_health").status_code == 200
    assert api.table_rows() == before
    log = api.stack.acts.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-3000:]
