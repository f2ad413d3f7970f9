"""A small ASGI replica for the gateway tests (run in a thread or as a subprocess).

Behaviour is picked by the last path segment, whatever the prefix:
``.../slow?s=1`` sleeps, ``.../stream?n=..&chunks=..`` streams a chunked body, ``.../big?n=..``
sends n bytes with Content-Length, ``.../upload?delay=..`` reads the body slowly and reports its
size and hash, ``.../die`` SIGKILLs the process once the request head is in (subprocess only),
``.../_log`` lists the requests this replica saw (``seen``: the head arrived; ``complete``: the
whole body arrived too). Anything else echoes the request as JSON.
A WebSocket connection (any path) is accepted, greeted with the replica's id and echoed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from urllib.parse import parse_qs


def make_app(replica_id: str):
    seen: list[list[str]] = []
    complete: list[list[str]] = []

    async def send_json(send, payload, status=200, extra=()):
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def websocket_echo(scope, receive, send):
        """Accepts, says which replica it is, then echoes every message until the client leaves."""
        msg = await receive()
        assert msg["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": f"hello from {replica_id}"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") == "close":
                await send({"type": "websocket.close", "code": 1000})
                return
            if msg.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": msg["bytes"]})
            else:
                await send({"type": "websocket.send", "text": msg["text"]})

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await websocket_echo(scope, receive, send)
            return
        path = scope["path"]
        qs = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        last = path.rstrip("/").rsplit("/", 1)[-1]
        if last == "_log":
            await send_json(send, {"replica": replica_id, "seen": seen, "complete": complete})
            return
        seen.append([scope["method"], path])
        if last == "die":
            os.kill(os.getpid(), signal.SIGKILL)
            await asyncio.sleep(10)
        delay = float(qs.get("delay", 0))
        h = hashlib.sha256()
        size = 0
        chunks = 0
        while True:
            msg = await receive()
            body = msg.get("body", b"")
            if body:
                size += len(body)
                chunks += 1
                h.update(body)
                if delay:
                    await asyncio.sleep(delay)
            if msg["type"] == "http.disconnect":
                return  # the body never ended: not a complete request
            if not msg.get("more_body"):
                break
        complete.append([scope["method"], path])
        if last == "slow":
            await asyncio.sleep(float(qs.get("s", 1)))
        if last == "stream":
            n = int(qs.get("n", 1000))
            parts = int(qs.get("chunks", 4))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream"),
                                    (b"x-replica", replica_id.encode())]})
            per = max(1, n // parts)
            sent = 0
            while sent < n:
                piece = min(per, n - sent)
                await send({"type": "http.response.body", "body": b"x" * piece, "more_body": True})
                sent += piece
            await send({"type": "http.response.body", "body": b""})
            return
        if last == "big":
            n = int(qs.get("n", 1000))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(n).encode()),
                                    (b"x-replica", replica_id.encode())]})
            step = 256 * 1024
            for off in range(0, n, step):
                await send({"type": "http.response.body", "body": b"y" * min(step, n - off),
                            "more_body": off + step < n})
            return
        if last == "status":
            code = int(qs.get("code", 200))
            await send_json(send, {"replica": replica_id}, status=code)
            return
        if last == "hop":
            # Response hop-by-hop headers the gateway must strip.
            await send_json(send, {"replica": replica_id}, extra=[
                (b"connection", b"keep-alive, x-secret"), (b"x-secret", b"1"),
                (b"keep-alive", b"timeout=5"), (b"x-kept", b"yes")])
            return
        await send_json(send, {
            "replica": replica_id,
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode(),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_len": size,
            "body_sha": h.hexdigest(),
            "body_chunks": chunks,
            "http_version": scope["http_version"],
            "peer_port": (scope.get("client") or (None, None))[1],
        })

    return app


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    replica_id = sys.argv[2] if len(sys.argv) > 2 else f"r{port}"
    uvicorn.run(make_app(replica_id), host="127.0.0.1", port=port, log_level="warning",
                lifespan="off", access_log=False)


if __name__ == "__main__":
    main()
