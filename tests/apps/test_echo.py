"""The echo replica (issue 28's replica a thousand of which fit on one machine): its answers as a
table, then the real process over a socket: keep-alive, pipelining, bad input, and SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from selfieless.apps.echo.server import Answers, answer_for

ANSWERS = Answers.make("echo2", 11003)
HELLO = json.dumps({"service": "echo2", "port": 11003}).encode()


def parts(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


@pytest.mark.parametrize("method, path, keep, status, body, connection", [
    (b"GET", b"/echo2/hello", True, "HTTP/1.1 200 OK", HELLO, "keep-alive"),
    (b"GET", b"/", False, "HTTP/1.1 200 OK", HELLO, "close"),
    (b"GET", b"/echo2/_health", True, "HTTP/1.1 200 OK", b"{}", "keep-alive"),
    (b"GET", b"/_health", True, "HTTP/1.1 200 OK", b"{}", "keep-alive"),
    (b"GET", b"/echo2/_healthy", True, "HTTP/1.1 200 OK", HELLO, "keep-alive"),   # only the last segment
    (b"HEAD", b"/echo2/hello", True, "HTTP/1.1 200 OK", b"", "keep-alive"),
    (b"HEAD", b"/x/_health", False, "HTTP/1.1 200 OK", b"", "close"),
    (b"POST", b"/echo2/hello", True, "HTTP/1.1 405 Method Not Allowed", None, "keep-alive"),
    (b"DELETE", b"/echo2/_health", False, "HTTP/1.1 405 Method Not Allowed", None, "close"),
])
def test_answers(method, path, keep, status, body, connection):
    line, headers, got = parts(answer_for(ANSWERS, method, path, keep))
    assert line == status
    assert headers["connection"] == connection and headers["content-type"] == "application/json"
    if body is not None:
        assert got == body
    if method != b"HEAD":
        assert int(headers["content-length"]) == len(got)
    else:  # HEAD: GET's length, no body
        assert int(headers["content-length"]) == len(answer_for(ANSWERS, b"GET", path, keep).partition(b"\r\n\r\n")[2])
    if line.startswith("HTTP/1.1 405"):
        assert "only GET and HEAD" in json.loads(got)["error"]


@pytest.fixture
def replica():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "selfieless.apps.echo", "--port", str(port), "--service", "echo3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
    yield port, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def read_answers(sock: socket.socket, n: int) -> list[bytes]:
    """`n` whole answers (each head plus its content-length of body)."""
    buf, out = b"", []
    sock.settimeout(10)
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = int(parts(head + b"\r\n\r\n")[1]["content-length"])
        while len(rest) < length:
            rest += sock.recv(65536)
        out.append(rest[:length])
        buf = rest[length:]
    return out


def test_keep_alive_and_pipelining(replica):
    port, _ = replica
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /a/_health?x=1 HTTP/1.1\r\nhost: x\r\n\r\n"
                  b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        bodies = read_answers(s, 3)
        assert [json.loads(b) for b in bodies] == [{"service": "echo3", "port": port}, {},
                                                   {"service": "echo3", "port": port}]
        s.sendall(b"GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")  # the same connection, still open
        assert read_answers(s, 1) == [json.dumps({"service": "echo3", "port": port}).encode()]
        assert s.recv(100) == b""  # then closed, as asked


def test_malformed_request_gets_400_and_a_closed_connection(replica):
    port, _ = replica
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        s.settimeout(10)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    line, headers, body = parts(raw)
    assert line == "HTTP/1.1 400 Bad Request" and json.loads(body) == {"error": "malformed request"}


def test_sigterm_closes_connections_and_exits(replica):
    port, proc = replica
    with socket.create_connection(("127.0.0.1", port)) as idle:
        idle.sendall(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_answers(idle, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        idle.settimeout(5)
        assert idle.recv(100) == b""  # the kept-alive connection was closed, not left hanging
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
