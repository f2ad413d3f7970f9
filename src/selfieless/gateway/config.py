"""Gateway settings: limits, timeouts and balancing mode, all in one immutable object.

Everything the data plane needs to decide is read from here once per connection (or once at
start), never looked up from the environment on the request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BALANCE_MODES = ("round_robin", "least_outstanding")


@dataclass(frozen=True)
class GatewayConfig:
    """Limits, timeouts and balancing mode of one gateway (all times in seconds)."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0 picks a free port; Gateway.port tells which
    backlog: int = 1024

    balance: str = "round_robin"  # or "least_outstanding"

    # Limits.
    max_header_size: int = 64 * 1024  # request line + headers -> 431 beyond
    max_body_size: int = 16 * 1024 * 1024  # -> 413 before anything is forwarded
    retry_body_limit: int = 64 * 1024  # bodies up to this are kept so a retry can replay them

    # Timeouts.
    header_timeout: float = 10.0  # first byte of a request -> end of its headers (slowloris), 408
    body_timeout: float = 60.0  # longest silence while a request body streams in, 408
    keepalive_timeout: float = 15.0  # idle client connection closed quietly
    connect_timeout: float = 3.0  # TCP connect to a replica
    # Request sent -> response head from the replica (504), and afterwards the longest silence
    # of a replica while its response body streams (the client connection is then closed,
    # which tells it the body is short), like nginx's proxy_read_timeout.
    response_timeout: float = 60.0
    upstream_idle_timeout: float = 3.0  # pooled replica connection unused this long is closed;
    # keep it below the replicas' own keep-alive timeout (uvicorn: 5 s) so we rarely reuse a
    # connection that the replica is closing at the same moment
    no_replica_wait: float = 10.0  # hold a request this long for a ready replica, then 503
    tunnel_idle_timeout: float = 600.0  # an upgraded (WebSocket) connection silent this long is closed
    # A replica holding a read this long without a response byte, and silent meanwhile while a
    # sibling answers, is withdrawn from the rotation (see stall.py); 0 turns this off.
    stall_timeout: float = 0.5

    # Pools and buffers.
    upstream_max_idle: int = 64  # pooled idle connections kept per replica
    write_buffer_high: int = 256 * 1024  # transport high-water mark: pause the other side
    write_buffer_low: int = 64 * 1024

    # Request counting for autoscaling (see docs/interfaces.md).
    count_prefix: str = "/api/v1"
    count_exclude: tuple[str, ...] = field(
        default=("/api/v1/_health", "/api/v1/_crash", "/api/v1/_count")
    )

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance must be one of {BALANCE_MODES}, not {self.balance!r}")
        for name in ("max_header_size", "max_body_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.stall_timeout < 0:
            raise ValueError("stall_timeout must not be negative (0 turns it off)")
        if self.write_buffer_low > self.write_buffer_high:
            raise ValueError("write_buffer_low must not exceed write_buffer_high")

    @property
    def sweep_interval(self) -> float:
        """How often the timeout sweeper runs: fine enough for the shortest timeout."""
        shortest = min(
            self.header_timeout,
            self.body_timeout,
            self.keepalive_timeout,
            self.response_timeout,
            self.upstream_idle_timeout,
            self.tunnel_idle_timeout,
            *((self.stall_timeout,) if self.stall_timeout > 0 else ()),
        )
        return max(0.05, min(1.0, shortest / 4))
