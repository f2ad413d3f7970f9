"""Fuzzing the gateway's request side without sockets (hypothesis).

Two targets:
- the request-head rewrite (`build_request_head`) on heads httptools accepted: what goes to a
  replica re-parses as the same request, with hop-by-hop headers gone, one X-Forwarded-For ending
  with the client, and no header smuggled in through a name or value;
- the client connection (`ClientConnection`) fed arbitrary bytes in arbitrary pieces through a
  recording transport, with no replica ready so the request is held: it never raises, everything
  it writes parses as HTTP responses with a JSON error body, it never holds more body than the
  limit, and a valid chunked body is re-framed into exactly the bytes the client sent.

Bounded: a few hundred examples each, a few seconds in all.
"""

from __future__ import annotations

import asyncio

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from selfieless.gateway import Gateway, GatewayConfig
from selfieless.gateway.headers import BadRequest, build_request_head
from selfieless.gateway.client import ClientConnection

HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
       b"proxy-authenticate", b"proxy-authorization", b"transfer-encoding"}
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
                min_size=1, max_size=20).map(str.encode)
NAMES = st.one_of(TOKEN, st.sampled_from([
    b"Connection", b"Keep-Alive", b"TE", b"Trailer", b"Upgrade", b"Proxy-Connection",
    b"Content-Length", b"Transfer-Encoding", b"X-Forwarded-For", b"X-Forwarded-Proto", b"Expect", b"Host"]))
VALUES = st.one_of(
    st.binary(max_size=30).filter(lambda v: b"\r" not in v and b"\n" not in v and b"\x00" not in v),
    st.sampled_from([b"close", b"keep-alive", b"x-secret, close", b"chunked", b"gzip, chunked", b"0", b"12",
                     b"-1", b"100-continue", b"1.2.3.4", b"websocket", b"h2c"]))


class Parsed:
    """httptools callbacks collecting one message."""

    def __init__(self):
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = 0

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        self.complete += 1


def parse_request(data: bytes) -> tuple[Parsed, httptools.HttpRequestParser]:
    p = Parsed()
    parser = httptools.HttpRequestParser(p)
    parser.feed_data(data)
    return p, parser


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(method=b"GET", path=b"/api/v1/", headers=[(b"0", b""), (b"Connection", b"0")])
@example(method=b"GET", path=b"/api/v1/", headers=[(b"0", b""), (b"Proxy-Connection", b"0")])
@given(method=st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"PATCH"]),
       path=st.text(alphabet="abc/%-_.~09", max_size=20).map(lambda p: b"/api/v1/" + p.encode()),
       headers=st.lists(st.tuples(NAMES, VALUES), max_size=8))
def test_request_head_rewrite_forwards_the_same_request_and_nothing_hop_by_hop(method, path, headers):
    raw = method + b" " + path + b" HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    try:
        received, parser = parse_request(raw)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return  # the gateway answers 400 (or handles the upgrade) before rewriting anything
    if received.url != path:
        return
    try:
        head, length, chunked, expect = build_request_head(method, path, received.headers, b"10.9.8.7")
    except BadRequest:
        return  # answered 400 by the gateway
    assert head.endswith(b"\r\n\r\n") and head.count(b"\r\n\r\n") == 1
    out, _ = parse_request(head + (b"0\r\n\r\n" if chunked else b""))
    assert out.url == path
    names = [n.lower() for n, _ in out.headers]
    # Only what the gateway adds, once each; hop-by-hop headers never pass (bar our own framing).
    assert names.count(b"x-forwarded-for") == 1 and names.count(b"x-forwarded-proto") == 1
    assert names.count(b"transfer-encoding") == (1 if chunked else 0)
    assert not (HOP - {b"transfer-encoding"}) & set(names)
    xff = dict((n.lower(), v) for n, v in out.headers)[b"x-forwarded-for"]
    assert xff.endswith(b"10.9.8.7")
    # Every other header the client sent arrives unchanged and in order (none merged or split).
    # (A Connection header also makes the headers it names hop-by-hop: RFC 9110 7.6.1; the
    # gateway reads the legacy Proxy-Connection the same way.)
    named = {t.strip().lower() for n, v in received.headers
             if n.lower() in (b"connection", b"proxy-connection") for t in v.split(b",")}
    kept = [(n, v) for n, v in received.headers
            if n.lower() not in HOP | named | {b"x-forwarded-for", b"x-forwarded-proto", b"expect", b"content-length"}]
    assert [(n, v) for n, v in out.headers if n.lower() in {k.lower() for k, _ in kept}] == kept


