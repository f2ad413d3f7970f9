"""Header rewriting between client and replica (pure functions on bytes, no I/O).

Request side: drop hop-by-hop headers (RFC 9110 7.6.1: Connection and every header it names,
Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade), append the client address
to ``X-Forwarded-For``, set ``X-Forwarded-Proto`` (``http``, or ``https`` behind the TLS
listener) and re-frame the body (the parser de-chunks it, so a chunked request is sent on
chunked again). Everything else goes through byte for byte,
in order and with its original case.

Response side (:class:`ResponseHeadReader`, fed by the parser): the same stripping, then framing
for *our* connection with the client (keep the replica's Content-Length; otherwise chunked for
HTTP/1.1 clients or close-delimited for 1.0).
"""

from __future__ import annotations

import httptools

# Response body framing towards the client is decided in keepalive.py (re-exported here).
from .keepalive import FRAME_CHUNKED, FRAME_CLOSE, FRAME_LENGTH, FRAME_NONE, framing  # noqa: F401

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade",
})

CRLF = b"\r\n"
CHUNK_END = b"0\r\n\r\n"

# What a header name means to us. Names repeat endlessly (Host, Content-Type...), so the answer
# is memoised per raw name: one dict lookup per header instead of lower() and several compares.
K_PLAIN = 0  # forward as is
K_HOP = 1  # hop-by-hop without further meaning to us (Keep-Alive, TE, Trailer, Upgrade)
K_CONNECTION = 2  # Connection / Proxy-Connection: hop-by-hop, and may name more
K_TE = 3  # Transfer-Encoding
K_LENGTH = 4  # Content-Length
K_XFF = 5  # X-Forwarded-For
K_XFP = 6  # X-Forwarded-Proto
K_EXPECT = 7  # Expect

_KINDS = {
    b"connection": K_CONNECTION, b"proxy-connection": K_CONNECTION, b"keep-alive": K_HOP,
    b"te": K_HOP, b"trailer": K_HOP, b"upgrade": K_HOP, b"transfer-encoding": K_TE,
    b"content-length": K_LENGTH, b"x-forwarded-for": K_XFF, b"x-forwarded-proto": K_XFP,
    b"expect": K_EXPECT,
}
_kind_memo: dict[bytes, int] = {}


def header_kind(name: bytes) -> int:
    kind = _KINDS.get(name.lower(), K_PLAIN)
    if len(_kind_memo) < 4096:  # bounded: header names are client-chosen
        _kind_memo[name] = kind
    return kind


class BadRequest(ValueError):
    """A request the gateway refuses to forward (answered with 400)."""


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


# build_request_head returns (head, content_length, chunked, expect_continue): a plain tuple
# because it is built once per request on the hot path. content_length is -1 when none was given.
RequestHead = tuple[bytes, int, bool, bool]


def build_request_head(method: bytes, target: bytes, headers: list, client_ip: bytes,
                       proto: bytes = b"http") -> RequestHead:
    """Rewrite a request head for a replica. ``headers`` is ``[(name, value), ...]`` as received.

    One pass for the common case; a Connection header naming other headers (rare) sends us to
    the general two-pass version.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    add = parts.extend
    content_length = -1
    chunked = False
    expect = False
    xff = None
    memo = _kind_memo
    for name, value in headers:
        kind = memo.get(name)
        if kind is None:
            kind = header_kind(name)
        if kind == K_PLAIN:
            add((name, b": ", value, CRLF))
            continue
        if kind == K_CONNECTION:
            v = value.lower()
            if v != b"keep-alive" and v != b"close" and _named(v):
                return _build_request_head_general(method, target, headers, client_ip, proto)
            continue
        if kind == K_TE:
            chunked = True  # the parser refused anything but a final "chunked"
            continue
        if kind == K_HOP:
            continue
        if kind == K_LENGTH:
            try:
                n = int(value)
            except ValueError:
                raise BadRequest("invalid Content-Length") from None
            if n < 0 or (content_length >= 0 and n != content_length):
                raise BadRequest("invalid Content-Length")
            if content_length >= 0:
                continue  # identical duplicate: forward once
            content_length = n
        elif kind == K_XFF:
            xff = value if xff is None else xff + b", " + value
            continue
        elif kind == K_XFP:
            continue  # we are the edge: the scheme is ours to state
        elif kind == K_EXPECT and value.strip().lower() == b"100-continue":
            expect = True  # answered by the gateway itself, see client.ClientConnection
            continue
        add((name, b": ", value, CRLF))
    if chunked and content_length >= 0:
        raise BadRequest("both Content-Length and Transfer-Encoding")
    if xff is None:
        add((b"X-Forwarded-For: ", client_ip, b"\r\nX-Forwarded-Proto: ", proto, CRLF))
    else:
        add((b"X-Forwarded-For: ", xff, b", ", client_ip, b"\r\nX-Forwarded-Proto: ", proto, CRLF))
    parts.append(b"Transfer-Encoding: chunked\r\n\r\n" if chunked else CRLF)
    return b"".join(parts), content_length, chunked, expect


def _named(lowered_value: bytes) -> set[bytes]:
    """Header names listed in a Connection header value (minus close/keep-alive)."""
    tokens = _connection_tokens(lowered_value)
    tokens.discard(b"close")
    tokens.discard(b"keep-alive")
    return tokens


def _build_request_head_general(method: bytes, target: bytes, headers: list,
                                client_ip: bytes, proto: bytes) -> RequestHead:
    """``build_request_head`` when Connection names extra hop-by-hop headers: drop those too."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() in (b"connection", b"proxy-connection"):
            named |= _named(value.lower())
    kept = [(n, v) for n, v in headers if n.lower() not in named]
    kept_fast = [(n, v) for n, v in kept if n.lower() not in (b"connection", b"proxy-connection")]
    return build_request_head(method, target, kept_fast, client_ip, proto)


