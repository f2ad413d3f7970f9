"""The acts service's connection to the users service (acts/users_client.py) against real
sockets on 127.0.0.1: the list on a kept-alive connection, a new connection when the server
closed the kept one, chunked answers, and failures that become the upload's 503."""

from __future__ import annotations

import asyncio

import pytest

from selfieless.apps.acts.users_client import UsersClient
from selfieless.apps.common.errors import ApiError

LIST = b'["alice","bob"]'


async def _serve(answers: list[bytes], close_after_each: bool = False):
    """Answers each request head with the next of `answers`; records (connection, head)."""
    seen: list[tuple[int, bytes]] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        me = connections
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append((me, head))
                writer.write(answers.pop(0))
                await writer.drain()
                if close_after_each:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def _ok(body: bytes = LIST) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def _check(answers: list[bytes], names: list[str], close_after_each: bool = False):
    async def main():
        server, port, seen = await _serve(answers, close_after_each)
        async with server:
            client = UsersClient(f"http://127.0.0.1:{port}", "http://127.0.0.1:9", timeout=2.0)
            try:
                found = [await client.exists(name) for name in names]
            finally:
                await client.close()
        return found, seen
    return asyncio.run(main())


def test_the_list_is_asked_on_one_kept_connection():
    found, seen = _check([_ok(), _ok(), _ok()], ["alice", "carol", "bob"])
    assert found == [True, False, True]
    assert [conn for conn, _ in seen] == [1, 1, 1]
    head = seen[0][1].decode()
    assert head.startswith("GET /api/v1/users HTTP/1.1\r\n") and "\r\nOrigin: http://127.0.0.1:9\r\n" in head


def test_a_connection_the_server_closed_is_opened_again():
    found, seen = _check([_ok(), _ok()], ["alice", "bob"], close_after_each=True)
    assert found == [True, True] and [conn for conn, _ in seen] == [1, 2]


def test_chunked_and_empty_answers():
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\n[\"alice\r\n2\r\n\"]\r\n0\r\n\r\n"
    found, _ = _check([chunked, b"HTTP/1.1 204 No Content\r\n\r\n"], ["alice", "alice"])
    assert found == [True, False]


@pytest.mark.parametrize("answer, why", [
    (b"HTTP/1.1 500 Oops\r\ncontent-length: 2\r\n\r\n{}", "answered 500"),
    (_ok(b"not json"), "not JSON"),
    (_ok(b'{"alice": 1}'), "other than a list"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n[\"al", "unreachable"),  # cut off mid-answer
])
def test_a_failed_check_is_a_503(answer, why):
    with pytest.raises(ApiError) as failed:
        _check([answer], ["alice"], close_after_each=True)
    assert failed.value.status == 503 and why in failed.value.message


def test_nothing_listening_is_a_503():
    async def main():
        client = UsersClient("http://127.0.0.1:9", "http://127.0.0.1:9", timeout=2.0)
        with pytest.raises(ApiError) as failed:
            await client.exists("alice")
        return failed.value
    failed = asyncio.run(main())
    assert failed.status == 503 and "unreachable" in failed.message
