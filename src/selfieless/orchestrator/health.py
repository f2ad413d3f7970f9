"""Health probes: the TCP check of dependencies, and the pure verdict on what a probe result means.

An HTTP probe (probe.py) is `GET <path>` with a timeout; anything but a 200 (another status, a
timeout, a refused or reset connection) is a failure. It keeps one connection per replica and
opens a new one after any failure and at least once a minute (see probe.py for why).
"""

from __future__ import annotations

import asyncio
import enum
from typing import Awaitable, Callable

from .replica import ReplicaState

# (host, port, path, timeout) -> (ok, detail)
Probe = Callable[[str, int, str, float], Awaitable[tuple[bool, str]]]


# How long a TCP check waits to see whether the peer closes a fresh connection at once.
TCP_SETTLE = 0.2


async def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """A dependency's check: a TCP connection opens and is not closed at once. (Docker's port
    proxy accepts a connection even while nothing listens in the container, then closes it.)"""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        return False, f"no connection within {timeout:g} s"
    except OSError as e:
        return False, f"connection failed ({e.strerror or e})"
    try:
        data = await asyncio.wait_for(reader.read(1), min(timeout, TCP_SETTLE))
        return (True, "open") if data else (False, "connection closed at once")
    except asyncio.TimeoutError:
        return True, "open"  # a server that waits for the client to speak first
    except OSError as e:
        return False, f"connection reset ({e.strerror or e})"
    finally:
        writer.close()


class Verdict(str, enum.Enum):
    BECAME_READY = "became_ready"   # first success: join the pool
    HEALTHY = "healthy"             # still fine
    RECOVERED = "recovered"         # fine again after failures below the threshold / an ejection
    FAILING = "failing"             # failed, threshold not reached yet
    STILL_STARTING = "still_starting"
    UNHEALTHY = "unhealthy"         # replace it


def verdict(state: ReplicaState, ok: bool, consecutive_failures: int, failure_threshold: int,
            started_at: float, now: float, start_grace: float) -> tuple[Verdict, int]:
    """What a probe result means for a replica; returns (verdict, new consecutive failure count)."""
    if state == ReplicaState.STARTING:
        if ok:
            return Verdict.BECAME_READY, 0
        # Failures while booting are expected; only the start grace running out counts.
        if now - started_at >= start_grace:
            return Verdict.UNHEALTHY, consecutive_failures + 1
        return Verdict.STILL_STARTING, consecutive_failures + 1
    if ok:
        return (Verdict.RECOVERED if consecutive_failures else Verdict.HEALTHY), 0
    failures = consecutive_failures + 1
    return (Verdict.UNHEALTHY if failures >= failure_threshold else Verdict.FAILING), failures
