"""Gateway (data plane): the HTTP/1.1 reverse proxy in front of every service.

Public API (docs/interfaces.md): :class:`Gateway`, :class:`GatewayConfig`, :class:`ReplicaPool`,
:class:`ReplicaView`, :class:`ServiceStats`. The gateway never imports the orchestrator; the
control plane drives it through this API and hears about passive ejections via ``on_eject``.

Modules: ``config`` (settings), ``routing`` (host and prefix table), ``pool`` (backend choice: a
*backend* is the gateway's view of a replica), ``headers`` (rewriting), ``stats`` (counters),
``responses`` (gateway-made JSON answers), ``exchange`` (what a failure or a deadline means
for a request), ``stall`` (which backends are stalled), ``control_changes`` (what the control
API's long poll sends) and ``front`` (redirects, ACME challenges, the status page by host) are
pure; ``request`` is one client request and where its exchange stands; ``client``, ``upstream``
and ``tunnel`` (upgraded connections spliced) are the socket edge (the client and the backend
side of an exchange); ``tls`` holds HTTPS (contexts, certificates by SNI, reload) and ``acme``
gets certificates from an ACME CA; ``gateway`` is the facade; ``control`` is the protocol a
control plane drives, served to another process by ``control_api`` and used there through
``control_client``; ``__main__`` runs it standalone.
"""

from .config import GatewayConfig
from .gateway import Gateway
from .pool import DRAINING, EJECTED, READY, REMOVED, WITHDRAWN, Backend, ReplicaPool, ReplicaView
from .stats import LATENCY_BUCKETS, CountRule, LatencyHistogram, ServiceStats

__all__ = [
    "Gateway", "GatewayConfig", "ReplicaPool", "ReplicaView", "Backend", "ServiceStats",
    "LatencyHistogram", "CountRule", "LATENCY_BUCKETS", "READY", "DRAINING", "EJECTED", "REMOVED", "WITHDRAWN",
    "new_event_loop",
]


def new_event_loop():
    """uvloop's event loop when installed (it proxies much faster), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        import asyncio

        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
