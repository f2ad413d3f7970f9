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
    for _ in range(1000):
        first = random.randrange(_LOW, _HIGH - n)
        ports = range(first, first + n)
        if not _handed_out.intersection(ports) and all(port_is_free(p) for p in ports):
            _handed_out.update(ports)
            return ports
    raise RuntimeError(f"no {n} consecutive free ports in {_LOW}-{_HIGH}")


def free_port() -> int:
    return free_port_range(1)[0]