_status_lines: dict[tuple[int, bytes], bytes] = {}


def status_line(code: int, reason: bytes) -> bytes:
    """``HTTP/1.1 <code> <reason>\\r\\n``, memoised: the same few statuses repeat."""
    key = (code, reason)
    line = _status_lines.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (code, reason)
        if len(_status_lines) < 1024:
            _status_lines[key] = line
    return line


class ResponseHeadReader:
    """httptools response-parser callbacks that rewrite a replica's head while it is parsed.

    Mixed into the replica connection, so the parser calls these directly: each header is
    classified and kept (or dropped) as it arrives, and nothing walks a list of headers again
    afterwards. ``begin_head()`` readies it for the next response; ``body_framing()`` and
    ``render_head()`` finish the rewrite for the client: hop-by-hop headers gone (RFC 9110
    7.6.1), the replica's Content-Length kept, otherwise chunked for HTTP/1.1 clients or
    close-delimited for 1.0.
    """

    reason = b""
    kept: list = []
    has_length = False
    has_te = False
    named: set | None = None  # headers a Connection header listed (rare): dropped at the end
    upgrade_to: bytes | None = None  # the Upgrade header of a 101

    def begin_head(self) -> None:
        self.reason = b""
        self.kept = [b""]  # [0] becomes the status line; then name, ": ", value, CRLF per header
        self.has_length = self.has_te = False
        self.named = self.upgrade_to = None

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = _kind_memo.get(name)
        if kind is None:
            kind = header_kind(name)
        if kind == K_PLAIN or kind >= K_XFF:  # X-Forwarded-* and Expect mean nothing here
            self.kept += (name, b": ", value, CRLF)
        elif kind == K_LENGTH:
            if not self.has_length:  # duplicates agree (the parser checked): forward one
                self.has_length = True
                self.kept += (name, b": ", value, CRLF)
        elif kind == K_TE:
            self.has_te = True
        elif kind == K_CONNECTION:
            v = value.lower()
            if v != b"keep-alive" and v != b"close":
                listed = _named(v)
                if listed:
                    self.named = listed if self.named is None else self.named | listed
        elif name.lower() == b"upgrade":
            self.upgrade_to = value.strip()

    def body_framing(self, no_body: bool, client_http11: bool) -> tuple[int, bool]:
        """How the body goes to the client (``keepalive.framing``), and whether the *backend*
        ends it by closing (no length, not chunked). ``no_body``: a HEAD request or a status
        without body. Call once per head, before :meth:`render_head`."""
        if self.named is not None:
            # Read what was kept once more without the listed headers (Content-Length may be one).
            again = ResponseHeadReader()
            again.begin_head()
            kept = self.kept
            for i in range(1, len(kept), 4):
                if kept[i].lower() not in self.named:
                    again.on_header(kept[i], kept[i + 2])
            self.kept, self.has_length = again.kept, again.has_length
        has_length = self.has_length
        return framing(no_body, has_length, client_http11), not (no_body or has_length or self.has_te)

    def render_head(self, code: int, frame: int, connection: bytes) -> bytes:
        """The head for the client: the status line, the kept headers, the framing header if
        we chunk, and ``connection`` (a ``Connection`` line, or empty: keepalive.py)."""
        kept = self.kept
        kept[0] = status_line(code, self.reason)
        if frame == FRAME_CHUNKED:
            kept.append(b"Transfer-Encoding: chunked\r\n")
        kept.append(connection)
        kept.append(CRLF)
        return b"".join(kept)


def origin_form(target: bytes) -> bytes | None:
    """``http://host/path?q`` -> ``/path?q``; None for anything else (``*``, garbage: a 400)."""
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return None
    if url is None or not url.path:
        return None
    return url.path + (b"?" + url.query if url.query else b"")


def websocket_upgrade(headers: list) -> bytes | None:
    """The ``Upgrade`` value when a request asks to switch to WebSocket, else None.

    Only WebSocket is tunnelled: other upgrades (h2c, for one) have no meaning through an
    HTTP/1.1 proxy and are stripped as the hop-by-hop headers they are.
    """
    protocol = None
    connection_upgrade = False
    for name, value in headers:
        kind = _kind_memo.get(name)
        if kind is None:
            kind = header_kind(name)
        if kind == K_CONNECTION:
            connection_upgrade = connection_upgrade or b"upgrade" in _connection_tokens(value.lower())
        elif kind == K_HOP and name.lower() == b"upgrade":
            protocol = value.strip()
    if connection_upgrade and protocol is not None and protocol.lower() == b"websocket":
        return protocol
    return None


def with_upgrade(head: bytes, protocol: bytes) -> bytes:
    """A rewritten head (hop-by-hop headers gone) that asks for, or agrees to, ``protocol``."""
    return head[:-2] + b"Connection: upgrade\r\nUpgrade: " + protocol + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of chunked encoding."""
    return b"%x\r\n%b\r\n" % (len(data), data)
