#!/usr/bin/env python3
"""Python CPU cost of one proxied request through the gateway, without sockets (not a test).

Drives ClientConnection (and its BackendExchange) / UpstreamConnection with fake transports: a client request goes in, the
pooled upstream connection receives a typical small response, the client gets it back. Prints
microseconds per request; use it to compare hot-path changes on a busy machine where wrk
numbers are noisy.  python benchmarks/gateway_microbench.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import time

from selfieless.gateway import Gateway, GatewayConfig, new_event_loop
from selfieless.gateway.client import ClientConnection
from selfieless.gateway.upstream import UpstreamConnection

REQUEST = b"GET /api/v1/bench HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 03:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")


class FakeTransport:
    def __init__(self):
        self.n = 0

    def write(self, data):
        self.n += 1

    def writelines(self, data):
        self.n += 1

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 5555) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass

    def abort(self):
        pass

    def is_closing(self):
        return False


async def main(n: int) -> None:
    gw = Gateway(GatewayConfig(port=0), routes={"/api/v1/users": "users", "/api/v1": "acts"})
    gw.loop = asyncio.get_running_loop()
    gw.now = gw.loop.time()
    pool = gw.pool("acts")
    reps = [pool.add(f"r{i}", "127.0.0.1", 9000 + i) for i in range(2)]
    for view in reps:
        rep = pool.get(view.id)
        up = UpstreamConnection(gw, rep)
        up.connection_made(FakeTransport())
        rep.put_idle(up, gw.loop.time(), 64)
    client = ClientConnection(gw)
    ct = FakeTransport()
    client.connection_made(ct)
    for _ in range(2):
        t0 = time.process_time()
        for _ in range(n):
            client.data_received(REQUEST)
            up = client.exchange.upstream
            up.data_received(RESPONSE)
        dt = time.process_time() - t0
    assert client.active is None and ct.n >= n, "request did not complete"
    print(f"{dt / n * 1e6:.2f} us per request (python CPU time, {n} requests)")
    print("served:", [r.served for r in pool.replicas], "api_requests:", gw.stats("acts").api_requests)


if __name__ == "__main__":
    # The gateway's own loop (uvloop): loop.time() and friends cost what they cost in production.
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
