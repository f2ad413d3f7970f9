"""The gateway's control API: :class:`~.control.GatewayControl` for a control plane in another process.

Served with uvicorn on the gateway's own event loop, beside the proxy and never in its request
path (the public port shows nothing of it): on a unix socket (created owner-only, 0600, in the
stack's state directory), or on a TCP address when the control plane runs on another machine
(the swarm driver's gateway on every node). A token, when set, is required as ``Authorization:
Bearer``; on TCP it must be set unless the address is loopback (``listen_problem``), as for every
admin interface of the project.

    GET  /control/info                      instance id, pid, public host/port, routes, next event
    POST /control/ops    {"ops": [...]}     routes / add / remove / limits / certs / challenges,
                                            applied in order (certs: the PEM pairs a gateway on
                                            every node serves; challenges: ACME HTTP-01 answers)
    POST /control/drain  {service,id,timeout}  -> {"drained": bool}
    GET  /control/poll?after=N&wait=S       events after N (long poll, up to S s), counters, pools
    GET  /control/poll?after=N&wait=S&instance=I&rev=R&every=E
                                            the same, but only the counters and pools changed
                                            since revision R (control_changes.py); answers at the
                                            first event, or at the first look (every E s) that
                                            finds a change, or after S s
    POST /control/stop                      stop serving and exit the gateway process
    POST /control/tls/reload                load the certificate files again -> {problems, certs}

With no traffic nothing changes, and a control plane polling with a revision gets an answer only
every S seconds; with traffic, at most every E seconds.

Events are what the in-process gateway reports through callbacks: ``eject`` (passive ejection),
``replica_error`` (a 5xx answer) and ``no_replica`` (a request held, scale from zero). They are
numbered and kept in a bounded buffer, so a control plane that restarts reads on from where the
gateway is now; while none is attached the gateway keeps serving its last route table.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import logging
import os
import socket
import tempfile
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .control_changes import Published
from .gateway import Gateway
from .routing import RouteTable
from .tls import read_pair, write_pushed

log = logging.getLogger(__name__)

MAX_WAIT = 30.0  # longest long poll a client may ask for
MIN_EVERY = 0.05  # shortest gap between two looks at the counters a client may ask for


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoutesOp(_Op):
    op: Literal["routes"]
    routes: dict[str, str]


class AddOp(_Op):
    op: Literal["add"]
    service: str
    id: str
    host: str
    port: int = Field(ge=1, le=65535)


class RemoveOp(_Op):
    op: Literal["remove"]
    service: str
    id: str
    failed: bool = False  # its health probe failed: give up what waits on it (Gateway.remove_backend)


class LimitsOp(_Op):
    op: Literal["limits"]
    balance: Literal["round_robin", "least_outstanding"]
    limits: dict[str, Any]


class PemPair(_Op):
    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)
    hosts: list[str] = []
    default: bool = False


class CertsOp(_Op):
    op: Literal["certs"]
    pairs: list[PemPair]


class ChallengesOp(_Op):
    op: Literal["challenges"]
    tokens: dict[str, str]


Op = Annotated[Union[RoutesOp, AddOp, RemoveOp, LimitsOp, CertsOp, ChallengesOp], Field(discriminator="op")]


class OpsBody(_Op):
    ops: list[Op]


class DrainBody(_Op):
    service: str
    id: str
    timeout: float = Field(ge=0, le=3600)


class EventFeed:
    """Numbered reports for the control plane, newest ``maxlen`` kept; readers long-poll."""

    def __init__(self, maxlen: int = 4096) -> None:
        self.next = 1  # number the next event gets
        self.items: deque[dict] = deque(maxlen=maxlen)
        self._changed = asyncio.Event()

    def add(self, kind: str, service: str, backend: str | None = None, detail: Any = None) -> None:
        self.items.append({"seq": self.next, "kind": kind, "service": service, "id": backend, "detail": detail})
        self.next += 1
        self._changed.set()

    def after(self, seq: int) -> list[dict]:
        return [e for e in self.items if e["seq"] > seq]

    async def wait_after(self, seq: int, timeout: float) -> list[dict]:
        found = self.after(seq)
        if found or timeout <= 0:
            return found
        self._changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        return self.after(seq)


def _stats_json(st) -> dict:
    """A service's counters as JSON: the snapshot, with the latency buckets as raw counts (the
    cumulative form ends in an infinite bound, which JSON cannot carry)."""
    snap = st.snapshot()
    snap["latency"] = {"counts": list(st.latency.counts), "sum": st.latency.sum, "count": st.latency.count}
    return snap


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _BadRequest(Exception):
    pass


async def _body(request: Request, model):
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as e:
        raise _BadRequest("; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())) from None


def _check_pairs(gw: Gateway, pairs: list[PemPair]) -> None:
    """Every pair loads (in a folder thrown away after), before anything of the batch changes."""
    if gw.certs is None:
        raise ValueError("TLS is not on: the gateway was started without HTTPS settings")
    with tempfile.TemporaryDirectory(prefix="selfieless-check-") as folder:
        default, certs = write_pushed(Path(folder), [p.model_dump() for p in pairs])
        for pair in (default, *certs) if default is not None else certs:
            read_pair(pair)


def _change_routes(gw: Gateway) -> list[Route]:
    """What the control plane changes: ``/control/ops`` (routes, backends, limits), ``/control/drain``
    and ``/control/tls/reload``."""
    async def ops(request: Request) -> JSONResponse:
        parsed = await _body(request, OpsBody)
        for op in parsed.ops:  # a bad batch changes nothing: check what the models cannot
            try:
                if isinstance(op, RoutesOp):
                    RouteTable(op.routes)
                elif isinstance(op, LimitsOp):
                    dataclasses.replace(gw.config, balance=op.balance, **op.limits)
                elif isinstance(op, CertsOp):
                    _check_pairs(gw, op.pairs)
            except (TypeError, ValueError) as e:  # tls.CertError is a ValueError
                return _error(400, f"{op.op}: {e}")
        for op in parsed.ops:
            if isinstance(op, RoutesOp):
                gw.set_routes(op.routes)
            elif isinstance(op, AddOp):
                gw.add_backend(op.service, op.id, op.host, op.port)
            elif isinstance(op, RemoveOp):
                gw.remove_backend(op.service, op.id, op.failed)
            elif isinstance(op, CertsOp):
                gw.set_certificates([p.model_dump() for p in op.pairs])
            elif isinstance(op, ChallengesOp):
                gw.set_challenges(op.tokens)
            else:
                gw.set_limits(op.balance, op.limits)
        return JSONResponse({"applied": len(parsed.ops)})

    def tls_reload(_: Request) -> JSONResponse:
        if gw.certs is None:
            return _error(409, "TLS is not on: the stack file has no gateway.tls")
        problems = gw.reload_tls()
        return JSONResponse({"problems": problems, "certs": gw.tls_certs})

    async def drain(request: Request) -> JSONResponse:
        d = await _body(request, DrainBody)
        return JSONResponse({"drained": await gw.drain_backend(d.service, d.id, d.timeout)})

    return [Route("/control/ops", ops, methods=["POST"]), Route("/control/drain", drain, methods=["POST"]),
            Route("/control/tls/reload", tls_reload, methods=["POST"])]


def _poll_route(gw: Gateway, feed: EventFeed, instance: str) -> Route:
    """What the gateway reports: ``/control/poll``, events and counters (all, or what changed)."""
    published = Published()

    def current() -> tuple[dict, dict]:
        return ({name: _stats_json(st) for name, st in gw.all_stats.items()},
                {name: [v._asdict() for v in pool.replicas] for name, pool in gw.pools.items()})

    async def changed_or_event(after: int, rev: int, wait: float, every: float) -> list[dict]:
        # Counters are looked at every `every` s from now (not at once: a reader that polls
        # again right after an answer would otherwise get one per request under traffic).
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            left = deadline - asyncio.get_running_loop().time()
            events = await feed.wait_after(after, min(every, left))
            if events or left <= every:
                return events
            published.update(*current())
            if published.rev != rev:
                return events

    async def poll(request: Request) -> JSONResponse:
        q = request.query_params
        try:
            after = int(q.get("after", "0"))
            wait = min(MAX_WAIT, max(0.0, float(q.get("wait", "0"))))
            rev = int(q["rev"]) if "rev" in q else None
            every = min(MAX_WAIT, max(MIN_EVERY, float(q.get("every", "0.5"))))
        except ValueError:
            return _error(400, "after and rev must be integers, wait and every numbers of seconds")
        if rev is None:  # a plain read: every counter and pool
            events = await feed.wait_after(after, wait)
            stats, pools = current()
            return JSONResponse({"instance": instance, "port": gw.port, "events": events, "next": feed.next - 1,
                                 "stats": stats, "pools": pools, "certs": gw.tls_certs})
        holds = q.get("instance") == instance
        if not holds:
            rev = 0  # what the reader holds came from another gateway (or none): everything, now
        events = feed.after(after)
        if holds and not events:
            events = await changed_or_event(after, rev, wait, every)
        published.update(*current())
        stats, pools = published.since(rev)
        return JSONResponse({"instance": instance, "port": gw.port, "events": events, "next": feed.next - 1,
                             "rev": published.rev, "stats": stats, "pools": pools, "certs": gw.tls_certs})

    return Route("/control/poll", poll)


def _auth(token: str | None) -> Middleware:
    """``Authorization: Bearer <token>`` on every call, when a token is set."""
    async def auth(request: Request, call_next):
        if token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong token")
        return await call_next(request)

    return Middleware(BaseHTTPMiddleware, dispatch=auth)


def create_control_app(gw: Gateway, feed: EventFeed, *, instance: str, token: str | None = None,
                       on_stop: Callable[[], object] | None = None) -> Starlette:
    """The Starlette app of the control API over ``gw`` (whose callbacks must feed ``feed``)."""
    def info(_: Request) -> JSONResponse:
        return JSONResponse({"instance": instance, "pid": os.getpid(), "host": gw.config.host, "port": gw.port,
                             "routes": dict(gw.routes.routes), "tls_port": gw.tls_port, "certs": gw.tls_certs,
                             "next": feed.next - 1})

    def stop(_: Request) -> JSONResponse:
        if on_stop is not None:
            on_stop()
        return JSONResponse({"stopping": True}, status_code=202)

    async def bad_request(_: Request, exc: Exception) -> JSONResponse:
        return _error(400, str(exc))

    return Starlette(
        routes=[Route("/control/info", info), *_change_routes(gw), _poll_route(gw, feed, instance),
                Route("/control/stop", stop, methods=["POST"])],
        middleware=[_auth(token)],
        exception_handlers={_BadRequest: bad_request},
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the gateway process owns SIGINT/SIGTERM
        yield

    def install_signal_handlers(self) -> None:
        pass


def bind_unix(path: str) -> socket.socket:
    """A listening unix socket at ``path``, owner-only; a stale socket file there is replaced."""
    if len(os.fsencode(path)) >= 100:
        raise OSError(f"control socket path too long for a unix socket ({len(path)} bytes): {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def parse_listen(listen: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); anything else is a unix socket
    path (None). Raises ValueError for a TCP address with a bad port."""
    if listen.startswith(("/", ".")) or ":" not in listen:
        return None
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"control API address {listen!r}: want HOST:PORT with a port 1-65535, or a socket path")
    return host, int(port)


