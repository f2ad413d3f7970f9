"""The HTTP health probe (orchestrator/probe.py) against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio

from selfieless.orchestrator.probe import HttpProber


async def _serve(answer: bytes | None, seen: list[bytes]):
    """A server that reads one request head and answers `answer` (None: says nothing)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        if answer is None:
            await asyncio.sleep(10)
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _probe(answer: bytes | None, path: str = "/api/v1/_health", timeout: float = 5.0):
    seen: list[bytes] = []

    async def main():
        server, port = await _serve(answer, seen)
        async with server:
            return await HttpProber()("127.0.0.1", port, path, timeout)
    return asyncio.run(main()), seen


def test_200_passes_and_the_request_is_a_plain_get_of_the_path():
    (ok, detail), seen = _probe(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
    assert (ok, detail) == (True, "200")
    head = seen[0].decode()
    assert head.startswith("GET /api/v1/_health HTTP/1.1\r\n")
    assert "\r\nHost: 127.0.0.1:" in head


def test_a_body_delimited_by_the_close_still_counts():
    (ok, _), _ = _probe(b"HTTP/1.0 200 OK\r\n\r\n{}")
    assert ok


def test_any_other_status_fails():
    assert _probe(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\n\r\n{}")[0] == (False, "status 500")
    assert _probe(b"HTTP/1.1 204 No Content\r\n\r\n")[0] == (False, "status 204")


def test_garbage_or_silence_fails():
    ok, detail = _probe(b"SSH-2.0-OpenSSH\r\n\r\n")[0]
    assert not ok and "malformed" in detail
    ok, detail = _probe(b"")[0]
    assert not ok and "closed before a response" in detail
    ok, detail = _probe(None, timeout=0.3)[0]
    assert (ok, detail) == (False, "no answer within 0.3 s")


def test_a_refused_connection_fails():
    async def main():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return await HttpProber()("127.0.0.1", port, "/", 2.0)
    ok, detail = asyncio.run(main())
    assert not ok and detail.startswith("connection failed")


def _keepalive_server(connections: list[int], close_after: int | None = None):
    """Answers 200 to every request of a connection; counts requests per connection; closes a
    connection after `close_after` answers (a replica's keep-alive timeout, in effect)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        me = len(connections) - 1
        try:
            while close_after is None or connections[me] < close_after:
                await reader.readuntil(b"\r\n\r\n")
                connections[me] += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()
    return asyncio.start_server(handle, "127.0.0.1", 0)


def test_probes_share_one_connection_and_renew_it_now_and_then():
    from selfieless.orchestrator.probe import FRESH_AFTER
    connections: list[int] = []

    async def main():
        async with await _keepalive_server(connections) as server:
            port = server.sockets[0].getsockname()[1]
            prober = HttpProber()
            results = [await prober("127.0.0.1", port, "/h", 5.0) for _ in range(FRESH_AFTER + 5)]
            await prober.aclose()
            return results
    assert set(asyncio.run(main())) == {(True, "200")}
    assert connections == [FRESH_AFTER, 5]


def test_a_connection_the_replica_closed_while_idle_is_not_a_failure():
    connections: list[int] = []

    async def main():
        async with await _keepalive_server(connections, close_after=1) as server:
            port = server.sockets[0].getsockname()[1]
            prober = HttpProber()
            results = []
            for _ in range(4):
                results.append(await prober("127.0.0.1", port, "/h", 5.0))
                await asyncio.sleep(0.05)  # let the close arrive, as it would between probes
            await prober.aclose()
            return results
    assert asyncio.run(main()) == [(True, "200")] * 4
    assert connections == [1, 1, 1, 1]


def test_two_probes_at_once_each_get_an_answer():
    connections: list[int] = []

    async def main():
        async with await _keepalive_server(connections) as server:
            port = server.sockets[0].getsockname()[1]
            prober = HttpProber()
            await prober("127.0.0.1", port, "/h", 5.0)
            results = await asyncio.gather(*(prober("127.0.0.1", port, "/h", 5.0) for _ in range(3)))
            await prober.aclose()
            return results
    assert asyncio.run(main()) == [(True, "200")] * 3
    assert sum(connections) == 4


def test_after_a_failure_the_next_probe_opens_a_new_connection():
    connections: list[int] = []
    answers = iter([b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\n\r\n{}",
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"])

    async def handle(reader, writer):
        connections.append(0)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                connections[-1] += 1
                writer.write(next(answers))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    async def main():
        async with await asyncio.start_server(handle, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            prober = HttpProber()
            results = [await prober("127.0.0.1", port, "/h", 5.0) for _ in range(3)]
            await prober.aclose()
            return results
    assert asyncio.run(main()) == [(True, "200"), (False, "status 500"), (True, "200")]
    assert connections == [2, 1]


def test_a_kept_connection_that_goes_silent_times_out():
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await reader.read()  # the second request is never answered

    async def main():
        async with await asyncio.start_server(handle, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            prober = HttpProber()
            results = [await prober("127.0.0.1", port, "/h", 0.3) for _ in range(2)]
            await prober.aclose()
            return results
    assert asyncio.run(main()) == [(True, "200"), (False, "no answer within 0.3 s")]


def test_the_database_connections_a_passing_replica_reports_are_kept_per_address():
    async def main():
        seen: list[bytes] = []
        reporting, port = await _serve(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"
                                       b"X-Selfieless-Db-Connections: 5\r\n\r\n{}", seen)
        silent, other = await _serve(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", seen)
        failing, third = await _serve(b"HTTP/1.1 500 Oops\r\ncontent-length: 2\r\n"
                                      b"X-Selfieless-Db-Connections: 9\r\n\r\n{}", seen)
        async with reporting, silent, failing:
            prober = HttpProber()
            for p in (port, other, third):
                await prober("127.0.0.1", p, "/api/v1/_health", 5.0)
            return prober.db_connections, port
    reported, port = asyncio.run(main())
    assert reported == {("127.0.0.1", port): 5}
