"""Holding the control-plane lease: wait for it, renew it, and say when it is lost (the runtime side
of orchestrator/lease.py, whose rules decide everything; the store is the I/O, e.g.
drivers/swarm_lease.SwarmLeaseStore).

    keeper = LeaseKeeper(store, terms)
    await keeper.acquire(stop)         # returns once this control plane holds the lease
    keeper.acting()                    # checked before every driver write (the swarm driver's guard)
    task = asyncio.create_task(keeper.keep(on_lost))
    ...
    await keeper.release()             # on a stop on purpose: the next one may act at once

A store call runs in a worker thread and may hang (a manager cut off from the quorum answers
late or never): the keeper never waits for one past the time it must have stopped acting by, so
`on_lost` is called before the deadline whatever the store does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Any, Callable

from .lease import Lease, Step, Terms, granted, may_act, next_step, released, renew_at, stop_by

log = logging.getLogger(__name__)


def holder_id() -> str:
    """Who this control plane is, in the lease: host (a task's container id in a Swarm service),
    pid and a random part (two starts of one pid on one host differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseKeeper:
    def __init__(self, store: Any, terms: Terms, me: str | None = None,
                 clock: Callable[[], float] = time.time,
                 on_event: Callable[[str], None] | None = None):
        self.store = store
        self.terms = terms
        self.me = me or holder_id()
        self.clock = clock
        self.held: Lease | None = None        # our last committed write
        self.on_event = on_event or (lambda reason: None)
        self.history: list[str] = []          # every lease event's reason, oldest first

    def acting(self) -> bool:
        return may_act(self.held, self.me, self.clock(), self.terms)

    def _say(self, reason: str) -> None:
        self.history.append(reason)
        log.info("lease: %s", reason)
        self.on_event(reason)

    def _attempt(self) -> tuple[Lease | None, Lease | None, float]:
        """One read and, if the rules allow, one write (blocking). Returns what we now hold (None:
        nothing won), what was read, and when to look again if we are waiting."""
        record = self.store.read()
        step, when = next_step(record.lease, self.me, self.clock(), self.terms)
        if step is Step.WAIT:
            return None, record.lease, when
        sent_at = self.clock()
        lease = granted(self.me, sent_at, self.terms)
        return (lease if self.store.write(lease, record) else None), record.lease, sent_at

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this control plane holds the lease (True) or `stop` is set (False)."""
        said_waiting = None
        while not stop.is_set():
            try:
                won, read, when = await asyncio.to_thread(self._attempt)
            except Exception as e:   # the manager did not answer: try again shortly
                log.warning("lease: cannot read or write the lease: %s", e)
                won, read, when = None, None, self.clock() + self.terms.renew_every
            if won is not None:
                self.held = won
                previous = ("no previous holder" if read is None or read.holder == self.me
                            else "released by its previous holder" if read.holder == ""
                            else f"previous holder {read.holder}, its deadline {read.deadline:.3f} "
                                 f"passed {won.deadline - self.terms.seconds - read.deadline:.1f} s before")
                self._say(f"acquired by {self.me} until {won.deadline:.3f} ({previous})")
                return True
            if read is not None and read.holder not in ("", self.me) and said_waiting != read.holder:
                said_waiting = read.holder
                self._say(f"{self.me} waits: held by {read.holder} until {read.deadline:.3f}")
            try:
                await asyncio.wait_for(stop.wait(), max(0.2, min(when - self.clock(), self.terms.renew_every)))
            except asyncio.TimeoutError:
                pass
        return False

    async def keep(self, on_lost: Callable[[str], Any]) -> None:
        """Renew every L/3 while held; when no renewal has committed by the time to stop acting,
        call `on_lost(reason)` (then return)."""
        while self.held is not None:
            held = self.held
            await asyncio.sleep(max(0.0, renew_at(held, self.terms) - self.clock()))
            why = None
            while self.held is held:
                left = stop_by(held, self.terms) - self.clock()
                if left <= 0:
                    break
                try:
                    won, read, _ = await asyncio.wait_for(asyncio.to_thread(self._attempt), left)
                except asyncio.TimeoutError:
                    why = "the lease store did not answer in time"
                    break
                except Exception as e:
                    why = f"cannot renew: {e}"
                    await asyncio.sleep(min(0.5, max(0.0, stop_by(held, self.terms) - self.clock())))
                    continue
                if won is not None:
                    self.held = won
                elif read is not None and read.holder != self.me:
                    why = f"taken by {read.holder}"
                    break
                else:
                    why = "another write came first"
            if self.held is held:   # no renewal committed in time
                self.held = None
                reason = (f"lost by {self.me}: {why or 'no renewal committed'}; stopped acting at "
                          f"{self.clock():.3f}, before its deadline {held.deadline:.3f}")
                self._say(reason)
                result = on_lost(reason)
                if asyncio.iscoroutine(result):
                    await result
                return

    async def release(self) -> None:
        """A stop on purpose: mark the lease free so a waiting control plane acts at once."""
        held, self.held = self.held, None
        if held is None:
            return

        def write() -> bool:
            record = self.store.read()
            if record.lease is None or record.lease.holder != self.me:
                return False
            return self.store.write(released(held), record)

        try:
            if await asyncio.wait_for(asyncio.to_thread(write), self.terms.margin):
                self._say(f"released by {self.me}")
        except Exception as e:   # the successor then waits for the deadline
            log.warning("lease: cannot release the lease: %s", e)