class RecordingTransport(asyncio.Transport):
    """What a ClientConnection writes, and whether it closed; no socket behind it."""

    def __init__(self):
        super().__init__()
        self.data = bytearray()
        self.closed = False
        self.eof = False

    def write(self, data):
        assert not self.closed, "write after close"
        self.data += data

    def write_eof(self):
        self.eof = True

    def can_write_eof(self):
        return True

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default


MAX_BODY = 3000
RETRY_LIMIT = 4096  # above MAX_BODY: every body is held whole until it ends or is refused


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def feed(loop, pieces: list[bytes]) -> tuple[ClientConnection, RecordingTransport]:
    gw = Gateway(GatewayConfig(port=0, max_body_size=MAX_BODY, retry_body_limit=RETRY_LIMIT,
                               max_header_size=2048), routes={"/api/v1": "acts"})
    gw.loop = loop
    gw.now = 0.0
    gw.pool("acts")  # a service with no ready replica: requests wait, nothing is forwarded
    conn = ClientConnection(gw)
    t = RecordingTransport()
    conn.connection_made(t)
    for piece in pieces:
        if t.closed:
            break
        conn.data_received(piece)
    return conn, t


def responses(data: bytes) -> list[tuple[int, bytes]]:
    out = []

    class P(Parsed):
        def on_message_complete(self):
            out.append((parser.get_status_code(), self.body))
            self.body = b""

    parser = httptools.HttpResponseParser(P())
    parser.feed_data(bytes(data))
    return out


def drop_tasks(loop):
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = [], 0
    for n in sizes:
        if i >= len(body):
            break
        part = body[i:i + n]
        out.append(b"%x\r\n%s\r\n" % (len(part), part))
        i += n
    if i < len(body):
        out.append(b"%x\r\n%s\r\n" % (len(body) - i, body[i:]))
    return b"".join(out) + b"0\r\n\r\n"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if b > a]


HEAD = b"POST /api/v1/acts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=MAX_BODY), sizes=st.lists(st.integers(1, 700), max_size=12),
       cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_valid_chunked_body_is_reframed_into_the_same_bytes(loop, body, sizes, cuts):
    conn, t = feed(loop, split(HEAD + chunked(body, sizes), cuts))
    try:
        assert not t.closed and responses(t.data) == []
        r = conn.active
        assert r is not None and r.complete and not r.sent
        decoded, _ = parse_request(r.head + b"".join(r.unsent))
        assert decoded.complete == 1 and decoded.body == body
    finally:
        drop_tasks(loop)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(tail=st.one_of(
           st.binary(max_size=400),
           st.lists(st.one_of(st.sampled_from([b"0\r\n\r\n", b"\r\n", b"5\r\nhello\r\n", b"fff\r\n",
                                               b"ffffffffffffffffff\r\n", b"-1\r\n", b"5;ext=1\r\nabcde\r\n",
                                               b"1\r\nx", b"zz\r\n", b"0\r\nTrailer: x\r\n\r\n",
                                               b"800\r\n" + b"q" * 2048 + b"\r\n"]),
                              st.binary(max_size=8)), max_size=10).map(b"".join)),
       cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_any_chunked_input_is_held_or_refused_never_a_crash(loop, tail, cuts):
    conn, t = feed(loop, split(HEAD + tail, cuts))
    try:
        answers = responses(t.data)
        for status, payload in answers:
            assert status in (400, 413, 431), status
            assert payload.startswith(b'{"error":')
        r = conn.active or conn.cur
        if answers:
            assert conn.flow.paused_by or t.eof or t.closed  # it stops reading the request it refused
        elif r is not None:
            # Held, never forwarded, and never more body than the limit.
            assert not r.sent and r.received <= MAX_BODY
    finally:
        drop_tasks(loop)
