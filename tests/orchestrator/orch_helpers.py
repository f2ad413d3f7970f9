"""Helpers for the orchestrator tests (a uniquely named module: test dirs are not packages)."""

from __future__ import annotations

import asyncio
import random
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

ECHO_APP = str(Path(__file__).with_name("echo_app.py"))


def _free(port: int) -> bool:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port_range(n: int) -> range:
    """n consecutive free ports in a high range, randomised so parallel test runs do not collide."""
    for _ in range(200):
        first = random.randrange(20000, 60000 - n)
        if all(_free(p) for p in range(first, first + n)):
            return range(first, first + n)
    raise RuntimeError("no free port range")




def echo_command() -> list[str]:
    return [sys.executable, ECHO_APP, "--port", "{port}"]


async def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` (sync or async) until truthy; returns its value or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def get_json(port: int, path: str = "/api/v1/whoami", timeout: float = 1.0):
    """GET a replica directly; None when it does not answer 200."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as c:
            r = await c.get(f"http://127.0.0.1:{port}{path}")
            return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None
