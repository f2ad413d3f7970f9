"""Replica pools: which replica gets the next request (pure bookkeeping, no sockets).

A :class:`ReplicaPool` holds the gateway's view of one service's replicas, its *backends*
(:class:`Backend`), the rotation of *ready* ones and, per backend, the idle keep-alive
connections the proxy may reuse (opaque objects with ``closed``, ``idle_since`` and ``close()``;
the pool parks and closes them but never reads or writes their bytes). Selection is strict
round-robin over the ready list, or least-outstanding with round-robin tie-breaking.

Round-robin stays fair and deterministic under change: the rotation is a list and a cursor;
new replicas join at the end, and removing one before the cursor moves the cursor back so the
replica that was next is still next (A,B,C,A,B,C...).

Only asyncio *futures* are used here (drain and "wait for a ready replica"); they are created
lazily, so the hot path (``acquire``/``release``) is plain attribute arithmetic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger(__name__)

# A backend's state has two axes, kept apart (as HAProxy keeps srv_admin and srv_state):
# what the control plane wants of it ...
ACTIVE = "active"  # added: may serve
DRAINING = "draining"  # no new requests; those in flight finish
REMOVED = "removed"  # taken out of the pool
# ... and what the data plane saw of it.
OK = "ok"
EJECTED = "ejected"  # failed a request (refused, reset, closed early: exchange.py); back when added again
WITHDRAWN = "withdrawn"  # stalled while its siblings answer (stall.py); back on a pass or an answer
# The state a view shows (ReplicaView.state, the control API's wire format): one word for both.
READY = "ready"  # in rotation


def in_rotation(admin: str, health: str) -> bool:
    """The rotation rule: a backend gets new requests when the control plane wants it to serve
    and the data plane has nothing against it."""
    return admin == ACTIVE and health == OK


def view_state(admin: str, health: str) -> str:
    """One word for a view: ``removed``; else what the data plane saw against it (``ejected``,
    ``withdrawn``); else ``draining``, or ``ready`` in rotation."""
    if admin == REMOVED:
        return REMOVED
    if health != OK:
        return health
    return READY if admin == ACTIVE else admin


EjectCallback = Callable[[str, str, str], object]


class ReplicaView(NamedTuple):
    """Snapshot of one replica as seen by the control plane."""

    id: str
    host: str
    port: int
    state: str
    in_flight: int
    served: int


class Backend:
    """The gateway's view of one replica of a service: its address, state, load and idle connections.

    Mutated only by its pool (and, for the idle list, by the proxy) on the event loop. Its state
    is ``admin`` (the control plane's will) and ``health`` (the data plane's observation);
    ``in_rotation`` caches :func:`in_rotation` of the two, set by the pool whenever either changes.
    """

    __slots__ = ("id", "host", "port", "admin", "health", "in_rotation", "in_flight", "served", "idle",
                 "eject_reason", "_drain_waiters", "served_mark", "heard_at")

    def __init__(self, replica_id: str, host: str, port: int) -> None:
        self.id = replica_id
        self.host = host
        self.port = port
        self.admin = ACTIVE
        self.health = OK
        self.in_rotation = False  # the pool puts it in (ReplicaPool._place)
        self.in_flight = 0
        self.served = 0  # responses completed (any status)
        self.idle: list = []  # idle upstream connections, oldest first (LIFO reuse)
        self.eject_reason: str | None = None
        self._drain_waiters: list[asyncio.Future] = []
        # Kept by the gateway's sweep (never on the request path): ``served`` as of the last
        # sweep, and the sweep time it last saw a sign of life from this backend (0: not yet).
        self.served_mark = 0
        self.heard_at = 0.0

    # Idle connection pool -------------------------------------------------------------------
    def take_idle(self, now: float, max_age: float):
        """Most recently used idle connection still open and younger than ``max_age``."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            # A connection the replica closed while idle has already seen connection_lost
            # (``closed``); one idle too long may be closed by the replica any moment now.
            if not conn.closed and now - conn.idle_since < max_age:
                return conn
            conn.close()
        return None

    def put_idle(self, conn, now: float, max_idle: int) -> bool:
        """Keep ``conn`` for reuse; False (and the caller closes it) if it should not be kept."""
        if not self.in_rotation or len(self.idle) >= max_idle or conn.closed:
            return False
        conn.idle_since = now
        self.idle.append(conn)
        return True

    def expire_idle(self, now: float, max_age: float) -> None:
        idle = self.idle
        while idle and (idle[0].closed or now - idle[0].idle_since >= max_age):
            idle.pop(0).close()

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    @property
    def state(self) -> str:
        return view_state(self.admin, self.health)

    def view(self) -> ReplicaView:
        return ReplicaView(self.id, self.host, self.port, self.state, self.in_flight, self.served)

    def __repr__(self) -> str:
        return f"Backend({self.id!r}, {self.host}:{self.port}, {self.state}, in_flight={self.in_flight})"


