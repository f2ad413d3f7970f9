"""The HTTP health probe: `GET <path>` answered 200 within a timeout, on a kept-alive connection.

The control plane sends one of these to every replica every second, so its CPU cost is most of
what watching a replica costs when nothing else happens. A general-purpose client opening a new
connection per probe spent 2-3 ms of CPU per probe; connection set-up and tear-down alone (socket,
connect, transport, close) cost several times the exchange itself on the control plane's loop.
So each replica gets one connection that stays open between probes: a probe writes a fixed
request on it and httptools parses the answer.

What a probe proves is unchanged: the replica answered 200 to the health path within the
timeout. Any other outcome (another status, a refused or reset connection, a malformed answer, a
timeout) is a failure with a short reason, and the connection is dropped, so the next probe
starts on a new one. The replica's accepting of new connections is still proven: after a failed
probe, when the replica closed the connection, and at least every FRESH_AFTER probes. A kept
connection that the replica closed while it was idle (its keep-alive timeout) is not a failure:
the probe is sent again at once on a new connection, within the same timeout.
"""

from __future__ import annotations

import asyncio
import functools
from urllib.parse import quote

import httptools

# Probes on one connection before it is replaced by a new one (once a minute at the 1 s interval).
FRESH_AFTER = 60
# Sent by the SelfieLessActs replicas with a passing health answer: the connections they hold
# to their server database (apps/common/ops.py), shown in status and /metrics.
DB_CONNECTIONS_HEADER = b"x-selfieless-db-connections"


class _Connection(asyncio.Protocol):
    """A connection to one replica carrying one request at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future | None = None
        self._status = 0
        self.answered = False   # some byte of an answer arrived on this request
        self.keep_alive = False
        self.closed = False
        self.busy = False
        self.timed_out = False
        self.uses = 0
        self.db_connections: int | None = None

    async def get(self, request: bytes, timeout: float, shown_timeout: float) -> tuple[int | None, str]:
        """(status or None, reason); the status only once the whole answer has arrived. A timeout
        is a plain timer on the answer (no task cancellation): this runs every second per replica."""
        assert self._transport is not None and not self.busy
        self.busy, self.uses, self.answered, self._status = True, self.uses + 1, False, 0
        self.db_connections = None
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        timer = loop.call_later(timeout, self._time_out, shown_timeout)
        try:
            if self.closed:
                return None, "connection closed before a response"
            self._transport.write(request)
            return await self._answer
        finally:
            timer.cancel()
            self.busy = False

    def _time_out(self, shown_timeout: float) -> None:
        self.timed_out = True
        self._settle(None, f"no answer within {shown_timeout:g} s")
        self.close()  # the answer may still come: this connection is done

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._settle(None, f"malformed HTTP response ({e})")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None:
            self._settle(None, f"connection reset ({getattr(exc, 'strerror', None) or exc})")
        elif self._status:
            self._settle(self._status, "")  # a body delimited by the close
        else:
            self._settle(None, "connection closed before a response")

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == len(DB_CONNECTIONS_HEADER) and name.lower() == DB_CONNECTIONS_HEADER and value.isdigit():
            self.db_connections = int(value)

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self._settle(self._status, "")

    def _settle(self, status: int | None, reason: str) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((status, reason))


@functools.lru_cache(maxsize=4096)
def _request(host: str, port: int, path: str) -> bytes:
    return (f"GET {quote(path, safe='/?&=%:@+,;~!$()*')} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "User-Agent: selfieless-probe\r\n\r\n").encode("ascii")


def _result(status: int | None, reason: str) -> tuple[bool, str]:
    if status == 200:
        return True, "200"
    return False, reason or f"status {status}"


class HttpProber:
    """`await prober(host, port, path, timeout)` -> (ok, detail); one per runtime, keeping one
    connection per replica address."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int], _Connection] = {}
        # (host, port) -> database connections the replica reported with its last passing answer
        self.db_connections: dict[tuple[str, int], int] = {}

    async def __call__(self, host: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        request = _request(host, port, path)
        key = (host, port)
        kept = self._kept.get(key)
        if kept is not None and not kept.busy:  # busy: a second probe at once gets its own connection
            del self._kept[key]
            if not kept.closed and kept.uses < FRESH_AFTER:
                status, reason = await self._use(kept, request, timeout, timeout)
                if status is not None or kept.answered or kept.timed_out:
                    self._keep(key, kept, status)
                    return _result(status, reason)
                # Closed before a byte of the answer: the replica ended an idle connection. Ask anew.
            kept.close()
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(_Connection, host, port)
        except TimeoutError:
            return False, f"no answer within {timeout:g} s"
        except OSError as e:
            return False, f"connection failed ({e.strerror or e})"
        status, reason = await self._use(conn, request, max(0.0, deadline - loop.time()), timeout)
        self._keep(key, conn, status)
        return _result(status, reason)

    @staticmethod
    async def _use(conn: _Connection, request: bytes, timeout: float, shown: float) -> tuple[int | None, str]:
        try:
            return await conn.get(request, timeout, shown)
        except BaseException:  # cancelled (runtime stopping): the answer may still come; never reuse it
            conn.close()
            raise

    def _keep(self, key: tuple[str, int], conn: _Connection, status: int | None) -> None:
        """Only a connection that just carried a 200 and may stay open is kept."""
        if status == 200:
            if conn.db_connections is None:
                self.db_connections.pop(key, None)
            else:
                self.db_connections[key] = conn.db_connections
        if status == 200 and conn.keep_alive and not conn.closed and key not in self._kept:
            self._kept[key] = conn
        else:
            conn.close()

    async def aclose(self) -> None:
        for conn in self._kept.values():
            conn.close()
        self._kept.clear()
