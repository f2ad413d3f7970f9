"""The I/O half of `selfieless load`: sends the open-loop schedule of loadcore with httpx.

Each request is launched as its own task at its due time, so a slow response never delays the
next send; the connection pool (``concurrency`` connections) bounds the sockets, and requests that
find every connection busy wait for one, with that wait counted in their latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from .loadcore import Result, Summary, planned_count, schedule, summarize


async def run_load(url: str, rps: float, duration: float, *, method: str = "GET", body: bytes | None = None,
                   headers: dict[str, str] | None = None, concurrency: int = 64, timeout: float = 10.0,
                   on_result: Callable[[Result], None] | None = None) -> Summary:
    """Send `rps` requests per second to `url` for `duration` seconds; returns the summary."""
    planned = planned_count(rps, duration)
    results: list[Result] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    hdrs = dict(headers or {})
    if body is not None:
        hdrs.setdefault("content-type", "application/json")
    loop = asyncio.get_running_loop()
    # pool=None: a request waits for a free connection as long as it takes (counted in its latency).
    tmo = httpx.Timeout(timeout, pool=None)
    async with httpx.AsyncClient(limits=limits, timeout=tmo, trust_env=False) as client:
        start = loop.time()

        async def one(offset: float) -> None:
            sent_at = loop.time()
            try:
                r = await client.request(method, url, content=body, headers=hdrs)
                res = Result(offset, loop.time() - start - offset, status=r.status_code,
                             send_delay=sent_at - start - offset)
            except httpx.HTTPError as e:
                res = Result(offset, loop.time() - start - offset, error=type(e).__name__,
                             send_delay=sent_at - start - offset)
            results.append(res)
            if on_result is not None:
                on_result(res)

        tasks = []
        for offset in schedule(rps, duration):
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(offset)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    return summarize(results, rps, planned, elapsed=elapsed)
