"""What a running stack shows to anyone, and what it leaves readable on disk.

- The gateway's public `/` names services and how many replicas are ready: no database URL or
  credentials, pids, command lines, addresses or ports (issue: it printed the password twice).
- The admin API's pages forbid framing, MIME sniffing and foreign scripts.
- Nothing `up` or its replicas create (state, logs, the users' SQLite database) is world-readable.
"""

from __future__ import annotations

import stat

import httpx
from sqlalchemy.engine import make_url

from cli_support import UpProcess, replica_pids, write_test_stack
from support.databases import fresh_database
from support.ports import free_port_range


def test_public_root_shows_no_credentials_pids_or_command_lines(tmp_path):
    with fresh_database("postgresql", tmp_path) as db_url:
        url = make_url(db_url)
        stack = write_test_stack(tmp_path / "stack.yaml", free_port_range(2), free_port_range(1))
        up = UpProcess(tmp_path, stack, "--database-url", db_url)
        try:
            st = up.wait_ready(90)
            # The admin API (loopback) does show the full command line: the secret is really there.
            assert url.password in st["services"]["acts"]["replicas"][0]["detail"]
            pids = [*replica_pids(st, "acts").values(), *replica_pids(st, "users").values()]
            ports = [*replica_pids(st, "acts"), *replica_pids(st, "users")]

            r = httpx.get(up.gateway + "/", timeout=5, trust_env=False)
            assert r.status_code == 200
            body = r.json()
            assert body == {"gateway": "selfieless",
                            "services": {"acts": {"ready_replicas": 1}, "users": {"ready_replicas": 1}}}
            text = r.text
            for secret in (db_url, f"{url.username}:{url.password}@", str(url.port), url.database,
                           "--database-url", "python", "127.0.0.1", *map(str, pids), *map(str, ports)):
                assert secret not in text, secret
        finally:
            up.stop()


def test_admin_pages_forbid_framing_sniffing_and_foreign_scripts(tmp_path):
    stack = write_test_stack(tmp_path / "stack.yaml", free_port_range(1), free_port_range(1))
    up = UpProcess(tmp_path, stack)
    try:
        up.wait_ready(90)
        for path in ("/", "/static/dashboard.js", "/api/status", "/metrics", "/nowhere"):
            h = httpx.get(up.admin + path, timeout=5, trust_env=False).headers
            csp = h["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
            assert "default-src 'none'" in csp, path
            assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", path

        # State, logs and the SQLite databases (the users' password hashes) are the owner's only.
        up.status()
        files = [p for p in up.state_dir.rglob("*") if not p.is_symlink()]
        dbs = [p for p in files if p.suffix == ".db"]
        logs = [p for p in files if p.suffix == ".log"]
        assert dbs and logs and (up.state_dir / "admin.json").exists()
        for p in files:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode & 0o077 == 0, f"{p.relative_to(up.state_dir)} is {oct(mode)}"
    finally:
        up.stop()
