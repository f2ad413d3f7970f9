"""The keep-alive rule and the Connection line, as tables (keepalive.py): one rule for relayed
responses, gateway-made errors and local answers."""

from __future__ import annotations

import pytest

from selfieless.gateway.keepalive import (
    FRAME_CHUNKED, FRAME_CLOSE, FRAME_LENGTH, FRAME_NONE, SAY_CLOSE, SAY_KEEP_ALIVE, connection_header,
    framing, keep_open,
)


@pytest.mark.parametrize("no_body, has_length, http11, expected", [
    (True, True, True, FRAME_NONE),  # HEAD, 204, 304: no body whatever the headers say
    (True, False, False, FRAME_NONE),
    (False, True, True, FRAME_LENGTH),  # the backend's Content-Length is passed on
    (False, True, False, FRAME_LENGTH),
    (False, False, True, FRAME_CHUNKED),  # no length: an HTTP/1.1 client gets chunks
    (False, False, False, FRAME_CLOSE),  # ... an HTTP/1.0 client gets the end of the connection
])
def test_body_framing(no_body, has_length, http11, expected):
    assert framing(no_body, has_length, http11) == expected


# wants: the client's version and Connection header say keep (HTTP/1.1 without "close", or
# HTTP/1.0 with "keep-alive"); complete: its whole body was read; client_done: it half-closed;
# closing: the gateway stops, or an upgrade we do not tunnel was asked for.
@pytest.mark.parametrize("wants, complete, client_done, closing, frame, expected", [
    (True, True, False, False, FRAME_LENGTH, True),
    (True, True, False, False, FRAME_CHUNKED, True),
    (True, True, False, False, FRAME_NONE, True),
    (False, True, False, False, FRAME_LENGTH, False),  # Connection: close, or HTTP/1.0 without keep-alive
    (True, False, False, False, FRAME_LENGTH, False),  # answered before its body was read: close
    (True, True, True, False, FRAME_LENGTH, False),  # the client half-closed: nothing more comes
    (True, True, False, True, FRAME_LENGTH, False),  # stopping, or a refused upgrade
    (True, True, False, False, FRAME_CLOSE, False),  # the body ends with the connection
    (False, False, True, True, FRAME_CLOSE, False),
])
def test_keep_open(wants, complete, client_done, closing, frame, expected):
    assert keep_open(wants, complete, client_done, closing, frame) is expected


def test_keep_open_for_a_gateway_made_answer_has_a_length():
    assert keep_open(True, True, False, False) is True
    assert keep_open(True, False, False, False) is False


@pytest.mark.parametrize("keep, http11, line", [
    (True, True, b""),  # HTTP/1.1 keeps by default: nothing to say
    (True, False, SAY_KEEP_ALIVE),  # HTTP/1.0 closes by default: say that it stays
    (False, True, SAY_CLOSE),
    (False, False, SAY_CLOSE),
])
def test_connection_header(keep, http11, line):
    assert connection_header(keep, http11) == line
    assert SAY_CLOSE == b"Connection: close\r\n" and SAY_KEEP_ALIVE == b"Connection: keep-alive\r\n"