class ReplicaPool:
    """The replicas of one service and the rotation over the ready ones."""

    def __init__(self, service: str, balance: str = "round_robin",
                 on_eject: EjectCallback | None = None) -> None:
        if balance not in ("round_robin", "least_outstanding"):
            raise ValueError(f"unknown balance mode {balance!r}")
        self.service = service
        self.balance = balance
        self.on_eject = on_eject
        self._replicas: dict[str, Backend] = {}
        self._ready: list[Backend] = []
        self._next = 0  # rotation cursor into _ready
        self._ready_waiters: list[asyncio.Future] = []
        self._least = balance == "least_outstanding"

    # Control-plane API ----------------------------------------------------------------------
    def add(self, replica_id: str, host: str, port: int) -> ReplicaView:
        """Make ``replica_id`` ready: it joins the end of the rotation (again, if ejected)."""
        rep = self._replicas.get(replica_id)
        if rep is None:
            rep = Backend(replica_id, host, int(port))
            self._replicas[replica_id] = rep
        elif (rep.host, rep.port) != (host, int(port)):
            rep.close_idle()  # pooled connections point at the old address
            rep.host, rep.port = host, int(port)
        rep.admin, rep.health = ACTIVE, OK  # added after a passing probe: whatever we saw is over
        rep.eject_reason = None
        self._place(rep)
        self._wake_ready_waiters()
        return rep.view()

    def remove(self, replica_id: str) -> bool:
        """Take the replica out now; requests in flight to it finish (unless the gateway, told
        the replica failed, gives them up: ``Gateway.remove_backend``). False if unknown."""
        rep = self._replicas.pop(replica_id, None)
        if rep is None:
            return False
        rep.admin = REMOVED
        self._place(rep)
        rep.close_idle()
        if rep.in_flight == 0:
            self._resolve_drain(rep)
        return True

    async def drain(self, replica_id: str, timeout: float = 30.0) -> bool:
        """Stop new requests to the replica; True once it has nothing in flight, False at timeout.

        The replica stays listed (state ``draining``) until :meth:`remove`; an unknown id has
        nothing in flight, so it drains at once.
        """
        rep = self._replicas.get(replica_id)
        if rep is None:
            return True
        rep.admin = DRAINING
        self._place(rep)
        rep.close_idle()
        if rep.in_flight == 0:
            return True
        fut = asyncio.get_running_loop().create_future()
        rep._drain_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if fut in rep._drain_waiters:
                rep._drain_waiters.remove(fut)

    @property
    def replicas(self) -> list[ReplicaView]:
        """Snapshot views, in the order replicas were first added."""
        return [rep.view() for rep in self._replicas.values()]

    def get(self, replica_id: str) -> Backend | None:
        return self._replicas.get(replica_id)

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    # Data-plane API (hot path) --------------------------------------------------------------
    def acquire(self, exclude: Backend | None = None) -> Backend | None:
        """Next replica for a request (its ``in_flight`` already counted), or None if none ready."""
        ready = self._ready
        n = len(ready)
        if n == 0:
            return None
        i = self._next
        if i >= n:
            i = 0
        if self._least:
            best, best_i = None, i
            for k in range(n):
                j = (i + k) % n
                rep = ready[j]
                if rep is exclude:
                    continue
                if best is None or rep.in_flight < best.in_flight:
                    best, best_i = rep, j
            if best is None:
                return None
            self._next = best_i + 1
            best.in_flight += 1
            return best
        rep = ready[i]
        if rep is exclude:
            if n == 1:
                return None
            i = i + 1 if i + 1 < n else 0
            rep = ready[i]
        self._next = i + 1
        rep.in_flight += 1
        return rep

    def release(self, rep: Backend, served: bool = True) -> None:
        """A request to ``rep`` is over (``served``: a response was relayed)."""
        rep.in_flight -= 1
        if served:
            rep.served += 1
        if rep.in_flight == 0 and rep._drain_waiters:
            self._resolve_drain(rep)

    def release_drained(self, rep: Backend) -> None:
        """``rep`` has nothing in flight any more: wake its drain() waiters."""
        self._resolve_drain(rep)

    def finish(self, rep: Backend, conn, keep: bool, now: float, max_idle: int) -> None:
        """``rep`` answered a request on ``conn``: park ``conn`` for reuse if ``keep`` (and ``rep``
        is ready and has room), else close it; then count the request served.

        :meth:`Backend.put_idle` and :meth:`release` in one call: this runs once per request.
        """
        idle = rep.idle
        if keep and rep.in_rotation and not conn.closed and len(idle) < max_idle:
            conn.idle_since = now
            idle.append(conn)
        else:
            conn.close()
        rep.in_flight -= 1
        rep.served += 1
        if rep.in_flight == 0 and rep._drain_waiters:
            self._resolve_drain(rep)

    def eject(self, rep: Backend, reason: str) -> bool:
        """Passive health: take a failing replica out of rotation and tell the control plane."""
        if not rep.in_rotation or self._replicas.get(rep.id) is not rep:
            return False  # already out (ejected, draining or removed): nothing to report
        rep.health = EJECTED
        rep.eject_reason = reason
        self._place(rep)
        rep.close_idle()
        log.warning("gateway: ejected %s/%s: %s", self.service, rep.id, reason)
        if self.on_eject is not None:
            try:
                self.on_eject(self.service, rep.id, reason)
            except Exception:  # the control plane's bug must not break the request path
                log.exception("on_eject callback failed for %s/%s", self.service, rep.id)
        return True

    def withdraw(self, rep: Backend, reason: str) -> bool:
        """Take a stalled replica out of rotation (see stall.py); the caller tells the control plane."""
        if not rep.in_rotation or self._replicas.get(rep.id) is not rep:
            return False
        rep.health = WITHDRAWN
        rep.eject_reason = reason
        self._place(rep)
        rep.close_idle()  # connections to a silent replica are not worth reusing
        log.warning("gateway: withdrew %s/%s: %s", self.service, rep.id, reason)
        return True

    def reinstate(self, rep: Backend) -> bool:
        """A withdrawn replica answered again: nothing against it any more, so back in rotation
        (at the end) unless the control plane is draining it."""
        if rep.health != WITHDRAWN or self._replicas.get(rep.id) is not rep:
            return False
        rep.health = OK
        rep.eject_reason = None
        if self._place(rep):
            self._wake_ready_waiters()
            log.info("gateway: %s/%s answers again; back in rotation", self.service, rep.id)
        return True

    def wait_ready(self) -> asyncio.Future:
        """A future resolved the next time a replica becomes ready."""
        fut = asyncio.get_running_loop().create_future()
        waiters = self._ready_waiters
        if len(waiters) > 64:  # drop waiters that timed out, so the list stays small
            waiters[:] = [w for w in waiters if not w.done()]
        waiters.append(fut)
        return fut

    def close(self) -> None:
        for rep in self._replicas.values():
            rep.close_idle()

    # Internals ------------------------------------------------------------------------------
    def _place(self, rep: Backend) -> bool:
        """Put ``rep`` in the rotation or take it out, as the rotation rule says of its state
        now; the one place ``_ready`` changes. Returns whether it is in rotation."""
        now_in = in_rotation(rep.admin, rep.health)
        if now_in != rep.in_rotation:
            rep.in_rotation = now_in
            ready = self._ready
            if now_in:
                ready.append(rep)  # joins at the end of the rotation
            else:
                j = ready.index(rep)
                del ready[j]
                if j < self._next:
                    self._next -= 1  # keep the replica that was next, next
        return now_in

    def _wake_ready_waiters(self) -> None:
        waiters, self._ready_waiters = self._ready_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    @staticmethod
    def _resolve_drain(rep: Backend) -> None:
        waiters, rep._drain_waiters = rep._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(True)
