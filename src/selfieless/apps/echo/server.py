"""The echo replica's HTTP/1.1 server: one asyncio protocol per connection, parsed by httptools.

Every answer is made once, when the server starts (`Answers`), so a request costs one parse and
one write. Keep-alive as the client asks (HTTP/1.1 by default, `Connection: close`, HTTP/1.0);
pipelined requests are answered in order, since each is answered as soon as it is complete.
SIGTERM stops listening and closes the connections once their requests are answered (an answer
never waits, so that is at once).
"""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import dataclass

import httptools

HEALTH_SUFFIX = b"/_health"


def _response(status: str, body: bytes, close: bool) -> bytes:
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{'connection: close' if close else 'connection: keep-alive'}\r\n\r\n")
    return head.encode() + body


@dataclass(frozen=True)
class Answers:
    """The bytes of every answer this replica gives, keep-alive and closing."""

    hello: tuple[bytes, bytes]      # (keep-alive, close): GET of anything else
    health: tuple[bytes, bytes]     # GET .../_health
    bad_method: tuple[bytes, bytes]
    bad_request: bytes              # then the connection closes

    @classmethod
    def make(cls, service: str, port: int) -> Answers:
        body = json.dumps({"service": service, "port": port}).encode()
        not_allowed = json.dumps({"error": "only GET and HEAD are served here"}).encode()
        return cls(
            hello=(_response("200 OK", body, False), _response("200 OK", body, True)),
            health=(_response("200 OK", b"{}", False), _response("200 OK", b"{}", True)),
            bad_method=(_response("405 Method Not Allowed", not_allowed, False),
                        _response("405 Method Not Allowed", not_allowed, True)),
            bad_request=_response("400 Bad Request", json.dumps({"error": "malformed request"}).encode(), True),
        )


def answer_for(answers: Answers, method: bytes, path: bytes, keep_alive: bool) -> bytes:
    """The answer to one request (its query string cut off already); HEAD gets GET's head only."""
    if method not in (b"GET", b"HEAD"):
        pair = answers.bad_method
    elif path.endswith(HEALTH_SUFFIX):
        pair = answers.health
    else:
        pair = answers.hello
    whole = pair[0] if keep_alive else pair[1]
    if method == b"HEAD":
        return whole[:whole.index(b"\r\n\r\n") + 4]
    return whole


class EchoProtocol(asyncio.Protocol):
    __slots__ = ("answers", "connections", "transport", "parser", "url")

    def __init__(self, answers: Answers, connections: set):
        self.answers = answers
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # it speaks plain HTTP only
            self._fail()

    def _fail(self) -> None:
        self.transport.write(self.answers.bad_request)
        self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        keep = self.parser.should_keep_alive()
        path = self.url.split(b"?", 1)[0]
        self.transport.write(answer_for(self.answers, self.parser.get_method(), path, keep))
        if not keep:
            self.transport.close()


async def serve(host: str, port: int, service: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    answers = Answers.make(service, port)
    connections: set[EchoProtocol] = set()
    server = await loop.create_server(lambda: EchoProtocol(answers, connections), host, port,
                                      reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"echo: {service} serving on {host}:{port}", flush=True)
    await stop.wait()
    server.close()
    for conn in list(connections):
        conn.transport.close()
    await server.wait_closed()
