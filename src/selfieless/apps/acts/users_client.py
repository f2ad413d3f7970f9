"""Asks the users service (through the gateway) whether a username exists.

The course's way to ask is the users service's list of names (GET /api/v1/users), one request
per upload. Under load that request was most of an upload's cost, so the uploads that arrive
while one list is on its way share the next one (common/counter.py's Batcher): one HTTP exchange
for a batch of uploads, over one kept-alive connection.

A deleted user still never posts: the list an upload is checked against is always requested
after that upload arrived (a batch's request starts only once the previous one has returned,
and an upload joins the batch that has not started yet), so a deletion the users service had
answered before the upload came is in it. That is exactly what one request per upload gave;
nothing is cached between batches. An idle replica sends one request per upload, as before.
"""

from __future__ import annotations

import httpx

from ..common.counter import Batcher
from ..common.errors import ApiError


class UsersClient:
    def __init__(self, base_url: str, origin: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.origin = origin
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._names: Batcher[frozenset[str]] = Batcher(self._fetch_names)

    def _http(self) -> httpx.AsyncClient:
        # Created on first use so it binds to the server's event loop, and reused for keep-alive.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, headers={"Origin": self.origin})
        return self._client

    async def exists(self, username: str) -> bool:
        return username in await self._names.join()

    async def _fetch_names(self, _uploads: int) -> frozenset[str]:
        url = f"{self.base_url}/api/v1/users"
        try:
            response = await self._http().get(url)
        except httpx.HTTPError as exc:
            raise ApiError(503, f"users service unreachable at {self.base_url}: {type(exc).__name__}") from None
        if response.status_code == 204:
            return frozenset()
        if response.status_code != 200:
            raise ApiError(503, f"users service answered {response.status_code} when listing users")
        try:
            names = response.json()
        except ValueError:
            raise ApiError(503, "users service sent a list of users that is not JSON") from None
        if not isinstance(names, list):
            raise ApiError(503, "users service sent something other than a list of users")
        return frozenset(name for name in names if isinstance(name, str))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
