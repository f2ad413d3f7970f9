"""Prometheus metrics, read at scrape time from the gateway's counters and the orchestrator's snapshot.

Nothing is recorded on the request path: the gateway already keeps plain integer counters
(selfieless.gateway.stats) and :class:`StackCollector` turns them into metric families only when
``/metrics`` is scraped. It uses its own :class:`CollectorRegistry`, so nothing global (process
metrics, other tests' collectors) leaks in or out.

Per-replica series are bounded: each service itemises at most PER_REPLICA_SERIES replicas (those
on its lowest ports, so the set is stable), and `selfieless_replicas{service,state}` counts them
all. A thousand replicas made 10,000 series, and every replacement (a new replica id) new ones.

Call :func:`render` on the event loop thread (the admin API's async route does): the counters are
mutated by that thread only, so a scrape sees one consistent snapshot.
"""

from __future__ import annotations

from typing import Any, Callable

from selfieless.orchestrator.status import StackStatus

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "selfieless"

# Replica states of the orchestrator (replica.py) and the gateway pool (pool.py), exported as a
# one-hot `selfieless_replica_state` so a dashboard can count replicas per state.
REPLICA_STATES = ("starting", "ready", "unhealthy", "exited", "stopping", "stopped")
PER_REPLICA_SERIES = 50  # replicas per service with series of their own


def itemised(ports: list[int], limit: int = PER_REPLICA_SERIES) -> frozenset[int]:
    """The ports whose replicas get series of their own: the `limit` lowest."""
    return frozenset(sorted(set(ports))[:limit])


def _attr(obj: Any, name: str) -> Any:
    """`gateway.pools` / `gateway.all_stats` are properties; accept methods too."""
    v = getattr(obj, name, None)
    return v() if callable(v) else v


class StackCollector(Collector):
    """One scrape = one pass over `gateway.all_stats`, `gateway.pools` and `orchestrator.snapshot()`."""

    def __init__(self, gateway: Any, orchestrator: Any | None = None,
                 status: Callable[[], StackStatus] | None = None) -> None:
        self.gateway = gateway
        self.orchestrator = orchestrator
        self._status = status or (orchestrator.snapshot if orchestrator is not None else None)

    def describe(self):
        # No describe: registering must not call collect() (it would read live objects early).
        return []

    def collect(self):
        yield from _traffic_families(_attr(self.gateway, "all_stats") or {})
        yield from _pool_families(_attr(self.gateway, "pools") or {})
        if self._status is None:
            return
        status = self._status()
        yield from _service_families(status)
        yield from _replica_families(status)
        yield from _stack_families(status)
        yield from _tls_families(status)


def _counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))


def _gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))


def _traffic_families(all_stats: dict[str, Any]) -> tuple:
    """The gateway's counters per service (selfieless.gateway.stats.ServiceStats)."""
    requests = _counter("requests", "Requests forwarded to a service (any path, any status)", "service")
    api = _counter("api_requests", "Counted API requests (the autoscaler's input; excludes _health, _crash, _count)",
                   "service")
    by_class = _counter("responses", "Responses by status class, gateway-made errors included", "service", "code")
    retries = _counter("retries", "Idempotent requests retried on another replica", "service")
    ejections = _counter("ejections", "Replicas taken out of rotation by the gateway itself", "service")
    withdrawals = _counter("withdrawals", "Stalled replicas withdrawn from rotation by the gateway until a probe passes",
                           "service")
    gw_errors = _counter("gateway_errors", "Errors the gateway answered itself (502/503/504/413...)", "service")
    latency = HistogramMetricFamily(f"{PREFIX}_request_duration_seconds",
                                    "Time from request head to end of response, as seen by the gateway",
                                    labels=["service"])
    for name, st in sorted(all_stats.items()):
        requests.add_metric([name], st.requests)
        api.add_metric([name], st.api_requests)
        for k in range(1, 6):
            by_class.add_metric([name, f"{k}xx"], st.status_classes[k])
        retries.add_metric([name], st.retries)
        ejections.add_metric([name], st.ejections)
        withdrawals.add_metric([name], getattr(st, "withdrawals", 0))
        gw_errors.add_metric([name], st.gateway_errors)
        h = st.latency
        buckets = [("+Inf" if le == float("inf") else repr(float(le)), n) for le, n in h.cumulative()]
        latency.add_metric([name], buckets, h.sum)
    return requests, api, by_class, retries, ejections, withdrawals, gw_errors, latency


