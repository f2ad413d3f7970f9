"""A host port another program holds: the error a driver raises for it, and who holds it.

The holder is looked up the way `ss -ltnp` does, from /proc: the listening socket's inode in
/proc/net/tcp{,6}, then the process with that inode among its open files. Without the right to
read another user's /proc/PID/fd the holder stays unknown (None), and only the port is named.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import DriverError

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


class PortTaken(DriverError):
    """The replica's host port is held by something that is not one of our replicas."""

    def __init__(self, port: int, holder: str | None, message: str | None = None):
        who = f" by {holder}" if holder else " by another program"
        super().__init__(message or f"port {port} is already in use{who}")
        self.port, self.holder = port, holder


def listening_inodes(table: str, port: int) -> set[str]:
    """Inodes of the sockets listening on `port` in the text of /proc/net/tcp or tcp6 (pure)."""
    found = set()
    for line in table.splitlines()[1:]:
        f = line.split()
        if len(f) > 9 and f[3] == _LISTEN and int(f[1].rsplit(":", 1)[1], 16) == port:
            found.add(f[9])
    return found


def holder_of(port: int, proc: Path = Path("/proc")) -> str | None:
    """`pid N (name)` of a process listening on `port`, or None when it cannot be told."""
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            inodes |= listening_inodes((proc / "net" / name).read_text(), port)
        except OSError:
            pass
    inodes.discard("0")
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = os.listdir(pid_dir / "fd")
        except OSError:
            continue  # gone, or another user's
        for fd in fds:
            try:
                if os.readlink(pid_dir / "fd" / fd) in wanted:
                    comm = (pid_dir / "comm").read_text().strip()
                    return f"pid {pid_dir.name} ({comm})"
            except OSError:
                continue
    return None
