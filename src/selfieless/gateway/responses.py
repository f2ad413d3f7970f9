"""Responses the gateway writes itself: JSON, ``{"error": "..."}`` for errors (pure); plain text
only for an ACME key authorization, whose exact bytes the CA checks."""

from __future__ import annotations

import json
from http import HTTPStatus

from .keepalive import connection_header


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def json_response(status: int, payload, keep_alive: bool = True, head_only: bool = False,
                  headers: bytes = b"", client_http11: bool = True) -> bytes:
    """A complete HTTP/1.1 response with a JSON body (``payload`` bytes: sent as text/plain).
    ``headers``: further header lines, each ending in CRLF; the ``Connection`` line is
    keepalive.py's."""
    if isinstance(payload, bytes):
        body, kind = payload, "text/plain"
    else:
        body, kind = json.dumps(payload, default=str, separators=(",", ":")).encode(), "application/json"
    head = (
        f"HTTP/1.1 {status} {reason(status)}\r\n"
        f"Content-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
    ).encode() + connection_header(keep_alive, client_http11) + (
        b"Retry-After: 1\r\n" if status == 503 else b"") + headers + b"\r\n"
    return head if head_only else head + body


def error_response(status: int, message: str, keep_alive: bool = True, head_only: bool = False,
                   client_http11: bool = True) -> bytes:
    return json_response(status, {"error": message}, keep_alive, head_only, b"", client_http11)


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
