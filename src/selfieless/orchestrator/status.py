"""The control plane's status as a typed snapshot, and its JSON form.

`Orchestrator.snapshot()` builds a `StackStatus` (each service's part: `ServiceRuntime.status()`); each reader renders it its own way: the admin API
and `Orchestrator.status()` send `to_json()` (the wire form the CLI, the dashboard and the tests
read), the metrics collector turns it into gauges, and `selfieless up` draws its progress table.
`from_json()` reads the wire form back (the CLI gets it over HTTP). Nothing here imports the rest of
the orchestrator, so a reader pulls in only these types.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ReplicaStatus:
    id: str
    port: int
    state: str                   # replica.ReplicaState's value
    health: str                  # "unknown", "passing" or "failing"
    in_pool: bool
    in_flight: int               # the gateway's view
    requests: int                # responses completed since it joined the pool
    restarts: int                # replicas that came before it on its port
    adopted: bool
    pid: int | None
    detail: str                  # the driver's description (container id...)
    started_at: float | None     # wall clock, from the driver
    uptime: float                # seconds
    last_error: str | None
    host: str = "127.0.0.1"      # where it is reached (swarm: its node's address)
    db_connections: int | None = None  # held to a server database, as reported by its health answer


@dataclass(frozen=True)
class PendingStart:
    """A start scheduled on a port (crash-loop backoff, or in progress)."""

    port: int
    due_in: float                # seconds
    reason: str


@dataclass(frozen=True)
class WindowStatus:
    """The window autoscaling policy's current window."""

    seconds: float
    requests_per_replica: int
    count: int
    started: bool
    ends_in: float | None


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    kind: str                    # "service" or "dependency"
    desired: int
    actual: int                  # live replicas (starting or ready)
    ready: int
    min: int
    max: int
    host_ports: str
    routes: tuple[str, ...]
    policy: str
    api_requests: int
    window: WindowStatus | None
    last_decision: str | None
    replicas: tuple[ReplicaStatus, ...]
    pending: tuple[PendingStart, ...]
    crash_loops: dict[int, int]  # port -> failed starts in a row
    waiting_for: str | None      # the dependency a first start waits for
    no_port: str | None = None   # replicas it wants that find no free port in its range, and why
    not_listed: dict[str, int] | None = None  # summarised (`summarise`): replicas left out, by state


@dataclass(frozen=True)
class CertStatus:
    """A certificate the gateway serves, or an ACME host still without one (``expires_in`` None)."""

    hosts: tuple[str, ...]
    source: str                  # "file", "default" (the default file) or "acme"
    expires_in: float | None     # seconds (negative: expired)
    problem: str | None          # why a reload or an ACME request failed (the previous one stays)


@dataclass(frozen=True)
class GatewayStatus:
    """One gateway of a gateway on every node (swarm): where, and whether it is held and answers."""

    address: str
    node: str                    # the node's hostname
    attached: bool               # the control plane holds it (sent it the routes and pools)
    answering: bool              # its control API answered the last poll
    requests: int                # requests its current instance forwarded


@dataclass(frozen=True)
class StackStatus:
    stack: str
    driver: str
    converged: bool
    last_event_id: int
    services: dict[str, ServiceStatus]
    certs: tuple[CertStatus, ...] = ()
    gateways: tuple[GatewayStatus, ...] = ()   # empty with one gateway (not on every node)


def gateway_line(g: GatewayStatus) -> str:
    """One line of `selfieless status` about one node's gateway."""
    state = "serving, attached" if g.attached and g.answering else \
        "attached, not answering" if g.attached else "starting (not attached yet)"
    return f"{g.node or '-'} {g.address}: {state}, {g.requests} requests"


def certs_status(raw, now: float) -> tuple[CertStatus, ...]:
    """The gateway's certificate list (Gateway.tls_certs) as of ``now`` (epoch seconds)."""
    import datetime as dt

    out = []
    for c in raw or ():
        left = None
        if c.get("not_after"):
            left = dt.datetime.fromisoformat(c["not_after"]).timestamp() - now
        out.append(CertStatus(tuple(c.get("hosts") or ()), "acme" if c.get("acme") else
                              "default" if c.get("default") else "file", left, c.get("problem")))
    return tuple(out)


def cert_line(c: CertStatus) -> str:
    """One line of `selfieless status` about a certificate."""
    who = ", ".join(c.hosts) or "(no names)"
    if c.expires_in is None:
        state = "no certificate yet"
    elif c.expires_in <= 0:
        state = "EXPIRED"
    else:
        state = f"expires in {c.expires_in / 86400:.1f} days"
    return f"{who} ({c.source}): {state}" + (f"; {c.problem}" if c.problem else "")


def needs_a_look(r: ReplicaStatus) -> bool:
    """Anything but a replica that is ready, in rotation and passing its probes."""
    return not (r.state == "ready" and r.in_pool and r.health != "failing")


def listed(replicas: tuple[ReplicaStatus, ...], limit: int) -> tuple[ReplicaStatus, ...]:
    """At most `limit` of a service's replicas, in port order: every one that needs a look first
    (up to the limit), then the others on the lowest ports. A thousand rows help nobody; the
    ones in trouble do."""
    if len(replicas) <= limit:
        return replicas
    trouble = [r for r in replicas if needs_a_look(r)][:limit]
    fine = [r for r in replicas if not needs_a_look(r)][:limit - len(trouble)]
    return tuple(sorted(trouble + fine, key=lambda r: r.port))


