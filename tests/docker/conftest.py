"""The Docker deployment tests: every test here is marked `docker` and skips, saying to run
`scripts/docker-prepare`, when no engine answers or the images are missing (and fails when the
engine is there but broken)."""

import pytest

from docker_stack_support import require_images


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/docker/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session", autouse=True)  # session: before any module-scoped stack starts
def _docker_ready():
    require_images()
