"""Host ports of a service's range that another program holds: skipped, said, tried again later.

The stack file's promise is "replica i listens on the i-th free port": a port found taken when a
replica was to start on it (the driver raises PortTaken) is left out of the range for
TAKEN_RECHECK seconds, so the reconciler starts that replica on the next free port at once instead
of backing off on the taken one for ever. After that the port is tried again (its holder may be
gone). When no free port is left for a replica the service wants, `place` says so (an event and
the service's status). Pure: the controller keeps the records and carries out the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from .plan import Action, Slot, Start, plan_service

TAKEN_RECHECK = 30.0  # seconds a taken port is left out before it is tried again


@dataclass(frozen=True)
class TakenPort:
    port: int
    holder: str | None  # "pid 123 (nc)", when it could be told
    at: float           # monotonic: when a start found it taken


def record(taken: Mapping[int, TakenPort], port: int, holder: str | None, now: float) -> dict[int, TakenPort]:
    return {**taken, port: TakenPort(port, holder, now)}


def _current(taken: Mapping[int, TakenPort], now: float) -> dict[int, TakenPort]:
    return {p: t for p, t in taken.items() if now - t.at < TAKEN_RECHECK}


def _who(t: TakenPort) -> str:
    return f"{t.port} ({t.holder})" if t.holder else str(t.port)


def taken_text(service: str, t: TakenPort, ports: str) -> str:
    """The event of a start that found its port taken."""
    by = f"by {t.holder}" if t.holder else "by another program"
    return (f"port {t.port} is taken {by}: {service} starts on the next free port of {ports} "
            f"(port {t.port} is tried again after {TAKEN_RECHECK:g} s)")


def place(service: str, desired: int, slots: Iterable[Slot], ports: Iterable[int],
          taken: Mapping[int, TakenPort], now: float) -> tuple[list[Action], str | None]:
    """The convergence plan (plan.py) over the ports not recently found taken, and, when replicas
    the full range would have placed find no port, the sentence that says so (else None)."""
    slots, ports = list(slots), list(ports)
    held = _current(taken, now)
    actions = plan_service(service, desired, slots, [p for p in ports if p not in held])
    wanted = sum(isinstance(a, Start) for a in plan_service(service, desired, slots, ports))
    short = wanted - sum(isinstance(a, Start) for a in actions)
    if short <= 0:
        return actions, None
    span = f"{ports[0]}-{ports[-1]}" if ports else "-"
    return actions, (f"no free port in {span} for {short} replica{'s' if short != 1 else ''} of {service}: "
                     f"taken by other programs: {', '.join(_who(t) for _, t in sorted(held.items()))}; "
                     f"tried again every {TAKEN_RECHECK:g} s")
