"""The replicas' one-line access log, driven as ASGI without sockets."""

import asyncio
import os

from selfieless.apps.common.accesslog import AccessLog, format_line


def test_format_line():
    assert format_line("2026-11-28 06:55:01", "GET", "/api/v1/categories", b"", 200, 0.0013) == \
        b"2026-11-28 06:55:01 GET /api/v1/categories 200 1.3 ms\n"
    assert format_line("t", "GET", "/a", b"start=1&end=2", 0, 0.5) == b"t GET /a?start=1&end=2 - 500.0 ms\n"


def run(app, path, method="GET"):
    r, w = os.pipe()
    log = AccessLog(app, fd=w)
    scope = {"type": "http", "method": method, "path": path, "query_string": b""}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    try:
        asyncio.run(log(scope, receive, send))
    except RuntimeError:
        pass
    os.close(w)
    with os.fdopen(r, "rb") as f:
        return f.read().decode(), sent


def answering(status, chunks=(b"{}",)):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        for i, c in enumerate(chunks):
            await send({"type": "http.response.body", "body": c, "more_body": i < len(chunks) - 1})
    return app


def test_one_line_per_request_after_the_last_chunk():
    text, sent = run(answering(201, (b"a", b"b", b"c")), "/api/v1/acts", "POST")
    assert len(sent) == 4
    assert text.count("\n") == 1 and " POST /api/v1/acts 201 " in text and text.endswith(" ms\n")


def test_passing_health_probes_are_quiet_and_failing_ones_are_not():
    assert run(answering(200), "/api/v1/_health")[0] == ""
    assert " GET /api/v1/_health 500 " in run(answering(500), "/api/v1/_health")[0]


def test_a_handler_that_raises_is_logged_as_500():
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    text, _ = run(broken, "/api/v1/x")
    assert " GET /api/v1/x 500 " in text
