"""The control-plane lease: which one control plane of a stack may act, decided from plain values.

Several control planes of one stack may run at once (a Swarm service moved to another manager
while the old task is cut off but alive, a second `up` by mistake). Only the holder of the lease
acts: scales, heals, rolls out, writes through the driver. The lease is a record (holder,
deadline) kept where a write commits only with the cluster's agreement (Swarm: a config's labels,
updated with its version index through Raft; drivers/swarm_lease.py), so a control plane cut off
from the quorum cannot renew it.

The rules, with `L` the lease length and `m` the safety margin (`Terms`):
- the holder writes `deadline = t0 + L`, `t0` read *before* the write is sent, so the deadline
  it believes is never later than the one stored;
- the holder acts only while `now < deadline - m` (`may_act`), and renews every `L / 3`: two
  renewals may fail before it has to stop;
- another control plane takes over only once `now >= deadline + m` (`next_step`), so between the
  last moment the old holder may act and the first moment a new one may there are `2 m`: room
  for clock differences between managers and a driver call already on its way.
- a holder that stops on purpose releases the lease (holder empty): the next may act at once.

Every function here is pure (no clock, no I/O): the caller passes `now`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# The labels of the Swarm object that holds the lease (drivers/swarm_lease.py).
LABEL_HOLDER = "selfieless.lease.holder"
LABEL_DEADLINE = "selfieless.lease.deadline"


@dataclass(frozen=True)
class Lease:
    holder: str        # "" when released: free to take at once
    deadline: float    # wall clock (time.time()) after which the holder no longer holds it


@dataclass(frozen=True)
class Terms:
    seconds: float = 10.0   # how long a renewal holds
    margin: float = 2.0     # stop this long before the deadline; take over this long after it

    def __post_init__(self) -> None:
        if self.margin <= 0 or self.seconds < 4 * self.margin:
            # Renewals come every L/3: with m < L/4 the second one is still before L - m.
            raise ValueError(f"lease: the length ({self.seconds:g} s) must be at least 4 times the margin "
                             f"({self.margin:g} s), and the margin more than 0")

    @property
    def renew_every(self) -> float:
        return self.seconds / 3


class Step(enum.Enum):
    CREATE = "create"        # no lease record yet: create it, holding it
    RENEW = "renew"          # ours: push the deadline on
    TAKE_OVER = "take over"  # released, or its holder's deadline (plus the margin) has passed
    WAIT = "wait"            # someone else's, still valid: look again at the returned time


def next_step(read: Lease | None, me: str, now: float, terms: Terms) -> tuple[Step, float]:
    """What a control plane does after reading the lease, and when the read's answer changes
    (for WAIT: the earliest time it may take over; else `now`)."""
    if read is None:
        return Step.CREATE, now
    if read.holder == me:
        return Step.RENEW, now
    free_at = read.deadline + terms.margin
    if read.holder == "" or now >= free_at:
        return Step.TAKE_OVER, now
    return Step.WAIT, free_at


def granted(me: str, sent_at: float, terms: Terms) -> Lease:
    """The record to write: held by `me` until `sent_at + L`, `sent_at` read before the write."""
    return Lease(me, sent_at + terms.seconds)


def released(held: Lease) -> Lease:
    """The record a holder writes when it stops on purpose: no holder, and the old deadline kept
    (it says when the last holder stopped at the latest)."""
    return Lease("", held.deadline)


def may_act(held: Lease | None, me: str, now: float, terms: Terms) -> bool:
    """Whether `me`, whose last committed write is `held`, may act now."""
    return held is not None and held.holder == me and now < held.deadline - terms.margin


def stop_by(held: Lease, terms: Terms) -> float:
    """The time the holder must have stopped acting by unless a renewal commits first."""
    return held.deadline - terms.margin


def renew_at(held: Lease, terms: Terms) -> float:
    """When the holder next renews: `L / 3` after its last write was sent."""
    return held.deadline - terms.seconds + terms.renew_every


def to_labels(lease: Lease) -> dict[str, str]:
    return {LABEL_HOLDER: lease.holder, LABEL_DEADLINE: f"{lease.deadline:.3f}"}


def from_labels(labels: dict[str, str] | None) -> Lease | None:
    """The lease a record's labels hold; None when they hold none (a record someone else made, or
    spoilt: taken as no lease, so it is written over, and only through its version index)."""
    labels = labels or {}
    if LABEL_HOLDER not in labels or LABEL_DEADLINE not in labels:
        return None
    try:
        deadline = float(labels[LABEL_DEADLINE])
    except ValueError:
        return None
    if deadline != deadline:   # NaN
        return None
    return Lease(labels[LABEL_HOLDER], deadline)
