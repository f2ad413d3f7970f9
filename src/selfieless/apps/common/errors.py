"""The one error type the services raise, and the handlers that turn every failure into JSON.

api.md: every 4xx/5xx carries a JSON object with a human-readable "error" string.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("selfieless.apps")


class ApiError(Exception):
    """A client-visible failure: status code, message, optional extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_HTTP_MESSAGES = {
    404: "no such route",
    405: "method not allowed on this route",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code in _HTTP_MESSAGES and message in ("Not Found", "Method Not Allowed"):
            message = f"{_HTTP_MESSAGES[exc.status_code]}: {request.method} {request.url.path}"
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return error_response(exc.status_code, message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation_errors(exc.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc, request.method, request.url.path)


def unexpected_error_response(exc: Exception, method: str, path: str) -> JSONResponse:
    """A database that has no connection to give (in a threaded transaction, which does not sort
    its errors itself) is a retryable 503; anything else a 500, whose detail goes to the log."""
    from .dberrors import DatabaseUnavailable, classify  # which imports this module

    kind = classify(exc)
    if kind is not None and issubclass(kind, DatabaseUnavailable):
        failure = kind(str(exc))
        return error_response(failure.status, failure.message, failure.headers)
    log.exception("unhandled error on %s %s", method, path)
    return error_response(500, f"internal error: {type(exc).__name__}")


def allowed_methods(request: Request) -> str:
    """Every method some route fully serves at this path (Starlette names only the first route's)."""
    methods = [method for method in _METHODS
               if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                      for route in request.app.router.routes)]
    if "GET" in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return ", ".join(methods)


def describe_validation_errors(errors) -> str:
    """One line from pydantic's error list: 'actId: Input should be a valid integer'."""
    parts = []
    for err in list(errors)[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"
