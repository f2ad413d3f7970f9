"""Reading request bodies as JSON whatever the Content-Type, and validating them with pydantic.

Course clients send `application/json;charset=utf-8`, `text/plain` or nothing at all, so the
body is always parsed as JSON here instead of trusting the header.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect, Request

from .errors import ApiError, describe_validation_errors

T = TypeVar("T")


async def read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"request body larger than {max_bytes} bytes")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, f"request body larger than {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer and nothing was written: not an error of this replica's, so
        # no traceback (the gateway cuts the connection when it refuses a body halfway).
        raise ApiError(400, "the client went away before the request body ended") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "request body must be JSON; it was empty")
    try:
        value = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    check_text(value)
    return value


def check_text(value: Any) -> None:
    """Reject strings no database can store faithfully (lone surrogates, NUL)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ApiError(400, "text must not contain NUL characters")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, "text must be valid Unicode (no lone surrogates)") from None
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())


def validate(adapter: TypeAdapter[T], value: Any) -> T:
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError as exc:
        raise ApiError(400, describe_validation_errors(exc.errors())) from None


# Names end up in URL paths (/users/{name}, /categories/{name}/acts): percent-encoded, 1024
# characters of up to 4 UTF-8 bytes take at most 12 KiB of the request line, well inside the
# gateway's 64 KiB header limit, so every name that can be created can also be read and deleted.
MAX_NAME_LENGTH = 1024


def check_name(name: str, what: str) -> None:
    """Names end up in URL paths: they need a visible character, no slash, and a bounded length."""
    if len(name) > MAX_NAME_LENGTH:
        raise ApiError(400, f"{what} must be at most {MAX_NAME_LENGTH} characters (got {len(name)})")
    if not name.strip():
        raise ApiError(400, f"{what} must contain a non-whitespace character")
    if "/" in name:
        raise ApiError(400, f"{what} must not contain '/'")


def parse_uint(text: str, what: str, maximum: int = 2**63 - 1) -> int:
    """A non-negative integer written in ASCII digits (str.isdigit also accepts other scripts)."""
    if not text or not text.isascii() or not text.isdigit():
        raise ApiError(400, f"{what} must be a non-negative integer")
    # Compare lengths first: int() of a huge digit string is slow, and refused past 4300 digits.
    digits = text.lstrip("0")
    if len(digits) > len(str(maximum)) or int(digits or "0") > maximum:
        raise ApiError(400, f"{what} must be at most {maximum}")
    return int(digits or "0")
