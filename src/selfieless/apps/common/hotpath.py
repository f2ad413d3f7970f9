"""The busiest routes, answered without going through FastAPI's per-request machinery.

A FastAPI route that returns a fixed answer serves about a third of what the same route does as
a plain Starlette app on the same server (benchmarks/app_throughput.py): the middleware stack,
the router's scan of every route, dependency solving and the endpoint wrapper cost more than a
listing's own database read. The reads everyone makes (the category list, a category's acts, the
counts, the users list) are registered here as well as on their FastAPI router: FastAPI keeps
documenting them (OpenAPI) and still serves them whenever this table does not (a crashed
replica, any other method), while `ServiceApp` answers them directly.

The busiest writes (an upvote, an upload) are registered the same way for POST.

The contract does not change on this path: the endpoint is the very function the FastAPI route
calls; a counted request is committed to `_count` before its answer is sent (a read runs while
the count commits, a write only after it, as in ReplicaMiddleware); an ApiError becomes its JSON
error and any other failure a JSON 500, like the service's exception handlers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .db import COUNT_DUE, CountDue
from .errors import ApiError, error_response, unexpected_error_response
from .ops import OperationalContext, is_counted

log = logging.getLogger("selfieless.apps")

Endpoint = Callable[..., Awaitable[Response]]
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class HotRoute:
    endpoint: Endpoint
    counted: bool
    wants_request: bool


class HotRoutes:
    """GET routes by path: exact paths in a dict, paths with `{param}` segments as patterns
    (a parameter is one non-empty path segment, like Starlette's default convertor)."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], HotRoute] = {}
        self._patterns: list[tuple[str, re.Pattern[str], HotRoute]] = []

    def add(self, path: str, endpoint: Endpoint, method: str = "GET") -> None:
        route = HotRoute(endpoint, is_counted(path), "request" in inspect.signature(endpoint).parameters)
        if "{" not in path:
            self._exact[(method, path)] = route
            return
        pattern, last = [], 0
        for m in _PARAM.finditer(path):
            pattern.append(re.escape(path[last:m.start()]) + f"(?P<{m.group(1)}>[^/]+)")
            last = m.end()
        pattern.append(re.escape(path[last:]))
        self._patterns.append((method, re.compile("".join(pattern)), route))

    def match(self, path: str, method: str = "GET") -> tuple[HotRoute, dict[str, str]] | None:
        """The route for `method` (HEAD is served as GET) at `path`, with its path parameters."""
        if method == "HEAD":
            method = "GET"
        route = self._exact.get((method, path))
        if route is not None:
            return route, {}
        for wanted, pattern, route in self._patterns:
            if wanted == method:
                m = pattern.fullmatch(path)
                if m is not None:
                    return route, m.groupdict()
        return None

    def get(self, router, path: str, **kwargs) -> Callable[[Endpoint], Endpoint]:
        """`@hot.get(router, "/categories", ...)`: a FastAPI GET route that is also served here."""
        return self._route(router, "GET", path, kwargs)

    def post(self, router, path: str, **kwargs) -> Callable[[Endpoint], Endpoint]:
        """`@hot.post(router, "/acts/upvote", ...)`: a FastAPI POST route that is also served here."""
        return self._route(router, "POST", path, kwargs)

    def _route(self, router, method: str, path: str, kwargs: dict) -> Callable[[Endpoint], Endpoint]:
        register = router.api_route(path, methods=[method], **kwargs)

        def decorate(endpoint: Endpoint) -> Endpoint:
            self.add(router.prefix + path, endpoint, method)
            return register(endpoint)
        return decorate


class ServiceApp(FastAPI):
    """A service's FastAPI app that answers its hot routes (`hot`) itself."""

    hot: HotRoutes
    replica: OperationalContext

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.replica.crashed:
            found = self.hot.match(scope["path"], scope["method"])
            if found is not None:
                await self._serve(found[0], found[1], scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve(self, route: HotRoute, params: dict[str, str], scope: Scope, receive: Receive,
                     send: Send) -> None:
        counted = due = None
        if route.counted and scope["method"] == "POST":
            if self.replica.db.folds_counts:
                # The count goes with the request's first write, in its transaction (db.CountDue).
                due = self.replica.count_due()
            else:
                # A write waits for its count: a failed count must not follow a committed write.
                try:
                    await self.replica.counter.add()
                except ApiError as exc:  # the database is unavailable: a 503 the client may retry
                    await error_response(exc.status, exc.message, exc.headers)(scope, receive, send)
                    return
        elif route.counted:
            # A read changes nothing, so it runs while its count commits; the answer waits for both.
            counted = asyncio.ensure_future(self.replica.counter.add())
        response = await self._answer(route, params, scope, receive, due)
        if due is not None and not due.paid:
            # Nothing was written (a refused request, or its write failed): counted on its own.
            counted = asyncio.ensure_future(due.settle())
        if counted is not None:
            try:
                await counted
            except ApiError as exc:  # the database is unavailable: a 503 the client may retry
                response = error_response(exc.status, exc.message, exc.headers)
            except Exception as exc:  # not counted: the request must not look served
                log.exception("counting %s %s failed", scope["method"], scope["path"])
                response = error_response(500, f"internal error: {type(exc).__name__}")
        await response(scope, receive, send)

    @staticmethod
    async def _answer(route: HotRoute, params: dict[str, str], scope: Scope, receive: Receive,
                      due: CountDue | None) -> Response:
        token = COUNT_DUE.set(due) if due is not None else None
        try:
            if route.wants_request:
                scope["path_params"] = params
                response = await route.endpoint(**params, request=Request(scope, receive))
            else:
                response = await route.endpoint(**params)
        except ApiError as exc:
            response = error_response(exc.status, exc.message, exc.headers)
        except Exception as exc:
            response = unexpected_error_response(exc, scope["method"], scope["path"])
        finally:
            if token is not None:
                COUNT_DUE.reset(token)
        return response