def _pool_families(pools: dict[str, Any]) -> tuple:
    """Each replica in the gateway's pools: responses completed and requests in flight."""
    rep_requests = _counter("replica_requests", "Responses completed by one replica (since it joined the pool)",
                            "service", "replica", "port")
    in_flight = _gauge("replica_in_flight", "Requests in flight on one replica", "service", "replica", "port")
    for name, pool in sorted(pools.items()):
        views = pool.replicas
        shown = itemised([v.port for v in views])
        for v in views:
            if v.port not in shown:
                continue
            labels = [name, v.id, str(v.port)]
            rep_requests.add_metric(labels, v.served)
            in_flight.add_metric(labels, v.in_flight)
    return rep_requests, in_flight


def _service_families(status: StackStatus) -> tuple:
    """The orchestrator's counts per service, and its autoscaling window."""
    desired = _gauge("replicas_desired", "Desired replica count", "service")
    actual = _gauge("replicas_actual", "Live replicas (starting or ready)", "service")
    ready = _gauge("replicas_ready", "Ready replicas (in rotation)", "service")
    pending = _gauge("replicas_pending", "Starts scheduled or in progress (backoff included)", "service")
    window = _gauge("window_requests", "Counted requests in the current autoscaling window", "service")
    window_left = _gauge("window_ends_in_seconds", "Seconds until the current window ends", "service")
    for name, svc in sorted(status.services.items()):
        desired.add_metric([name], svc.desired)
        actual.add_metric([name], svc.actual)
        ready.add_metric([name], svc.ready)
        pending.add_metric([name], len(svc.pending))
        w = svc.window
        if w:
            window.add_metric([name], w.count)
            if w.ends_in is not None:
                window_left.add_metric([name], w.ends_in)
    return desired, actual, ready, pending, window, window_left


def _replica_families(status: StackStatus) -> tuple:
    """Each replica as the orchestrator sees it (the PER_REPLICA_SERIES on the lowest ports of each
    service): state, health, restarts, database connections; and every replica counted by state."""
    by_state = _gauge("replicas", f"Replicas per state (every one; the per-replica series cover the "
                      f"{PER_REPLICA_SERIES} on the lowest ports)", "service", "state")
    state = _gauge("replica_state", "1 for the state a replica is in", "service", "replica", "port", "state")
    healthy = _gauge("replica_healthy", "1 if the last health probe passed, 0 if it failed", "service", "replica", "port")
    restarts = _counter("replica_restarts", "Replicas that came before the current one on this port", "service", "port")
    crash_loops = _gauge("crash_loop_failures", "Consecutive failed starts on a port in backoff", "service", "port")
    db_connections = _gauge("replica_db_connections",
                            "Connections a replica holds to its server database (last health answer)",
                            "service", "replica", "port")
    for name, svc in sorted(status.services.items()):
        for s in REPLICA_STATES:
            by_state.add_metric([name, s], sum(1 for r in svc.replicas if r.state == s))
        shown = itemised([r.port for r in svc.replicas])
        for r in svc.replicas:
            if r.port not in shown:
                continue
            labels = [name, r.id, str(r.port)]
            for s in REPLICA_STATES:
                state.add_metric(labels + [s], 1.0 if r.state == s else 0.0)
            if r.health in ("passing", "failing"):
                healthy.add_metric(labels, 1.0 if r.health == "passing" else 0.0)
            restarts.add_metric([name, str(r.port)], r.restarts)
            if r.db_connections is not None:
                db_connections.add_metric(labels, r.db_connections)
        for port, n in svc.crash_loops.items():
            crash_loops.add_metric([name, str(port)], n)
    return by_state, state, healthy, restarts, crash_loops, db_connections


def _stack_families(status: StackStatus) -> tuple:
    converged = _gauge("converged", "1 when every service has exactly its desired ready replicas")
    converged.add_metric([], 1.0 if status.converged else 0.0)
    events = _counter("events", "Control-plane events emitted")
    events.add_metric([], status.last_event_id)
    return converged, events


def _tls_families(status: StackStatus) -> tuple:
    """Seconds left per host of every certificate served (none without HTTPS: no family at all)."""
    if not status.certs:
        return ()
    expiry = _gauge("tls_cert_expiry_seconds", "Seconds until a served certificate expires (negative: expired)",
                    "host")
    for c in status.certs:
        if c.expires_in is not None:
            for host in c.hosts:
                expiry.add_metric([host], c.expires_in)
    return (expiry,)


def make_registry(gateway: Any, orchestrator: Any | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StackCollector(gateway, orchestrator))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
