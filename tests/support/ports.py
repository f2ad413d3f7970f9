"""Free TCP ports for test servers.

Ports come from 20000-32767, below the kernel's ephemeral range (32768+ by default): a port there
can be taken at any moment as the local end of some outgoing connection, and a replica started on
it later fails to bind. Ranges are random so parallel test runs rarely collide, and never handed
out twice within one run.
"""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 20000, 32767
_handed_out: set[int] = set()


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """True when nothing listens on `port` (SO_REUSEADDR: TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def free_port_range(n: int) -> range:
    """n consecutive free ports."""
    return free_port_blocks(n)[0]


def free_port_blocks(n: int, count: int = 1, spacing: int = 0) -> list[range]:
    """`count` blocks of n consecutive free ports, block i starting `spacing` * i after the first
    (a stack whose ranges move together, like stacks/scale.yaml's under `--ports-from`). Only the
    blocks are handed out, not the gaps between them: late in a full run, ports handed out earlier
    leave few stretches of thousands free, and the gaps need not be."""
    span = n + spacing * (count - 1)
    for _ in range(2000):
        first = random.randrange(_LOW, _HIGH - span)
        blocks = [range(first + spacing * i, first + spacing * i + n) for i in range(count)]
        if all(not _handed_out.intersection(b) and all(port_is_free(p) for p in b) for b in blocks):
            for b in blocks:
                _handed_out.update(b)
            return blocks
    raise RuntimeError(f"no {count} free blocks of {n} ports, {spacing} apart, in {_LOW}-{_HIGH}")


def free_port(avoid: range = range(0)) -> int:
    """A free port outside `avoid` (say, the whole span a stack declares, of which only the blocks
    its test uses were checked free: a gateway port inside it is refused as an overlap)."""
    for _ in range(2000):
        port = random.randrange(_LOW, _HIGH)
        if port not in avoid and port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {_LOW}-{_HIGH} outside {avoid}")
