"""Finding and talking to a running `selfieless up` through its admin API.

Where the admin API is, first match wins: ``--admin URL``, ``$SELFIELESS_ADMIN_URL``, then
``<state dir>/admin.json`` written by ``up`` (state dir: ``--state-dir``, ``$SELFIELESS_STATE_DIR``,
``~/.local/state/selfieless``). The token: ``--admin-token`` or ``$SELFIELESS_ADMIN_TOKEN``.
``swarm://STACK`` names the control plane of a stack deployed with ``up --driver swarm --detach``,
wherever Swarm runs it (found through the manager at ``$DOCKER_HOST``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from selfieless.orchestrator.assemble import default_state_dir
from selfieless.orchestrator.pids import pid_alive

ADMIN_FILE = "admin.json"
SWARM_SCHEME = "swarm://"


class NoRunningUp(RuntimeError):
    """No `selfieless up` could be found or reached."""


class AdminError(RuntimeError):
    def __init__(self, status: int, message: str, body: Any = None):
        super().__init__(message)
        self.status, self.body = status, body


def read_admin_file(state_dir: Path) -> dict | None:
    """The admin.json of a live `up` in `state_dir`, or None (missing, unreadable or stale)."""
    path = state_dir / ADMIN_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        return None
    return info


def write_admin_file(state_dir: Path, info: dict) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / ADMIN_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(path)
    return path


def remove_admin_file(state_dir: Path, pid: int) -> None:
    path = state_dir / ADMIN_FILE
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


@dataclass
class AdminClient:
    url: str
    token: str | None = None
    timeout: float = 10.0

    @classmethod
    def discover(cls, admin: str | None = None, token: str | None = None,
                 state_dir: Path | None = None) -> "AdminClient":
        token = token or os.environ.get("SELFIELESS_ADMIN_TOKEN") or None
        url = admin or os.environ.get("SELFIELESS_ADMIN_URL")
        if url and url.startswith(SWARM_SCHEME):
            from .detached import admin_url

            url = admin_url(url[len(SWARM_SCHEME):].strip("/"))
        if not url:
            sd = state_dir or default_state_dir()
            info = read_admin_file(sd)
            if info is None:
                raise NoRunningUp(
                    f"no running `selfieless up` found (no live {sd / ADMIN_FILE}). Start one with "
                    f"`selfieless up`, or point at one with --admin URL / $SELFIELESS_ADMIN_URL.")
            url = info["url"]
        return cls(url.rstrip("/"), token)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, timeout: float | None = None, **kw) -> Any:
        try:
            r = httpx.request(method, self.url + path, headers=self._headers(), trust_env=False,
                              timeout=timeout or self.timeout, **kw)
        except httpx.ConnectError as e:
            raise NoRunningUp(f"cannot reach the admin API at {self.url} ({e}); is `selfieless up` running?") from None
        except httpx.HTTPError as e:
            raise NoRunningUp(f"admin API at {self.url} did not answer: {type(e).__name__} {e}") from None
        try:
            body = r.json()
        except ValueError:
            body = r.text
        if r.status_code == 401:
            raise AdminError(401, "the admin API wants a token: pass --admin-token or set $SELFIELESS_ADMIN_TOKEN", body)
        if r.status_code >= 400:
            msg = body.get("error") if isinstance(body, dict) else str(body)
            raise AdminError(r.status_code, msg or f"HTTP {r.status_code}", body)
        return body

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json_body: Any = None, **kw) -> Any:
        return self.request("POST", path, json=json_body, **kw)

    def alive(self) -> bool:
        try:
            httpx.get(self.url + "/api/status", headers=self._headers(), timeout=2.0, trust_env=False)
            return True
        except httpx.HTTPError:
            return False
