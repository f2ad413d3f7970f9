"""Helpers for the admin tests: a real stack (gateway + acts replicas) on an event loop in a thread.

(A uniquely named module: test directories are not packages.)
"""

from __future__ import annotations

import asyncio
import threading
import time

from selfieless.orchestrator.stack import parse_stack
from support.ports import free_port_range


def acts_stack(ports: range, name: str = "admintest", database_url: str = "sqlite:///{state_dir}/acts.db"):
    return parse_stack({
        "name": f"{name}-{ports[0]}", "driver": "process",
        "gateway": {"host": "127.0.0.1", "port": 0, "limits": {"no_replica_wait": 5}},
        "variables": {"database_url": database_url},
        "services": {"acts": {
            "command": ["python", "-m", "selfieless.apps.acts", "--port", "{port}",
                        "--database-url", "{database_url}", "--users-url", "{gateway_url}"],
            "host_ports": f"{ports[0]}-{ports[-1]}", "routes": ["/api/v1"],
            "health": {"interval": 0.5, "timeout": 1.0},
            "replicas": {"initial": 1, "min": 1, "max": len(ports)},
            "autoscale": {"policy": "none"}, "drain_timeout": 3,
            "environment": {"SELFIELESS_ALLOW_CRASH": "1"},
        }},
    })


class LoopThread:
    """An asyncio loop in a daemon thread; `run(coro)` runs a coroutine on it and waits."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        """Run a plain function on the loop thread (where the gateway's counters live)."""
        async def _c():
            return fn(*args)
        return self.run(_c())

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class RunningStack:
    def __init__(self, tmp, *, admin_host="127.0.0.1", token=None, database_url: str | None = None):
        from selfieless.admin import AdminServer
        from selfieless.orchestrator.assemble import start_system

        self.lt = LoopThread()
        self.shutdown_calls = 0
        stack = acts_stack(free_port_range(4), **({"database_url": database_url} if database_url else {}))
        self.system = self.lt.run(start_system(stack, tmp))
        self.orch, self.gw = self.system.orchestrator, self.system.gateway
        self.lt.run(self.orch.wait_ready(60), timeout=70)

        def on_shutdown():
            self.shutdown_calls += 1

        async def mk():
            a = AdminServer(self.orch, self.gw, host=admin_host, port=0, token=token, shutdown=on_shutdown,
                            state_dir=str(tmp))
            await a.start()
            return a

        self.admin = self.lt.run(mk())
        self.url = f"http://127.0.0.1:{self.admin.port}"
        self.gateway_url = f"http://127.0.0.1:{self.gw.port}"

    def wait(self, predicate, timeout=30, what="condition"):
        deadline = time.monotonic() + timeout
        while not self.lt.call(predicate):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def close(self):
        try:
            self.lt.run(self.admin.stop())
            self.lt.run(self.system.stop())
        finally:
            self.lt.close()
