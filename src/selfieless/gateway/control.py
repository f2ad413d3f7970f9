"""What the control plane needs from the gateway: the :class:`GatewayControl` protocol.

The orchestrator, the rollout and apply executors and the admin API talk to the data plane only
through these methods, so the gateway can live in the same process (:class:`~.gateway.Gateway`
implements the protocol directly) or in its own process behind a loopback-only control API
(:class:`~.control_client.RemoteGateway`, served by :mod:`.control_api`). Names follow the
gateway's view: a *backend* is one replica's address in a service's pool (methods and callbacks
say backend; the snapshot type keeps its public name, :class:`~.pool.ReplicaView`, listed by a
pool's ``replicas``).

Callbacks flow the other way: the gateway reports passive ejections (``on_eject``), stalled
backends it withdrew from the rotation (``on_withdraw``), every backend of a service stalling
together (``on_stalled_together``), 5xx answers (``on_backend_error``) and requests held because
no backend is ready (``on_no_backend``, which scale-to-zero uses); the control plane assigns them
after start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from .pool import ReplicaView
from .stats import ServiceStats

EjectCallback = Callable[[str, str, str], object]          # (service, backend id, reason)
ErrorCallback = Callable[[str, str, int], object]          # (service, backend id, status)
NoBackendCallback = Callable[[str], object]                # (service)
ServiceCallback = Callable[[str, str], object]             # (service, reason)


class BackendList(Protocol):
    """One service's pool as the control plane reads it."""

    @property
    def replicas(self) -> list[ReplicaView]: ...


@runtime_checkable
class GatewayControl(Protocol):
    """The data plane as the control plane drives it (docs/interfaces.md)."""

    on_eject: EjectCallback | None
    on_withdraw: EjectCallback | None
    on_stalled_together: ServiceCallback | None
    on_backend_error: ErrorCallback | None
    on_no_backend: NoBackendCallback | None

    @property
    def port(self) -> int | None:
        """The public port actually bound (None before start)."""

    def set_routes(self, routes: Mapping[str, str]) -> None:
        """Replace the whole route table (path prefix -> service)."""

    def set_limits(self, balance: str, limits: Mapping[str, Any]) -> None:
        """New balancing mode and connection limits; open connections keep the old ones."""

    def add_backend(self, service: str, backend_id: str, host: str, port: int) -> None:
        """Put a backend in rotation (again, if it was ejected or draining)."""

    def remove_backend(self, service: str, backend_id: str, failed: bool = False) -> None:
        """Take a backend out at once; requests in flight to it finish, unless it ``failed`` its
        health check: then those with no response byte yet go elsewhere or get a 502 at once."""

    async def drain_backend(self, service: str, backend_id: str, timeout: float) -> bool:
        """No new requests to the backend; True once nothing is in flight, False at timeout."""

    def backends(self, service: str) -> list[ReplicaView]:
        """The service's backends (any state), in the order they were first added."""

    def counters(self, service: str) -> ServiceStats | None:
        """The service's request counters (the autoscaler's input); None before any request."""

    async def refresh(self) -> None:
        """Make the next reads of counters and backends current (a remote gateway's are otherwise
        up to a poll interval old; in-process there is nothing to do)."""

    @property
    def all_stats(self) -> Mapping[str, ServiceStats]:
        """Counters of every service that has seen a request."""

    @property
    def pools(self) -> Mapping[str, BackendList]:
        """Every service's pool (read ``.replicas``)."""
