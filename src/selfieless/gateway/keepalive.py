"""Whether a client connection stays open after a response, and how the response says so (pure).

One rule for every response the client gets: relayed from a backend, made by the gateway (an
error, a 503 while no backend is ready) or answered locally (``/``, no route). Table tests in
tests/gateway/test_keepalive.py.

* The client decides first (RFC 9112 9.3): an HTTP/1.1 client keeps the connection unless it
  sent ``Connection: close``; an HTTP/1.0 client only when it sent ``Connection: keep-alive``
  (httptools' ``should_keep_alive`` reads both, and that is ``wants``).
* A request whose body was not read to its end cannot be followed by another on the same
  connection (we would have to read and drop the rest first): close.
* A client that half-closed its side has nothing more to send: close after the answer.
* ``closing``: the connection must end anyway (the gateway is stopping, or the request asked
  for an upgrade we do not tunnel, after which nothing on the socket is HTTP).
* A body delimited by closing the connection (an HTTP/1.0 client and no length known) ends it.
* An error about a *later* pipelined request does not change this response: it is answered
  after this one, with its own ``Connection: close``.

How it is said: ``Connection: close`` when closing; an HTTP/1.0 client that stays must be told
``Connection: keep-alive`` (without it, HTTP/1.0 means close); HTTP/1.1 needs nothing.
"""

from __future__ import annotations

# Response body framing towards the client (headers.py writes it; the rule above reads it).
FRAME_NONE = 0  # no body (HEAD, 1xx, 204, 304)
FRAME_LENGTH = 1  # Content-Length passed through, body relayed as is
FRAME_CHUNKED = 2  # we chunk the relayed body
FRAME_CLOSE = 3  # body ends when we close (HTTP/1.0 client, no length known)

SAY_CLOSE = b"Connection: close\r\n"
SAY_KEEP_ALIVE = b"Connection: keep-alive\r\n"


def framing(no_body: bool, has_length: bool, client_http11: bool) -> int:
    """How the relayed body is delimited towards the client."""
    if no_body:
        return FRAME_NONE
    if has_length:
        return FRAME_LENGTH
    return FRAME_CHUNKED if client_http11 else FRAME_CLOSE


def keep_open(wants: bool, complete: bool, client_done: bool, closing: bool,
              frame: int = FRAME_LENGTH) -> bool:
    """Whether the client connection stays open after this response (the rules above)."""
    return wants and complete and not client_done and not closing and frame != FRAME_CLOSE


def connection_header(keep: bool, client_http11: bool) -> bytes:
    """The ``Connection`` header line the response carries (empty: none needed)."""
    if not keep:
        return SAY_CLOSE
    return b"" if client_http11 else SAY_KEEP_ALIVE
