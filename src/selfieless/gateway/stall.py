"""Which backends of a service are stalled and leave the rotation now (pure, no sockets, no clock).

A backend is *stalled* when a read request (GET, HEAD, ...) has waited on it for ``threshold``
seconds without a response byte and nothing at all came from it in that time, while a sibling
answered since that read was sent and has nothing of its own waiting that long. (Clients that
wait for each answer soon all wait on the stalled backend, so its siblings go idle rather than
keep answering: "answered since the read was sent, and is not stalling too" is the evidence.) A node whose network is cut looks exactly like that, and so does a paused or
hung replica; the control plane's health probe would take one probe interval plus one probe
timeout to see it. The gateway *withdraws* a stalled backend: no new requests, its waiting reads
move elsewhere (``exchange.Failure.STALLED``), and the control plane is told so that a probe
decides at once. Withdrawing is not replacing: a passing probe, or an answer from the backend,
puts it back.

What must not happen, and the rule that prevents it:

* A write that legitimately takes seconds (a large category delete holding the database) is not
  evidence: only reads count, and a backend that answers anything meanwhile is not stalled.
* A service with one backend, or whose backends all stall together (a shared dependency: the
  database is busy), keeps them all: a backend is only withdrawn while a sibling still in rotation
  answers, with no read of its own waiting even half the threshold, and that sibling is never
  withdrawn in the same pass.
* At most half the service (at least one) is withdrawn at a time, like the control plane's
  disruption budget (``orchestrator.disruption``) and Envoy's maximum ejection percentage.

When every backend of a service stalls together for a while, no one of them is to blame and none
is withdrawn, but something they all need (the database, or a lock held in it) is not answering:
:func:`stalled_together` says so once per episode, for an event, so that a stall that the health
probes do not see (they may still pass) is not silent.

The sweep (``Gateway._sweep``) gathers the figures once per interval from the requests in
flight; the request path itself keeps no timer and no extra bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

MAX_WITHDRAWN_FRACTION = 0.5
# Backends all silent this many thresholds together is a shared stall worth an event: shorter
# shared pauses (a busy database, a loaded machine) are ordinary.
TOGETHER_AFTER = 4.0


class Seen(NamedTuple):
    """One backend of a service, as the sweep saw it."""

    in_rotation: bool  # ready (False: withdrawn, ejected or draining)
    withdrawn: bool  # out because it stalled (counts against the budget)
    waiting: float  # longest wait of a read on it with no response byte yet (0: none waiting)
    quiet: float  # seconds since anything came from it (a response byte, a finished response)


def to_withdraw(backends: Sequence[Seen], threshold: float, slack: float = 0.0,
                max_fraction: float = MAX_WITHDRAWN_FRACTION) -> list[int]:
    """Indices of the backends to withdraw now, longest stalled first (empty: none).

    ``threshold`` <= 0 turns the detection off; ``slack`` is how late the sweep may have noticed
    an answer (its interval): ``quiet`` is measured in sweeps.
    """
    if threshold <= 0 or len(backends) < 2:
        return []
    healthy = [b.quiet for b in backends if b.in_rotation and b.waiting < threshold / 2]
    if not healthy:
        return []  # alone, or everyone stalls together: not one backend's fault
    latest = min(healthy)
    stalled = [i for i, b in enumerate(backends)
               if b.in_rotation and b.waiting >= threshold and b.quiet >= threshold
               and latest <= b.waiting + slack]  # a sibling answered since this read was sent
    if not stalled:
        return []
    counted = sum(1 for b in backends if b.in_rotation or b.withdrawn)
    room = max(1, int(counted * max_fraction)) - sum(1 for b in backends if b.withdrawn)
    if room <= 0:
        return []
    stalled.sort(key=lambda i: -backends[i].waiting)
    return stalled[:room]


def stalled_together(backends: Sequence[Seen], threshold: float, reported: bool) -> bool:
    """A service's "stalled together" mark after this sweep (``reported``: its value before).

    It turns on when every backend in rotation, at least two, has held a read ``TOGETHER_AFTER``
    thresholds with nothing from it meanwhile; it stays on, so the episode is reported once,
    until one of them answers again.
    """
    if threshold <= 0:
        return False
    live = [b for b in backends if b.in_rotation]
    if reported:
        return not any(b.quiet < threshold for b in live)
    long = threshold * TOGETHER_AFTER
    return len(live) >= 2 and all(b.waiting >= long and b.quiet >= long for b in live)
