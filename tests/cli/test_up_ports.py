"""`up --ports-from N` and the admin port (cli/up.py), on the bundled stack file; no stack runs."""

from pathlib import Path

import pytest

from selfieless.cli.up import UpOptions, admin_port, prepare_stack
from selfieless.orchestrator.stack import StackError


def ranges(stack):
    return {n: str(s.host_ports) for n, s in stack.services.items()}


def test_ports_from_moves_every_range_and_the_admin_port_but_not_the_gateway():
    opts = UpOptions(port=9080, ports_from=9000)
    stack = prepare_stack(opts)
    assert ranges(stack) == {"users": "9100-9109", "acts": "9000-9009", "web": "9200-9209"}
    assert stack.gateway.port == 9080
    assert admin_port(opts) == 9090
    assert admin_port(UpOptions(ports_from=9000, admin_port=7000)) == 7000   # --admin-port wins
    assert admin_port(UpOptions()) == 8090
    assert ranges(prepare_stack(UpOptions(port=9080)))["acts"] == "8000-8009"


def test_an_admin_port_moved_out_of_range_is_refused():
    with pytest.raises(StackError) as e:
        admin_port(UpOptions(ports_from=65500))
    assert "the admin port (use --admin-port) would move from 8090 to 65590" in str(e.value)


def test_a_custom_stack_file_moves_from_its_own_lowest_port(tmp_path):
    from cli_support import write_test_stack

    path = write_test_stack(Path(tmp_path) / "s.yaml", range(30000, 30004), range(30010, 30011))
    stack = prepare_stack(UpOptions(stack_path=path, ports_from=31000))
    assert ranges(stack) == {"users": "31010", "acts": "31000-31003"}
