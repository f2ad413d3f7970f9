"""The swarm tests run against a real multi-node swarm: the lab (`scripts/swarm-lab`), which the
session fixture brings up when none is running and takes down afterwards. They skip, saying how
to run them, when this machine cannot build the lab (not root, no dockerd, no images)."""

from __future__ import annotations

import pytest

from swarm_support import Lab, lab_unavailable


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/swarm/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def lab():
    why = lab_unavailable()
    if why is not None:
        pytest.skip(why)
    lab = Lab()
    lab.up()
    try:
        yield lab
    finally:
        lab.down()
