"""`up --ports-from N` (port_shift.py): every replica range and dependency port moves together."""

import pytest

from selfieless.orchestrator.port_shift import lowest_port, offset, shift_ports
from selfieless.orchestrator.stack import BUNDLED_DOCKER_STACK, BUNDLED_STACK, StackError, load_stack


def ranges(stack):
    return {n: str(s.host_ports) for n, s in stack.services.items()}


def test_the_bundled_stack_moves_as_one_block():
    stack = load_stack(BUNDLED_STACK)
    assert lowest_port(stack) == 8000
    moved = shift_ports(stack, 9400)
    assert ranges(moved) == {"users": "9500-9509", "acts": "9400-9409", "web": "9600-9609"}
    assert moved.gateway.port == stack.gateway.port          # the gateway has --port
    assert shift_ports(moved, 9400) == moved                 # already there: nothing moves
    assert shift_ports(stack, None) is stack and shift_ports(stack, 8000) == stack


def test_dependencies_move_too():
    stack = load_stack(BUNDLED_DOCKER_STACK)
    moved = shift_ports(stack, 20000)
    assert offset(stack, 20000) == 12000
    assert ranges(moved)["acts"] == "20000-20009"
    assert moved.dependencies["db"].host_port == 13306 + 12000


@pytest.mark.parametrize("ports_from, problem", [
    (65530, "--ports-from 65530: services.users.host_ports would move from 8100 to 65630, outside 1-65535"),
    (0, "--ports-from 0: services.acts.host_ports would move from 8000 to 0, outside 1-65535"),
])
def test_a_move_out_of_range_is_refused_naming_the_field(ports_from, problem):
    with pytest.raises(StackError) as e:
        shift_ports(load_stack(BUNDLED_STACK), ports_from)
    assert e.value.problems == [problem]


def test_a_move_onto_the_gateway_port_is_refused_by_the_stack_rules():
    with pytest.raises(StackError) as e:
        shift_ports(load_stack(BUNDLED_STACK), 75)   # acts 75-84 would include the gateway's 80
    assert "overlaps the gateway port 80" in str(e.value)
