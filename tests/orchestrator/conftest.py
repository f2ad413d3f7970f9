"""Shared fixtures for the orchestrator tests: async backend, fake clock."""

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"
