"""Shared fixtures for the orchestrator tests: async backend, free port ranges."""

import pytest

from support.ports import free_port_range


@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.fixture
def ports():
    return free_port_range(10)