def summarise(st: StackStatus, limit: int) -> StackStatus:
    """`st` with each service's replica list cut to `listed(..., limit)` and its pending starts to
    the first `limit`, and what was left out counted by state in `not_listed` (a pending start as
    "pending"; empty when nothing was)."""
    def cut(svc: ServiceStatus) -> ServiceStatus:
        keep = listed(svc.replicas, limit)
        kept = {r.id for r in keep}
        left = Counter(r.state for r in svc.replicas if r.id not in kept)
        if len(svc.pending) > limit:
            left["pending"] = len(svc.pending) - limit
        return replace(svc, replicas=keep, pending=svc.pending[:limit], not_listed=dict(sorted(left.items())))
    return replace(st, services={name: cut(svc) for name, svc in st.services.items()})


def to_json(st: StackStatus) -> dict[str, Any]:
    """The wire form (GET /api/status): keys and order as they have always been."""
    return {
        "stack": st.stack, "driver": st.driver, "converged": st.converged, "last_event_id": st.last_event_id,
        "services": {name: _service_json(svc) for name, svc in st.services.items()},
        "certs": [{"hosts": list(c.hosts), "source": c.source, "expires_in": c.expires_in, "problem": c.problem}
                  for c in st.certs],
        "gateways": [{"address": g.address, "node": g.node, "attached": g.attached, "answering": g.answering,
                      "requests": g.requests} for g in st.gateways],
    }


def _service_json(s: ServiceStatus) -> dict[str, Any]:
    w = s.window
    return {
        "desired": s.desired, "actual": s.actual, "ready": s.ready, "min": s.min, "max": s.max,
        "host_ports": s.host_ports, "routes": list(s.routes), "policy": s.policy,
        "api_requests": s.api_requests,
        "window": None if w is None else {"seconds": w.seconds, "requests_per_replica": w.requests_per_replica,
                                          "count": w.count, "started": w.started, "ends_in": w.ends_in},
        "last_decision": s.last_decision,
        "replicas": [_replica_json(r) for r in s.replicas],
        "pending": [{"port": p.port, "in": p.due_in, "reason": p.reason} for p in s.pending],
        "crash_loops": {str(port): n for port, n in s.crash_loops.items()},
        "kind": s.kind,
        "waiting_for": s.waiting_for,
        "no_port": s.no_port,
        **({} if s.not_listed is None else {"not_listed": s.not_listed}),
    }


def _replica_json(r: ReplicaStatus) -> dict[str, Any]:
    return {
        "id": r.id, "port": r.port, "state": r.state, "health": r.health, "in_pool": r.in_pool,
        "in_flight": r.in_flight, "requests": r.requests, "restarts": r.restarts, "adopted": r.adopted,
        "pid": r.pid, "detail": r.detail, "host": r.host, "started_at": r.started_at, "uptime": r.uptime,
        "last_error": r.last_error, "db_connections": r.db_connections,
    }


def from_json(d: dict[str, Any]) -> StackStatus:
    """Read the wire form back; keys a reader may leave out (an older server) get neutral values."""
    return StackStatus(
        stack=d.get("stack", ""), driver=d.get("driver", ""), converged=bool(d.get("converged")),
        last_event_id=d.get("last_event_id", 0),
        services={name: _service_from(name, s) for name, s in (d.get("services") or {}).items()},
        certs=tuple(CertStatus(tuple(c.get("hosts") or ()), c.get("source", "file"), c.get("expires_in"),
                               c.get("problem")) for c in d.get("certs") or ()),
        gateways=tuple(GatewayStatus(g.get("address", ""), g.get("node", ""), bool(g.get("attached")),
                                     bool(g.get("answering")), g.get("requests", 0)) for g in d.get("gateways") or ()),
    )


def _service_from(name: str, s: dict[str, Any]) -> ServiceStatus:
    w = s.get("window")
    return ServiceStatus(
        name=name, kind=s.get("kind", "service"), desired=s.get("desired", 0), actual=s.get("actual", 0),
        ready=s.get("ready", 0), min=s.get("min", 0), max=s.get("max", 0), host_ports=s.get("host_ports", ""),
        routes=tuple(s.get("routes") or ()), policy=s.get("policy", ""), api_requests=s.get("api_requests", 0),
        window=None if not w else WindowStatus(
            seconds=w.get("seconds", 0), requests_per_replica=w.get("requests_per_replica", 0),
            count=w.get("count", 0), started=bool(w.get("started")), ends_in=w.get("ends_in")),
        last_decision=s.get("last_decision"),
        replicas=tuple(_replica_from(r) for r in s.get("replicas") or ()),
        pending=tuple(PendingStart(p.get("port", 0), p.get("in", 0.0), p.get("reason", ""))
                      for p in s.get("pending") or ()),
        crash_loops={int(port): n for port, n in (s.get("crash_loops") or {}).items()},
        waiting_for=s.get("waiting_for"), no_port=s.get("no_port"), not_listed=s.get("not_listed"),
    )


def _replica_from(r: dict[str, Any]) -> ReplicaStatus:
    return ReplicaStatus(
        id=r["id"], port=r["port"], state=r.get("state", ""), health=r.get("health", "unknown"),
        in_pool=bool(r.get("in_pool")), in_flight=r.get("in_flight", 0), requests=r.get("requests", 0),
        restarts=r.get("restarts", 0), adopted=bool(r.get("adopted")), pid=r.get("pid"),
        detail=r.get("detail", ""), started_at=r.get("started_at"), uptime=r.get("uptime", 0.0),
        last_error=r.get("last_error"), host=r.get("host", "127.0.0.1"), db_connections=r.get("db_connections"),
    )
