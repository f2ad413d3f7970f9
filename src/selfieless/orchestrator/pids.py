"""Is a process still there? One answer for the drivers, the gateway process and the CLI.

A pid alone is weak evidence: an exited child nobody has reaped yet still answers ``kill(pid, 0)``
(it is a zombie), and pids get reused. So liveness reads ``/proc/PID/stat``: a zombie or dead
process is gone, and a caller that recorded the process's kernel start time can tell a reused pid
from the process it started. Without ``/proc``, ``kill(pid, 0)`` is the fallback.
"""

from __future__ import annotations

import os
from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if no such live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # zombie/dead: it is gone, only not reaped yet
        return None
    return int(fields[19])


def pid_alive(pid: int, ticks: int | None = None) -> bool:
    """True while ``pid`` runs (and, when ``ticks`` is given, is still the process started then)."""
    if Path("/proc/self/stat").exists():
        now = start_ticks(pid)
        return now is not None and (ticks is None or now == ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
