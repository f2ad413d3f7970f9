"""The GET + POST write load of the rollout tests and of benchmarks/rollout.py: clients alternating
GET and POST /api/v1/categories through the gateway (the acts app). It counts answers and
failures, keeps every category name answered 201 (to read back after: none may be missing), and
records each request's latency under the phase it was sent in (the benchmark's before / during)."""

from __future__ import annotations

import asyncio
import time

import httpx


class WriteLoad:
    def __init__(self, base: str, concurrency: int = 4, pause: float = 0.01, prefix: str = "roll"):
        self.base, self.concurrency, self.pause, self.prefix = base, concurrency, pause, prefix
        self.ok = 0
        self.failures: list[str] = []
        self.created: list[str] = []
        self.phase = "run"                                   # set by the caller between phases
        self.lat: dict[str, list[float]] = {}                 # phase -> seconds per request
        self.samples: list[tuple[float, float, str]] = []    # (wall clock at the answer, seconds, phase)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def _worker(self, w: int):
        async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
            i = 0
            while not self._stop.is_set():
                i += 1
                t0 = time.perf_counter()
                try:
                    if i % 2:
                        name = f"{self.prefix}-{w}-{i}"
                        r = await c.post(self.base + "/api/v1/categories", json=[name])
                        good = r.status_code == 201
                        if good:
                            self.created.append(name)
                    else:
                        r = await c.get(self.base + "/api/v1/categories")
                        good = r.status_code in (200, 204)
                    if good:
                        self.ok += 1
                    else:
                        self.failures.append(f"{r.request.method} {r.status_code} {r.text[:100]}")
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                took = time.perf_counter() - t0
                self.lat.setdefault(self.phase, []).append(took)
                self.samples.append((time.time(), took, self.phase))
                if self.pause:
                    await asyncio.sleep(self.pause)

    def start(self):
        self._tasks = [asyncio.create_task(self._worker(w)) for w in range(self.concurrency)]
        return self

    async def stop(self):
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def p99(self, phase: str) -> float:
        """The 99th percentile latency of `phase`, in milliseconds."""
        xs = sorted(self.lat.get(phase, [0.0]))
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000

    def count(self, *phases: str) -> int:
        return sum(len(self.lat.get(p, [])) for p in phases)

    async def missing(self) -> list[str]:
        """Names answered 201 that the service does not list now (must be none)."""
        async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
            r = await c.get(self.base + "/api/v1/categories")
        present = r.json() if r.status_code == 200 else {}
        return [n for n in self.created if n not in present]
