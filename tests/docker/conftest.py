"""The Docker deployment tests: every test here is marked `docker` and skips, saying to run
`scripts/docker-prepare`, when no engine answers or the images are missing."""

import pytest

from docker_stack_support import NOT_READY


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/docker/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.docker)
            if NOT_READY is not None:
                item.add_marker(pytest.mark.skip(reason=NOT_READY))
