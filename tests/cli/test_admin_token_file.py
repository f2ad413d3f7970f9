"""The admin token read from a file ($SELFIELESS_ADMIN_TOKEN_FILE: how `up --detach`'s task gets
it, as a Swarm secret) and `--admin swarm://STACK` failing clearly where there is no swarm."""

from __future__ import annotations

import httpx

from cli_support import UpProcess, run_cli, write_test_stack
from support.ports import free_port_range


def test_up_takes_its_admin_token_from_the_file_the_environment_names(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("f1le-t0ken\n")   # a secret's file may end with a newline
    stack = write_test_stack(tmp_path / "stack.yaml", free_port_range(3), free_port_range(3))
    monkeypatch.setenv("SELFIELESS_ADMIN_TOKEN_FILE", str(token_file))
    up = UpProcess(tmp_path, stack)
    try:
        up.wait_ready(headers={"Authorization": "Bearer f1le-t0ken"})
        assert httpx.get(up.admin + "/api/status", timeout=5, trust_env=False).status_code == 401
        r = run_cli("status", "--admin", up.admin, "--admin-token", "f1le-t0ken")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        up.stop()


def test_an_unreadable_token_file_is_refused(tmp_path):
    r = run_cli("up", "--state-dir", str(tmp_path), env={"SELFIELESS_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})
    assert r.returncode == 1
    assert "$SELFIELESS_ADMIN_TOKEN_FILE: cannot read" in r.stderr and "missing" in r.stderr


def test_a_detached_stacks_admin_api_needs_a_reachable_manager(tmp_path):
    r = run_cli("status", "--admin", "swarm://shop", env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert r.returncode == 1
    assert "the control plane of shop (through unix://" in r.stderr, r.stderr
