"""Asks the users service (through the gateway) whether a username exists."""

from __future__ import annotations

import httpx

from ..common.errors import ApiError


class UsersClient:
    def __init__(self, base_url: str, origin: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.origin = origin
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created on first use so it binds to the server's event loop, and reused for keep-alive.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, headers={"Origin": self.origin})
        return self._client

    async def exists(self, username: str) -> bool:
        url = f"{self.base_url}/api/v1/users"
        try:
            response = await self._http().get(url)
        except httpx.HTTPError as exc:
            raise ApiError(503, f"users service unreachable at {self.base_url}: {type(exc).__name__}") from None
        if response.status_code == 204:
            return False
        if response.status_code != 200:
            raise ApiError(503, f"users service answered {response.status_code} when listing users")
        try:
            names = response.json()
        except ValueError:
            raise ApiError(503, "users service sent a list of users that is not JSON") from None
        if not isinstance(names, list):
            raise ApiError(503, "users service sent something other than a list of users")
        return username in names

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
