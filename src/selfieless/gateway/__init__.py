"""Gateway (data plane): the HTTP/1.1 reverse proxy in front of every service.

Public API (docs/interfaces.md): :class:`Gateway`, :class:`GatewayConfig`, :class:`ReplicaPool`,
:class:`ReplicaView`, :class:`ServiceStats`. The gateway never imports the orchestrator; the
control plane drives it through this API and hears about passive ejections via ``on_eject``.

Modules (docs/architecture.md draws them and the flow of a request):

* pure decisions: ``routing`` (host and prefix table), ``pool`` (backend choice and the rotation rule; a
  *backend* is the gateway's view of a replica), ``headers`` (rewriting), ``keepalive`` (response
  framing and whether the client connection stays open), ``exchange`` (what a failure or a
  deadline means for a request), ``stall`` (which backends are stalled), ``control_changes`` (what
  a control poll sends), ``front`` (redirects, ACME challenges, the status page by host),
  ``responses`` (gateway-made answers);
* records: ``config`` (settings), ``request`` (one request on its way), ``stats`` (counters);
* the socket edge: ``client`` (the client connection), ``backend_exchange`` (the backend half of
  a request–response cycle), ``connect`` (its waits for a backend and a connection),
  ``upstream`` (the backend connection), ``tunnel`` (WebSocket), ``flow`` (pause/resume);
* HTTPS: ``tls`` (contexts, certificates by SNI, reload), ``acme`` (certificates from an ACME CA);
* ``gateway`` (the facade), ``control`` (the protocol the control plane drives), ``control_api``
  and ``control_client`` (that protocol across processes), ``__main__`` (run it standalone).
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
