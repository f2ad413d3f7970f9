"""Fixtures for the gateway tests (helpers live in gw_support, a name no other suite uses)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gw_support import LoopThread, ProcBackend, RawBackend, ThreadBackend  # noqa: E402

from selfieless.gateway import Gateway, GatewayConfig  # noqa: E402


@pytest.fixture(scope="session")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="session")
def backends():
    """Three thread backends A, B, C shared by the session (stateless apart from _log)."""
    bs = [ThreadBackend(name) for name in ("A", "B", "C")]
    yield bs
    for b in bs:
        b.stop()


@pytest.fixture
def make_gateway(loop_thread):
    """``make_gateway(routes, {service: [backend, ...]}, **config)`` -> started Gateway."""
    made = []

    def make(routes=None, replicas=None, on_eject=None, on_backend_error=None, **cfg):
        cfg.setdefault("port", 0)
        cfg.setdefault("no_replica_wait", 2.0)
        gw = Gateway(GatewayConfig(**cfg), routes=routes if routes is not None else {"/api/v1": "acts"},
                     on_eject=on_eject, on_backend_error=on_backend_error)

        async def start():
            for service, bs in (replicas or {}).items():
                pool = gw.pool(service)
                for b in bs:
                    pool.add(b.id, "127.0.0.1", b.port)
            await gw.start()

        loop_thread.run(start())
        made.append(gw)
        return gw

    yield make
    for gw in made:
        loop_thread.run(gw.stop(grace=1.0))


@pytest.fixture
def proc_backends():
    made = []

    def make(*ids):
        bs = [ProcBackend(i) for i in ids]
        made.extend(bs)
        return bs

    yield make
    for b in made:
        b.kill()




@pytest.fixture
def raw_backend():
    """``raw_backend(reply, after="close")`` -> a started :class:`gw_support.RawBackend`."""
    made = []

    def make(reply: bytes, after: str = "close") -> RawBackend:
        made.append(RawBackend(reply, after))
        return made[-1]

    yield make
    for b in made:
        b.close()
