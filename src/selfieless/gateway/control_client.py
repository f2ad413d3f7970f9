""":class:`RemoteGateway`: the :class:`~.control.GatewayControl` protocol over the control API.

The control plane calls the protocol's plain methods from its event loop without waiting, as it
does in-process: each change is applied to a local mirror at once and queued; one sender task
posts the queue in order (``POST /control/ops``), so the gateway sees the changes in the order
they were made. ``drain_backend`` first waits for the queue to be sent.

One poller task long-polls ``/control/poll``: it hands the gateway's reports (ejections, 5xx
answers, held requests) to the ``on_*`` callbacks as they happen, and takes the counters and
pool views that changed, looked at every ``poll_wait`` seconds by the gateway (the autoscaler's
input is that fresh). Only what changed is sent (control_changes.py): with no traffic and no
events the poll is answered every IDLE_WAIT seconds, with nothing in it. When the gateway
answers with another instance id (it was restarted), the mirror is sent again whole.
Nothing is lost when the gateway is briefly unreachable: both tasks retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .pool import ReplicaView
from .stats import ServiceStats

log = logging.getLogger(__name__)

RETRY_DELAY = 0.2
# A call's deadline (long polls add their wait): a gateway on a cut-off node refuses nothing, so
# only a deadline ends a call to it, and the ops for the others wait behind none of its calls.
CALL_TIMEOUT = 10.0
NO_EVENTS = 2**62  # an event cursor beyond any event: a poll that reads counters only
IDLE_WAIT = 25.0  # the long poll's length when nothing happens (the gateway allows up to 30 s)


class GatewayUnreachable(ConnectionError):
    """No gateway answers on the control socket."""


def stats_from_snapshot(snap: Mapping[str, Any]) -> ServiceStats:
    """A :class:`ServiceStats` rebuilt from what the control API sends (its ``snapshot()``, with
    the latency histogram's raw bucket counts)."""
    st = ServiceStats(snap["service"])
    for name in ("api_requests", "first_request_at", "requests", "retries", "ejections", "gateway_errors"):
        setattr(st, name, snap[name])
    st.withdrawals = snap.get("withdrawals", 0)  # a gateway older than withdrawals sends none
    st.status_classes = [0] + [snap["status"][f"{k}xx"] for k in range(1, 6)]
    lat = snap["latency"]
    st.latency.counts = list(lat["counts"])
    st.latency.sum, st.latency.count = lat["sum"], lat["count"]
    return st


@dataclass(frozen=True)
class PoolSnapshot:
    """One service's backends as last polled (what admin metrics read as ``pool.replicas``)."""

    replicas: list[ReplicaView]


class RemoteGateway:
    """A gateway in another process, driven through its control socket (a unix socket path) or,
    on another machine, its control address (``http://HOST:PORT``)."""

    def __init__(self, socket_path: str, *, token: str | None = None, poll_wait: float = 0.5) -> None:
        self.socket_path = socket_path
        self.poll_wait = poll_wait
        self.on_eject = None
        self.on_withdraw = None
        self.on_stalled_together = None
        self.on_backend_error = None
        self.on_no_backend = None
        self.instance: str | None = None
        self.pid: int | None = None
        self.host: str | None = None
        self._port: int | None = None
        headers = {"authorization": f"Bearer {token}"} if token else {}
        tcp = socket_path.startswith("http://")
        self._http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=None if tcp else socket_path),
                                       base_url=socket_path if tcp else "http://gateway", headers=headers,
                                       timeout=CALL_TIMEOUT, trust_env=False)
        # The mirror: what this control plane has told the gateway (replayed to a new instance).
        self._routes: dict[str, str] | None = None
        self._limits: dict | None = None
        self._backends: dict[str, dict[str, tuple[str, int]]] = {}
        self._tls_pairs: list[dict] | None = None      # the certificates it serves (wire_pairs)
        self._challenges: dict[str, str] | None = None  # the ACME answers it serves
        self._ops: list[dict] = []
        self._queued = asyncio.Event()
        self._sent = asyncio.Event()
        self._sent.set()
        self._next = 0
        self._stats: dict[str, ServiceStats] = {}
        self._pools: dict[str, PoolSnapshot] = {}
        self._rev = 0  # the revision of the gateway's counters and pools held ...
        self._rev_of: str | None = None  # ... and the gateway instance it is of (None: nothing held)
        self._tasks: list[asyncio.Task] = []
        self.reachable = False  # whether the last poll was answered

    # Lifecycle ------------------------------------------------------------------------------
    async def attach(self) -> dict:
        """Read the gateway's identity and start the sender and poller; raises GatewayUnreachable."""
        info = await self.info()
        self.instance, self.pid, self.host, self._port = info["instance"], info["pid"], info["host"], info["port"]
        self._next = info["next"]  # reports from before we attached were for another control plane
        await self._refresh(0.0)  # everything, at once
        self.reachable = True
        self._tasks = [asyncio.create_task(self._send_loop(), name="gateway-control-send"),
                       asyncio.create_task(self._poll_loop(), name="gateway-control-poll")]
        return info

    async def info(self) -> dict:
        try:
            r = await self._http.get("/control/info")
        except httpx.TransportError as e:
            raise GatewayUnreachable(f"no gateway on {self.socket_path}: {e}") from None
        r.raise_for_status()
        return r.json()

    _certs: list = []
    # (kind, host, detail) for the gateway's "tls_cert" and "tls_problem" reports.
    on_tls_event = None

    @property
    def tls_certs(self) -> list[dict]:
        """The gateway's certificates as of the last poll (Gateway.tls_certs)."""
        return list(self._certs)

    async def reload_tls(self) -> list[str]:
        """Have the gateway load its certificate files again now; the problems (empty: all swapped in)."""
        r = await self._http.post("/control/tls/reload")
        if r.status_code == 409:
            return [r.json()["error"]]
        r.raise_for_status()
        return r.json()["problems"]

    async def close(self) -> None:
        """Detach (the gateway keeps serving): send what is queued, stop the tasks."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 5)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._http.aclose()

    async def stop_gateway(self) -> None:
        """Ask the gateway process to stop serving and exit."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 5)
        with contextlib.suppress(httpx.TransportError):
            await self._http.post("/control/stop")

    async def flush(self) -> None:
        """Return once every change made so far has reached the gateway."""
        while self._ops:
            self._sent.clear()
            await self._sent.wait()

    # GatewayControl -------------------------------------------------------------------------
    @property
    def port(self) -> int | None:
        return self._port

    @property
    def routes(self) -> dict[str, str] | None:
        """The route table this control plane last set (None before any)."""
        return None if self._routes is None else dict(self._routes)

    def set_routes(self, routes: Mapping[str, str]) -> None:
        self._routes = dict(routes)
        self._queue({"op": "routes", "routes": self._routes})

    def set_limits(self, balance: str, limits: Mapping[str, Any]) -> None:
        self._limits = {"balance": balance, "limits": dict(limits)}
        self._queue({"op": "limits", **self._limits})

    def add_backend(self, service: str, backend_id: str, host: str, port: int) -> None:
        self._backends.setdefault(service, {})[backend_id] = (host, int(port))
        self._queue({"op": "add", "service": service, "id": backend_id, "host": host, "port": int(port)})

    def remove_backend(self, service: str, backend_id: str, failed: bool = False) -> None:
        self._backends.get(service, {}).pop(backend_id, None)
        op = {"op": "remove", "service": service, "id": backend_id}
        if failed:
            op["failed"] = True
        self._queue(op)

    def set_certificates(self, pairs: list[dict]) -> None:
        """The certificates it serves (tls.wire_pairs), in place of the ones it had."""
        self._tls_pairs = list(pairs)
        self._queue({"op": "certs", "pairs": self._tls_pairs})

    def set_challenges(self, tokens: Mapping[str, str]) -> None:
        """The ACME HTTP-01 answers it serves (token -> key authorization), in place of the ones it had."""
        self._challenges = dict(tokens)
        self._queue({"op": "challenges", "tokens": self._challenges})

    async def drain_backend(self, service: str, backend_id: str, timeout: float) -> bool:
        await self.flush()
        try:
            r = await self._http.post("/control/drain", json={"service": service, "id": backend_id, "timeout": timeout},
                                      timeout=timeout + 10)
            r.raise_for_status()
            return bool(r.json()["drained"])
        except httpx.HTTPError as e:
            log.warning("draining %s/%s through the gateway's control API failed: %s", service, backend_id, e)
            return False

    def backends(self, service: str) -> list[ReplicaView]:
        pool = self._pools.get(service)
        return list(pool.replicas) if pool is not None else []

    def counters(self, service: str) -> ServiceStats | None:
        return self._stats.get(service)

    async def refresh(self) -> None:
        """Read the counters and backends now (no events: the poller hands those out, once)."""
        r = await self._http.get("/control/poll", params={"after": NO_EVENTS, "wait": 0})
        r.raise_for_status()
        self._take_snapshot(r.json())

    @property
    def all_stats(self) -> dict[str, ServiceStats]:
        return dict(self._stats)

    @property
    def pools(self) -> dict[str, PoolSnapshot]:
        return dict(self._pools)

    # Internals ------------------------------------------------------------------------------
    def _queue(self, op: dict) -> None:
        self._ops.append(op)
        self._queued.set()

    def _replay(self) -> None:
        """A new gateway instance knows nothing of us: send the whole mirror first."""
        ops: list[dict] = []
        if self._routes is not None:
            ops.append({"op": "routes", "routes": self._routes})
        if self._limits is not None:
            ops.append({"op": "limits", **self._limits})
        for service, members in self._backends.items():
            ops += [{"op": "add", "service": service, "id": i, "host": h, "port": p} for i, (h, p) in members.items()]
        if self._tls_pairs is not None:
            ops.append({"op": "certs", "pairs": self._tls_pairs})
        if self._challenges is not None:
            ops.append({"op": "challenges", "tokens": self._challenges})
        self._ops[:0] = ops
        self._queued.set()

    async def _send_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._ops:
                batch = list(self._ops)
                try:
                    r = await self._http.post("/control/ops", json={"ops": batch})
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # gateway restarting (the poller notices a new instance), ...
                    log.debug("sending control ops failed: %s", e)
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                if r.status_code >= 400:  # a bug on our side: retrying the same batch cannot help
                    log.error("gateway refused control ops (%s): %s", r.status_code, r.text)
                del self._ops[:len(batch)]
            self._sent.set()

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self._refresh(IDLE_WAIT)
                self.reachable = True
            except asyncio.CancelledError:
                raise
            except Exception as e:  # unreachable or a bad answer: keep trying, keep the last view
                self.reachable = False
                log.debug("gateway poll failed: %s", e)
                await asyncio.sleep(RETRY_DELAY)

    async def _refresh(self, wait: float) -> None:
        held = self._rev_of
        r = await self._http.get("/control/poll", params={
            "after": self._next, "wait": wait, "instance": held or "", "rev": self._rev, "every": self.poll_wait},
            timeout=wait + 10)
        r.raise_for_status()
        data = r.json()
        self._certs = data.get("certs") or []
        if held is not None and data["instance"] == held:
            self._take_changes(data)
        else:  # everything, from a gateway we held nothing of
            self._take_snapshot(data)
        self._rev, self._rev_of = data["rev"], data["instance"]
        if data["instance"] != self.instance:
            log.warning("the gateway was restarted (new instance); sending it the routes and pools again")
            self.instance, self._port = data["instance"], data["port"]
            self._replay()
        self._next = data["next"]
        for ev in data["events"]:
            self._dispatch(ev)

    def _take_snapshot(self, data: dict) -> None:
        """Every counter and pool (a plain read)."""
        self._stats = {name: stats_from_snapshot(s) for name, s in data["stats"].items()}
        self._pools = {name: PoolSnapshot([ReplicaView(**v) for v in views]) for name, views in data["pools"].items()}

    def _take_changes(self, data: dict) -> None:
        """The counters and pools that changed since the revision held."""
        if not data["stats"] and not data["pools"]:
            return
        stats = dict(self._stats)  # new dicts: a reader may be holding the old ones
        pools = dict(self._pools)
        stats.update((name, stats_from_snapshot(s)) for name, s in data["stats"].items())
        pools.update((name, PoolSnapshot([ReplicaView(**v) for v in views])) for name, views in data["pools"].items())
        self._stats, self._pools = stats, pools

    def _dispatch(self, ev: dict) -> None:
        kind = ev["kind"]
        try:
            if kind == "eject" and self.on_eject is not None:
                self.on_eject(ev["service"], ev["id"], ev["detail"])
            elif kind == "withdraw" and self.on_withdraw is not None:
                self.on_withdraw(ev["service"], ev["id"], ev["detail"])
            elif kind in ("tls_cert", "tls_problem") and self.on_tls_event is not None:
                self.on_tls_event(kind, ev["id"] or "", ev["detail"])
            elif kind == "stalled_together" and self.on_stalled_together is not None:
                self.on_stalled_together(ev["service"], ev["detail"])
            elif kind == "replica_error" and self.on_backend_error is not None:
                self.on_backend_error(ev["service"], ev["id"], ev["detail"])
            elif kind == "no_replica" and self.on_no_backend is not None:
                self.on_no_backend(ev["service"])
        except Exception:  # a control-plane bug must not stop the reports
            log.exception("gateway %s callback failed", kind)
