"""POST /api/apply's options: a port, the ports_from offset and a driver name, checked before any
stack is parsed (stack_routes.apply_options, a pure function)."""

import pytest

from selfieless.admin.stack_routes import apply_options

CASES = [
    # (request body, what `up` was told, expected complaint or None)
    ({}, {}, None),
    ({"port": 0}, {}, None),
    ({"port": 65535, "driver": "process", "ports_from": 1}, {}, None),
    ({"port": 65536}, {}, '"port" must be a port number (0-65535), not 65536'),
    ({"port": -1}, {}, '"port" must be a port number (0-65535), not -1'),
    ({"port": True}, {}, '"port" must be a port number (0-65535), not True'),
    ({"port": "8080"}, {}, "\"port\" must be a port number (0-65535), not '8080'"),
    ({"ports_from": 0}, {}, '"ports_from" must be a port number (1-65535), not 0'),
    ({"ports_from": False}, {}, '"ports_from" must be a port number (1-65535), not False'),
    # ports_from not in the request: the one `up` was given is checked (and used)
    ({}, {"ports_from": 70000}, '"ports_from" must be a port number (1-65535), not 70000'),
    ({"ports_from": 9000}, {"ports_from": 70000}, None),
    ({"ports_from": None}, {"ports_from": 70000}, None),  # an explicit null: no offset
    ({"driver": 3}, {}, '"driver" must be a driver name, not 3'),
    ({"driver": None}, {}, None),
]


@pytest.mark.parametrize(("body", "up_overrides", "expected"), CASES)
def test_apply_options(body, up_overrides, expected):
    assert apply_options(body, up_overrides) == expected
