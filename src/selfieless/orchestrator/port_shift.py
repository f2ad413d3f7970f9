"""`up --ports-from N`: every host port the stack takes besides the gateway's, moved together.

The replica ranges of the services and the host ports of the dependencies keep their places
relative to each other and move by one offset, N minus the lowest of them, so the lowest lands on
N; the admin port moves by the same offset (the CLI's default 8090 becomes N + 90 for the bundled
stack, whose lowest port is 8000). Because it is "lowest lands on N", moving a stack that is
already there changes nothing: `apply` of the file to a stack started with --ports-from gets the
same ports. Pure: a stack in, a re-validated stack out.
"""

from __future__ import annotations

from .stack import Stack, StackError, parse_stack


def lowest_port(stack: Stack) -> int | None:
    """The lowest host port of the stack's replica ranges and dependencies (None: it has none)."""
    ports = [s.host_ports.first for s in stack.services.values() if s.host_ports is not None]
    ports += [d.host_port for d in stack.dependencies.values() if d.host_port is not None]
    return min(ports, default=None)


def offset(stack: Stack, ports_from: int) -> int:
    low = lowest_port(stack)
    if low is None:
        raise StackError([f"--ports-from {ports_from}: stack {stack.name!r} names no host ports to move "
                          f"(with the swarm driver, Swarm picks them)"])
    return ports_from - low


def moved(port: int, by: int, what: str, ports_from: int) -> int:
    """`port` moved by `by`; refused with the field it came from when it leaves 1-65535."""
    if not 1 <= port + by <= 65535:
        raise StackError([f"--ports-from {ports_from}: {what} would move from {port} to {port + by}, "
                          f"outside 1-65535"])
    return port + by


def shift_ports(stack: Stack, ports_from: int | None) -> Stack:
    """`stack` with its replica ranges and dependency ports moved so the lowest is `ports_from`."""
    if ports_from is None:
        return stack
    by = offset(stack, ports_from)
    if by == 0:
        return stack
    data = stack.model_dump(mode="python")
    for name, svc in data["services"].items():
        r = svc.get("host_ports")
        if r is not None:
            what = f"services.{name}.host_ports"
            svc["host_ports"] = {"first": moved(r["first"], by, what, ports_from),
                                 "last": moved(r["last"], by, what, ports_from)}
    for name, dep in data["dependencies"].items():
        if dep.get("host_port") is not None:
            dep["host_port"] = moved(dep["host_port"], by, f"dependencies.{name}.host_port", ports_from)
    return parse_stack(data, f"stack {stack.name!r} moved by --ports-from {ports_from}")