def listen_problem(listen: str, token: str | None) -> str | None:
    """Why the control API may not listen at ``listen`` with ``token``, or None: beyond loopback
    it changes what every request meets, so anyone who can reach it must prove who they are."""
    try:
        tcp = parse_listen(listen)
    except ValueError as e:
        return str(e)
    if tcp is None or token:
        return None
    host = tcp[0]
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if loopback:
        return None
    return (f"the control API on {listen} would be reachable from other machines: set a token "
            f"(SELFIELESS_GATEWAY_TOKEN) or listen on loopback")


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


class ControlServer:
    """Serves the control API of ``gw`` on a unix socket or a TCP address (``listen``: a path or
    ``HOST:PORT``); wires the gateway's callbacks to events."""

    def __init__(self, gw: Gateway, path: str, *, token: str | None = None,
                 on_stop: Callable[[], object] | None = None) -> None:
        self.gw, self.path, self.token = gw, path, token
        self.instance = uuid.uuid4().hex
        self.feed = EventFeed()
        gw.on_eject = lambda service, rid, reason: self.feed.add("eject", service, rid, reason)
        gw.on_withdraw = lambda service, rid, reason: self.feed.add("withdraw", service, rid, reason)
        gw.on_stalled_together = lambda service, reason: self.feed.add("stalled_together", service, None, reason)
        gw.on_backend_error = lambda service, rid, status: self.feed.add("replica_error", service, rid, status)
        gw.on_no_backend = lambda service: self.feed.add("no_replica", service)
        gw.on_tls_event = lambda kind, host, detail: self.feed.add(kind, "gateway", host or None, detail)
        self.app = create_control_app(gw, self.feed, instance=self.instance, token=token, on_stop=on_stop)
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        problem = listen_problem(self.path, self.token)
        if problem:
            raise ValueError(problem)
        tcp = parse_listen(self.path)
        sock = bind_unix(self.path) if tcp is None else bind_tcp(*tcp)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, server_header=False)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="gateway-control-api")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("gateway control API stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True  # long polls would hold the shutdown up
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 5)
        if parse_listen(self.path) is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._server = None
