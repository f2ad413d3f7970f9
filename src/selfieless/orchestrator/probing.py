"""Health probing: one task per live replica that probes it on its service's interval and hands
each result to the controller (which asks lifecycle.probed what it means).

An HTTP probe (probe.py) for a service, a TCP check (health.tcp_probe) for a dependency. A
starting replica is probed more often than a ready one, and a gateway hint (a 5xx answer) cuts
the wait short.

Ready replicas are probed on ticks shared by all of them (multiples of the interval on the
monotonic clock, `next_tick`), not each on its own phase: on an idle control plane most of a
probe's CPU cost was waking the process up for it, and one wake-up now sends the probes of every
replica due at that tick. The interval between two probes of a replica never grows by it.
"""

from __future__ import annotations

import asyncio
import math
from typing import Callable

from .health import Probe, tcp_probe
from .replica import LIVE, Replica, ReplicaState as S
from .service import ServiceRuntime

REPLICA_HOST = "127.0.0.1"


def replica_host(rep: Replica) -> str:
    """Where a replica is reached: this host, or (swarm) its node's address."""
    return getattr(rep.handle, "host", None) or REPLICA_HOST

# A starting replica is probed this often (not every `interval`): readiness is what a replacement
# waits for, and a refused connection costs next to nothing.
STARTING_PROBE_INTERVAL = 0.05
# Earliest next probe after a gateway 5xx hint (see Probing._loop).
HINTED_PROBE_GAP = 0.05
# Warm-up requests in flight at once (health.warmup): about what a replica sees under load.
WARMUP_CONCURRENCY = 4


def warmup_requests(warmup: int, state: S, siblings_ready: int) -> int:
    """How many warm-up GETs a replica gets after a passing probe: `health.warmup` when it is
    still starting (the probe is its first) and another replica serves meanwhile; none when it is
    the only one (the requests waiting for it would wait longer)."""
    return warmup if state == S.STARTING and siblings_ready > 0 else 0


def next_tick(tick: float | None, now: float, interval: float) -> float:
    """When a ready replica's next routine probe is due: the first multiple of `interval` after
    the probe sent at `now`, a grid that every replica probed at this interval shares.

    `tick` is the grid point that probe was due at (None: the replica has just become ready): a
    timer may fire a hair before its deadline, and the probe it sends is still that tick's, so
    the next is the following one, not the same one again. No more than `interval` after the
    probe (a timer firing early aside), so aligning never loosens the interval; a replica whose
    interval was changed lands on the new grid at once.
    """
    base = now if tick is None else max(now, tick)
    return (math.floor(base / interval + 1e-9) + 1) * interval


class _Wake:
    """What ends a probe loop's wait: its tick's timer or a gateway hint (`hinted` says which)."""

    __slots__ = ("event", "hinted")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.hinted = False

    def hint(self) -> None:
        self.hinted = True
        self.event.set()


class Probing:
    """The probe loops. `on_result(svc, rep, ok)` is called after every probe of a live replica."""

    def __init__(self, on_result: Callable[[ServiceRuntime, Replica, bool], None],
                 monotonic: Callable[[], float], probe: Probe | None = None):
        self.probe = probe    # None: the controller sets the default HTTP prober at start
        self._on_result = on_result
        self._mono = monotonic
        self.tasks: dict[str, asyncio.Task] = {}      # replica id -> probe loop
        self._now: dict[str, _Wake] = {}              # replica id -> cuts its probe wait short

    def start(self, svc: ServiceRuntime, rep: Replica) -> None:
        self.tasks[rep.id] = asyncio.create_task(self._loop(svc, rep), name=f"probe-{rep.id}")

    def stop(self, rep: Replica) -> None:
        t = self.tasks.pop(rep.id, None)
        if t is not None and t is not asyncio.current_task():
            t.cancel()

    def hint(self, replica_id: str) -> None:
        """The gateway saw this replica answer 5xx: probe it now rather than at its next interval."""
        wake = self._now.get(replica_id)
        if wake is not None:
            wake.hint()

    async def once(self, svc: ServiceRuntime, rep: Replica) -> bool:
        """One probe; records its outcome on the replica (last_probe_ok, last_error)."""
        hs = svc.spec.health
        assert self.probe is not None
        if svc.dependency:
            ok, detail = await tcp_probe(replica_host(rep), rep.port, hs.timeout)
        else:
            ok, detail = await self.probe(replica_host(rep), rep.port, hs.path, hs.timeout)
            reported = getattr(self.probe, "db_connections", None)  # HttpProber's; not a test's stand-in
            if ok and reported is not None:
                rep.db_connections = reported.get((replica_host(rep), rep.port))
        rep.last_probe_ok, rep.last_probe_at = ok, self._mono()
        if not ok:
            rep.last_error = f"health probe {'tcp' if svc.dependency else hs.path}: {detail}"
        return ok

    async def _warm_up(self, svc: ServiceRuntime, rep: Replica, n: int) -> None:
        """`n` GETs of the warm-up path, WARMUP_CONCURRENCY at a time; their answers do not matter
        (the probe decides), only that the replica has served them before real requests come."""
        hs = svc.spec.health
        path = hs.warmup_path or hs.path
        for first in range(0, n, WARMUP_CONCURRENCY):
            await asyncio.gather(*(self.probe(replica_host(rep), rep.port, path, hs.timeout)
                                   for _ in range(min(WARMUP_CONCURRENCY, n - first))))

    async def _loop(self, svc: ServiceRuntime, rep: Replica) -> None:
        wake = self._now[rep.id] = _Wake()
        loop = asyncio.get_running_loop()
        tick: float | None = None  # a ready replica's next routine probe: a shared tick
        try:
            while rep.state in LIVE:
                hs = svc.spec.health  # read each time: `apply` may change it live
                t0 = self._mono()
                hinted, wake.hinted = wake.hinted, False
                wake.event.clear()
                ok = await self.once(svc, rep)
                if rep.state not in LIVE:
                    return
                if ok and rep.state == S.STARTING:  # (no count of siblings per routine probe)
                    n = warmup_requests(hs.warmup, rep.state, sum(
                        1 for r in svc.replicas.values() if r is not rep and r.state == S.READY))
                    if n:
                        await self._warm_up(svc, rep, n)
                        if rep.state not in LIVE:
                            return
                self._on_result(svc, rep, ok)
                if rep.state not in LIVE:
                    return
                if rep.state != S.READY:
                    tick, due = None, t0 + min(hs.interval, STARTING_PROBE_INTERVAL)
                else:
                    if not (hinted and tick is not None and t0 < tick):  # a hint's probe is extra
                        tick = next_tick(tick, t0, hs.interval)
                    due = tick
                # A plain timer on the event, no task cancellation per wait (this runs every
                # second per replica); the timers of one tick fire in one pass of the loop.
                timer = loop.call_later(max(0.0, due - self._mono()), wake.event.set)
                try:
                    await wake.event.wait()
                finally:
                    timer.cancel()
                if wake.hinted:
                    # A 5xx hint from the gateway ends the wait early, but never within
                    # HINTED_PROBE_GAP of the last probe: a replica whose app fails some requests
                    # while its health check passes must not be probed per failed request.
                    await asyncio.sleep(max(0.0, HINTED_PROBE_GAP - (self._mono() - t0)))
        finally:
            if self.tasks.get(rep.id) is asyncio.current_task():
                del self.tasks[rep.id]
            if self._now.get(rep.id) is wake:
                del self._now[rep.id]
