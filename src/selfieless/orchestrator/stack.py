"""The stack file: one YAML document describing every service the orchestrator runs.

Validated with pydantic v2. Unknown keys are rejected (a typo in a stack file must never be silently
ignored), and every error names the field path and says what is wrong, for example
``services.acts.replicas.max: must be >= min (1)``.

Defaults reproduce the original course project. Beside the replicated ``services:`` a stack may
list ``dependencies:``: backing services such as the database container, run as exactly one
replica with no routes, a TCP health check, started before the services that `depends_on` them
and stopped after them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import string
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from selfieless.gateway.config import GatewayConfig as _GW

__all__ = [
    "Stack",
    "ServiceSpec",
    "DependencySpec",
    "TcpHealthSpec",
    "GatewaySpec",
    "GatewayLimits",
    "HealthSpec",
    "ReplicasSpec",
    "PortRange",
    "WindowPolicy",
    "RatePolicy",
    "NoPolicy",
    "UpdateSpec",
    "PlacementSpec",
    "SwarmSpec",
    "StackError",
    "load_stack",
    "parse_stack",
    "render",
    "BUNDLED_STACK",
    "BUNDLED_DOCKER_STACK",
    "BUNDLED_SWARM_STACK",
    "BUILTIN_PLACEHOLDERS",
]

BUNDLED_STACK = Path(__file__).resolve().parent.parent / "stacks" / "selfieless.yaml"
# The same app as the course deploys it with Docker: MariaDB container, every service in a container.
BUNDLED_DOCKER_STACK = BUNDLED_STACK.with_name("selfieless-docker.yaml")
# The course topology on a Docker Swarm cluster: users and acts on different nodes.
BUNDLED_SWARM_STACK = BUNDLED_STACK.with_name("selfieless-swarm.yaml")

# Placeholders the orchestrator fills in itself when it starts a replica; anything else used in a
# command or environment value must be declared under `variables`.
BUILTIN_PLACEHOLDERS = frozenset({"port", "service", "stack", "host", "gateway_url", "gateway_port", "state_dir"})


class StackError(ValueError):
    """A stack file that cannot be used; the message lists every problem, one per line."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"invalid stack file {source}" if source else "invalid stack"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _duration(value: Any) -> Any:
    """Accept 1, 0.5, "500ms", "2s", "2m": stack files read better with units."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use a number of seconds or e.g. '500ms', '2s', '2m')")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
PositiveSeconds = Annotated[float, BeforeValidator(_duration), Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PortRange(_Model):
    """An inclusive range of host ports; written `8000-8009`, `8000`, or `{first: 8000, last: 8009}`."""

    first: int = Field(ge=1, le=65535)
    last: int = Field(ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"first": value, "last": value}
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", value)
            if not m:
                raise ValueError(f"not a port range: {value!r} (write e.g. '8000-8009')")
            first = int(m.group(1))
            return {"first": first, "last": int(m.group(2) or first)}
        return value

    @model_validator(mode="after")
    def _order(self) -> "PortRange":
        if self.last < self.first:
            raise ValueError(f"last: must be >= first ({self.first})")
        return self

    @property
    def ports(self) -> range:
        return range(self.first, self.last + 1)

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}" if self.last != self.first else str(self.first)


class HealthSpec(_Model):
    path: str = "/api/v1/_health"
    interval: PositiveSeconds = 1.0
    timeout: PositiveSeconds = 1.0
    failure_threshold: int = Field(default=1, ge=1)
    # How long a new replica may take to answer its first probe before it counts as failed.
    start_grace: PositiveSeconds = 30.0
    # Warm-up: after its first passing probe, a new replica that joins while others serve first
    # gets this many GETs of `warmup_path` (default: `path`), a few at a time, so its first real
    # requests do not pay for its cold start (database connections, query compilation, caches).
    warmup: int = Field(default=0, ge=0, le=1000)
    warmup_path: str | None = None

    @field_validator("path", "warmup_path")
    @classmethod
    def _slash(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class ReplicasSpec(_Model):
    initial: int | None = Field(default=None, ge=0)
    min: int = Field(default=1, ge=0)
    max: int = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "ReplicasSpec":
        if self.max < self.min:
            raise ValueError(f"max: must be >= min ({self.min})")
        if self.initial is not None and not (self.min <= self.initial <= self.max):
            raise ValueError(f"initial: must be between min ({self.min}) and max ({self.max})")
        return self

    @property
    def start_count(self) -> int:
        return self.min if self.initial is None else self.initial


class WindowPolicy(_Model):
    """The course policy: back-to-back windows from the first request; N -> floor(N/rpr)+1."""

    policy: Literal["window"] = "window"
    window_seconds: PositiveSeconds = 120.0
    requests_per_replica: int = Field(default=20, ge=1)


class RatePolicy(_Model):
    """Target requests/second per replica over a short sliding window; slow, stabilised scale-in."""

    policy: Literal["rate"]
    target_rps_per_replica: float = Field(gt=0)
    window_seconds: PositiveSeconds = 2.0
    scale_in_delay: Seconds = 30.0
    # With replicas.min 0: stop the last replica only after this long without a request (None: when
    # the rate policy alone scales in, after scale_in_delay).
    scale_to_zero_after: PositiveSeconds | None = None


class NoPolicy(_Model):
    policy: Literal["none"]


AutoscaleSpec = Annotated[Union[WindowPolicy, RatePolicy, NoPolicy], Field(discriminator="policy")]


class UpdateSpec(_Model):
    """How a rolling replacement proceeds (image, command or environment changed).

    start-first: a new replica starts on a spare port and joins the rotation after its first
    passing probe, then one old replica is drained and stopped. stop-first: the old replica is
    drained and stopped first and the new one starts on its port (for services that cannot run
    two versions side by side). `monitor`: how long a new replica must stay healthy after joining
    before it counts as good; a failure before then triggers `failure_action`."""

    parallelism: int = Field(default=1, ge=1)
    order: Literal["start-first", "stop-first"] = "start-first"
    monitor: Seconds = 5.0
    failure_action: Literal["rollback", "pause"] = "rollback"


_CONSTRAINT = re.compile(r"^\s*[A-Za-z][A-Za-z0-9_.-]*\s*(==|!=)\s*\S.*$")


def _spread(value: Any) -> Any:
    # `{spread: node.labels.zone}` and `spread=node.labels.zone` (Swarm's own CLI form) both mean
    # "spread the tasks evenly over the values of this label".
    if isinstance(value, dict) and set(value) == {"spread"}:
        return value["spread"]
    if isinstance(value, str) and value.startswith("spread="):
        return value[len("spread="):]
    return value


class PlacementSpec(_Model):
    """Swarm driver: where the tasks of a service may run (passed to Swarm as they are).

    `constraints` are Swarm's expressions, e.g. `node.labels.selfieless.acts==true` or
    `node.role==manager`; `preferences` spread tasks over a label's values (`spread:
    node.labels.zone`). Other drivers run everything on one host and ignore placement."""

    constraints: list[str] = Field(default_factory=list)
    preferences: list[Annotated[str, BeforeValidator(_spread)]] = Field(default_factory=list)

    @field_validator("constraints")
    @classmethod
    def _expressions(cls, v: list[str]) -> list[str]:
        for c in v:
            if not _CONSTRAINT.match(c):
                raise ValueError(f"constraint {c!r}: write `ATTRIBUTE==VALUE` or `ATTRIBUTE!=VALUE`, "
                                 f"e.g. node.labels.selfieless.acts==true")
        return v

    @field_validator("preferences")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        for label in v:
            if not re.fullmatch(r"node\.(labels|platform)\.[A-Za-z0-9_.-]+|engine\.labels\.[A-Za-z0-9_.-]+", label):
                raise ValueError(f"preference {label!r}: write `spread: node.labels.NAME`")
        return v


class LeaseSpec(_Model):
    """The control-plane lease of a swarm stack (orchestrator/lease.py): `seconds` a renewal holds,
    `margin` the holder stops before its deadline and a successor waits after it."""

    seconds: float = Field(default=10.0, gt=0, le=300)
    margin: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _renewals_fit(self) -> "LeaseSpec":
        from .lease import Terms

        Terms(self.seconds, self.margin)   # its ValueError says what is wrong
        return self


class FloatingIpSpec(_Model):
    """Swarm driver: one address for clients, held by one node whose gateway answers and moved to
    another within seconds when that node or its gateway fails (keepalived on every node, as the
    global service `<stack>-vip`; selfieless/floating_ip/). `address` is the floating IP with the
    prefix of the nodes' network (`10.211.0.100/24`), `router_id` VRRP's virtual router id (1..255,
    unique per floating IP on that network), `advert` the seconds between VRRP advertisements."""

    address: str
    router_id: int = Field(default=51, ge=1, le=255)
    advert: float = Field(default=0.5, ge=0.01, le=40.95)   # VRRPv3 counts it in centiseconds, 12 bits

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        import ipaddress

        if "/" not in v:
            raise ValueError(f"{v!r}: give the prefix of the nodes' network too, e.g. {v}/24")
        try:
            iface = ipaddress.IPv4Interface(v)
        except ValueError as e:
            raise ValueError(f"{v!r} is not an IPv4 address with a prefix ({e})") from None
        net = iface.network
        if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
            raise ValueError(f"{v!r}: the network's {'own' if iface.ip == net.network_address else 'broadcast'} "
                             f"address, not one a host can hold")
        return iface.with_prefixlen


class SwarmSpec(_Model):
    """Swarm driver: which swarm manager to talk to. `manager` is a Docker engine address
    (`unix:///...sock`, `tcp://HOST:2376`, `ssh://user@host`); without it, DOCKER_HOST.
    `helper_image` runs the one-shot jobs on a node (end a silent task, remove volumes): python3
    with the Docker SDK; without it, the image of one of the stack's services (this project's
    images have both). `container_health_check`: also give each service's tasks Swarm's own
    container health check (1 s); off by default, because Swarm then reports a new task, and its
    port, only after that check passes (see drivers/swarm_spec.py).
    `gateway`: `every_node` (the default) runs the gateway as a global Swarm service, one per
    node, its public port and control port (`gateway_control_port`, default the public port + 1)
    published on every node; `local` runs the one gateway process beside `selfieless up`, as the
    other drivers do. `gateway_image`: the image the gateways run (python3 with selfieless);
    without it, `helper_image`, else the image of one of the stack's services.
    `control_placement`: where the control-plane service of `up --detach` may run, within the
    managers (e.g. `node.labels.db!=true`: not on the node whose loss takes the database too)."""

    manager: str | None = Field(default=None, pattern=r"^(unix|tcp|ssh|http|https)://\S+$")
    helper_image: str | None = Field(default=None, min_length=1)
    container_health_check: bool = False
    gateway: Literal["every_node", "local"] = "every_node"
    gateway_control_port: int | None = Field(default=None, ge=1, le=65535)
    gateway_image: str | None = Field(default=None, min_length=1)
    # The control-plane lease (orchestrator/lease.py): how long a renewal holds, and the margin
    # the holder stops before its deadline and a successor waits after it.
    lease: LeaseSpec = Field(default_factory=LeaseSpec)
    control_placement: PlacementSpec = Field(default_factory=PlacementSpec)
    floating_ip: FloatingIpSpec | None = None

    @model_validator(mode="after")
    def _floating_ip_needs_every_node(self) -> "SwarmSpec":
        if self.floating_ip is not None and self.gateway != "every_node":
            raise ValueError("floating_ip follows the gateway on every node: it needs `gateway: every_node`")
        return self


def _default_policy(value: Any) -> Any:
    # `autoscale: {}` or a mapping without `policy` means the course window policy.
    if isinstance(value, dict) and "policy" not in value:
        return {"policy": "window", **value}
    if isinstance(value, str):
        return {"policy": value}
    return value


class ServiceSpec(_Model):
    image: str | None = None
    command: list[str] | None = None
    container_port: int = Field(default=80, ge=1, le=65535)
    # Required by the process and docker drivers; Swarm picks each task's host port itself.
    host_ports: PortRange | None = None
    routes: list[str] = Field(default_factory=list)
    # Host names this service answers for (then only for those, its routes matched after the
    # host; no routes: every path of those hosts). None: any host, as before.
    hosts: list[str] = Field(default_factory=list)
    # With gateway.tls: plain-HTTP requests for this service are redirected to https:// unless
    # this is false (for clients that cannot do TLS).
    redirect_https: bool = True
    health: HealthSpec = Field(default_factory=HealthSpec)
    replicas: ReplicasSpec = Field(default_factory=ReplicasSpec)
    autoscale: Annotated[AutoscaleSpec, BeforeValidator(_default_policy)] = Field(
        default_factory=lambda: NoPolicy(policy="none")
    )
    environment: dict[str, str] = Field(default_factory=dict)
    # Service-level placeholder values, overriding the stack-level `variables`.
    variables: dict[str, str] = Field(default_factory=dict)
    drain_timeout: Seconds = 10.0
    update: UpdateSpec = Field(default_factory=UpdateSpec)
    # Process driver: fork replicas from a process that imported `python -m MODULE` once
    # (drivers/preload.py). Only for modules that do no work at import time.
    preload: bool = False
    # Names of `dependencies` that must be ready before the first replica starts.
    depends_on: list[str] = Field(default_factory=list)
    # Docker driver: extra /etc/hosts entries, e.g. {host.docker.internal: host-gateway}.
    extra_hosts: dict[str, str] = Field(default_factory=dict)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)

    @field_validator("routes")
    @classmethod
    def _routes(cls, v: list[str]) -> list[str]:
        for r in v:
            if not r.startswith("/"):
                raise ValueError(f"route {r!r} must start with '/'")
        return v

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        from selfieless.gateway.routing import valid_host

        out = []
        for h in v:
            name = h.lower().rstrip(".")
            if not valid_host(name):
                raise ValueError(f"{h!r} is not a host name (letters, digits, '-' and '.', or *.example.org)")
            out.append(name)
        return out

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must not be empty")
        return v

    @field_validator("environment", mode="before")
    @classmethod
    def _env_strings(cls, v: Any) -> Any:
        # YAML turns `DEBUG: 1` into an int; environment values are always strings.
        if isinstance(v, dict):
            return {k: (str(x) if isinstance(x, (int, float, bool)) else x) for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _fits(self) -> "ServiceSpec":
        if self.image is None and self.command is None:
            raise ValueError("image: a service needs an `image` (docker driver) or a `command` (process driver)")
        if self.replicas.min == 0 and not isinstance(self.autoscale, (RatePolicy, NoPolicy)):
            # The course window policy counts requests from the first one: it keeps one replica.
            raise ValueError("replicas.min: 0 needs the `rate` autoscale policy (the window policy keeps one replica)")
        if isinstance(self.autoscale, RatePolicy) and self.autoscale.scale_to_zero_after is not None \
                and self.replicas.min != 0:
            raise ValueError("autoscale.scale_to_zero_after: needs replicas.min: 0")
        if self.host_ports is not None and self.replicas.max > len(self.host_ports):
            raise ValueError(
                f"replicas.max: must be <= the number of host_ports ({len(self.host_ports)} in {self.host_ports})"
            )
        return self


class TcpHealthSpec(_Model):
    """A dependency is healthy when a TCP connection to its host port opens and is not closed at
    once (a port proxy in front of a server that is not listening yet accepts, then closes)."""

    interval: PositiveSeconds = 1.0
    timeout: PositiveSeconds = 1.0
    failure_threshold: int = Field(default=3, ge=1)
    start_grace: PositiveSeconds = 120.0


class DependencySpec(_Model):
    """A backing service (the database): one replica, no routes, no autoscaling.

    The docker driver names its container `<stack>-<name>` (the name other containers reach it
    by on the stack's `network`) and publishes `container_port` on 127.0.0.1:`host_port` only,
    for the health check. `volumes` (named volume -> path in the container) survive `down` unless
    it is asked to remove them."""

    image: str | None = None
    command: list[str] | None = None
    container_port: int = Field(ge=1, le=65535)
    # Required by the process and docker drivers; Swarm picks the task's host port itself.
    host_port: int | None = Field(default=None, ge=1, le=65535)
    environment: dict[str, str] = Field(default_factory=dict)
    variables: dict[str, str] = Field(default_factory=dict)
    volumes: dict[str, str] = Field(default_factory=dict)
    health: TcpHealthSpec = Field(default_factory=TcpHealthSpec)
    stop_timeout: Seconds = 10.0
    # Swarm driver: pin it to the node holding its volume, e.g. node.labels.selfieless.acts==true.
    placement: PlacementSpec = Field(default_factory=PlacementSpec)

    _env_strings = field_validator("environment", mode="before")(ServiceSpec._env_strings.__func__)

    @model_validator(mode="after")
    def _runnable(self) -> "DependencySpec":
        if self.image is None and self.command is None:
            raise ValueError("image: a dependency needs an `image` (docker driver) or a `command` (process driver)")
        return self

    def as_service(self) -> ServiceSpec:
        """The same thing as a fixed one-replica service without routes (how the runtime runs it)."""
        return ServiceSpec(
            image=self.image, command=self.command, container_port=self.container_port,
            host_ports=None if self.host_port is None else PortRange(first=self.host_port, last=self.host_port),
            routes=[],
            health=HealthSpec(path="/", interval=self.health.interval, timeout=self.health.timeout,
                              failure_threshold=self.health.failure_threshold,
                              start_grace=self.health.start_grace),
            replicas=ReplicasSpec(initial=1, min=1, max=1), autoscale=NoPolicy(policy="none"),
            environment=self.environment, variables=self.variables, drain_timeout=self.stop_timeout,
            placement=self.placement,
        )


class GatewayLimits(_Model):
    """Names match selfieless.gateway.GatewayConfig fields, so they pass straight through; so do
    the defaults, which are the gateway's own (said once, in gateway/config.py)."""

    max_body_size: int = Field(default=_GW.max_body_size, gt=0)
    max_header_size: int = Field(default=_GW.max_header_size, gt=0)
    # How long a request waits for a ready replica before the gateway answers 503.
    no_replica_wait: Seconds = _GW.no_replica_wait
    header_timeout: PositiveSeconds = _GW.header_timeout
    body_timeout: PositiveSeconds = _GW.body_timeout
    connect_timeout: PositiveSeconds = _GW.connect_timeout
    response_timeout: PositiveSeconds = _GW.response_timeout
    keepalive_timeout: PositiveSeconds = _GW.keepalive_timeout
    tunnel_idle_timeout: PositiveSeconds = _GW.tunnel_idle_timeout
    # A replica holding a read this long with no response byte, silent while a sibling answers,
    # leaves the rotation until its probe passes (gateway/stall.py); 0 turns it off.
    stall_timeout: Seconds = _GW.stall_timeout


class CertSpec(_Model):
    """A certificate (chain) and its key, PEM files; ``hosts`` default to the certificate's names."""

    cert: str
    key: str
    hosts: list[str] = Field(default_factory=list)


class AcmeSpec(_Model):
    """Certificates from an ACME CA (HTTP-01) for every host no certificate file covers (gateway/acme.py)."""

    directory: str = Field(pattern=r"^https://")  # e.g. https://acme-v02.api.letsencrypt.org/directory
    email: str | None = None
    ca_bundle: str | None = None  # trust this CA file for the directory's own TLS (a test CA's)

    @field_validator("ca_bundle")
    @classmethod
    def _bundle(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"cannot read {v}")
        return v


class HstsSpec(_Model):
    max_age: Seconds = 31536000.0  # Strict-Transport-Security on every HTTPS response
    include_subdomains: bool = False


class TlsSpec(_Model):
    """HTTPS at the gateway (gateway/tls.py): a listener beside the HTTP one."""

    port: int = Field(default=443, ge=0, le=65535)
    cert: str | None = None  # the default pair: unknown or absent SNI gets it (unless strict_sni)
    key: str | None = None
    certs: list[CertSpec] = Field(default_factory=list)  # one pair per host (or hosts)
    strict_sni: bool = False  # refuse handshakes for hosts without a certificate
    reload_interval: Seconds = 2.0  # how often the files are checked for a change (0: only on `tls reload`)
    acme: AcmeSpec | None = None
    hsts: HstsSpec | None = None

    @model_validator(mode="after")
    def _pairs(self) -> "TlsSpec":
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key: give both (the default certificate and its key), or neither")
        if self.cert is None and not self.certs and self.acme is None:
            raise ValueError("cert/key, certs or acme: HTTPS needs certificates from files or from an ACME CA")
        return self

    def settings(self, plain_services: frozenset[str]):
        """The gateway's TlsSettings."""
        from selfieless.gateway.tls import CertPair, TlsSettings

        hsts = None
        if self.hsts is not None:
            hsts = f"max-age={int(self.hsts.max_age)}" + ("; includeSubDomains" if self.hsts.include_subdomains else "")
        return TlsSettings(port=self.port, default=CertPair(self.cert, self.key) if self.cert else None,
                           certs=tuple(CertPair(c.cert, c.key, tuple(h.lower() for h in c.hosts)) for c in self.certs),
                           strict_sni=self.strict_sni, plain_services=plain_services,
                           reload_interval=self.reload_interval, hsts=hsts,
                           acme=self.acme.model_dump() if self.acme is not None else None)


class GatewaySpec(_Model):
    host: str = "0.0.0.0"
    port: int = Field(default=80, ge=0, le=65535)
    balance: Literal["round_robin", "least_outstanding"] = _GW.balance
    limits: GatewayLimits = Field(default_factory=GatewayLimits)
    tls: TlsSpec | None = None


class Stack(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    driver: Literal["process", "docker", "auto", "swarm"] = "auto"
    # Swarm driver: the manager to talk to (else DOCKER_HOST).
    swarm: SwarmSpec = Field(default_factory=SwarmSpec)
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    variables: dict[str, str] = Field(default_factory=dict)
    # Docker driver: a user-defined network every container of the stack joins (created on
    # first start, removed when the stack stops); containers reach each other by name on it.
    # Swarm driver: an attachable overlay network (default: the stack's name), spanning the nodes.
    network: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    dependencies: dict[str, DependencySpec] = Field(default_factory=dict)
    services: dict[str, ServiceSpec]

    @field_validator("services")
    @classmethod
    def _names(cls, v: dict[str, ServiceSpec]) -> dict[str, ServiceSpec]:
        if not v:
            raise ValueError("must define at least one service")
        for name in v:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                raise ValueError(f"service name {name!r}: use lowercase letters, digits, '-' and '_'")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Stack":
        problems: list[str] = []
        owner: dict[int, str] = {}
        route_owner: dict[str, str] = {}
        for name, dep in self.dependencies.items():
            where = f"dependencies.{name}"
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                problems.append(f"{where}: use lowercase letters, digits, '-' and '_' in the name")
            if name in self.services:
                problems.append(f"{where}: also the name of a service")
            if dep.host_port is None:
                if self.driver != "swarm":
                    problems.append(f"{where}.host_port: required with driver {self.driver!r} "
                                    f"(only the swarm driver picks host ports itself)")
                problems += self._launch_problems(where, dep)
                continue
            if dep.host_port in owner:
                problems.append(f"{where}.host_port: port {dep.host_port} is also used by {owner[dep.host_port]!r}")
            owner[dep.host_port] = name
            if self.gateway.port and dep.host_port == self.gateway.port:
                problems.append(f"{where}.host_port: the gateway's port")
            problems += self._launch_problems(where, dep)
        for name, svc in self.services.items():
            for d in svc.depends_on:
                if d not in self.dependencies:
                    problems.append(f"services.{name}.depends_on: no dependency {d!r} "
                                    f"(known: {', '.join(sorted(self.dependencies)) or 'none'})")
            if svc.host_ports is None and self.driver != "swarm":
                problems.append(f"services.{name}.host_ports: required with driver {self.driver!r} "
                                f"(only the swarm driver picks host ports itself)")
            for p in (svc.host_ports.ports if svc.host_ports is not None else ()):
                if p in owner:
                    problems.append(f"services.{name}.host_ports: port {p} is also used by service {owner[p]!r}")
                    break
                owner[p] = name
            if self.gateway.port and svc.host_ports is not None and self.gateway.port in svc.host_ports.ports:
                problems.append(f"services.{name}.host_ports: overlaps the gateway port {self.gateway.port}")
            for r in _service_routes(svc):
                if r in route_owner:
                    problems.append(f"services.{name}.routes: {r!r} is also routed to {route_owner[r]!r}")
                route_owner[r] = name
            problems += self._launch_problems(f"services.{name}", svc)
        problems += self._tls_problems(owner)
        if self.swarm.floating_ip is not None and self.driver != "swarm":
            problems.append(f"swarm.floating_ip: only the swarm driver runs a gateway on every node "
                            f"for it to follow (driver is {self.driver!r})")
        if problems:
            # Raised as one error; _format() splits the lines back into separate problems.
            raise ValueError("\n".join(problems))
        return self

    def _tls_problems(self, owner: dict[int, str]) -> list[str]:
        """The HTTPS port clashing with another, and certificate files that cannot be served
        (missing, unreadable, not PEM, a key that does not match, expired)."""
        tls = self.gateway.tls
        if tls is None:
            return []
        from selfieless.gateway.tls import settings_problems

        problems = []
        if tls.port and tls.port == self.gateway.port:
            problems.append(f"gateway.tls.port: {tls.port} is also the gateway's HTTP port")
        if tls.port in owner:
            problems.append(f"gateway.tls.port: {tls.port} is also used by {owner[tls.port]!r}")
        return problems + settings_problems(tls.settings(frozenset()))

    def _launch_problems(self, where: str, spec: "ServiceSpec | DependencySpec") -> list[str]:
        """What the chosen driver needs to start `spec`, and placeholders nobody defines."""
        problems = []
        if self.driver == "process" and spec.command is None:
            problems.append(f"{where}.command: required with driver 'process'")
        if self.driver in ("docker", "swarm") and spec.image is None:
            problems.append(f"{where}.image: required with driver {self.driver!r}")
        known = BUILTIN_PLACEHOLDERS | set(self.variables) | set(spec.variables)
        for i, arg in enumerate(spec.command or []):
            for ph in placeholders(arg) - known:
                problems.append(f"{where}.command[{i}]: unknown placeholder {{{ph}}} "
                                f"(known: {', '.join(sorted(known))})")
        for key, val in spec.environment.items():
            for ph in placeholders(val) - known:
                problems.append(f"{where}.environment.{key}: unknown placeholder {{{ph}}}")
        return problems

    def gateway_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for selfieless.gateway.GatewayConfig."""
        g = self.gateway
        return {"host": g.host, "port": g.port, "balance": g.balance, **g.limits.model_dump()}

    def routes(self) -> dict[str, str]:
        """The gateway's route table: path prefix (``//host/prefix`` for a service with
        ``hosts``) -> service name."""
        return {r: name for name, svc in self.services.items() for r in _service_routes(svc)}

    def tls_settings(self, state_dir: str | Path | None = None):
        """The gateway's TlsSettings, or None without ``gateway.tls``; ACME keeps its account and
        certificates under ``state_dir`` (the stack's)."""
        if self.gateway.tls is None:
            return None
        tls = self.gateway.tls.settings(frozenset(n for n, s in self.services.items() if not s.redirect_https))
        if tls.acme is not None and state_dir is not None:
            tls = dataclasses.replace(tls, acme={**tls.acme, "state_dir": str(state_dir)})
        return tls


def _service_routes(svc: ServiceSpec) -> list[str]:
    """A service's route keys: its prefixes, under each of its hosts when it names hosts."""
    if not svc.hosts:
        return list(svc.routes)
    from selfieless.gateway.routing import host_key

    return [host_key(h, r) for h in svc.hosts for r in (svc.routes or ["/"])]


def placeholders(text: str) -> set[str]:
    """The `{name}` placeholders `text` uses."""
    try:
        return {f for _, f, _, _ in string.Formatter().parse(text) if f}
    except ValueError:
        return set()


def render(template: str, values: dict[str, Any]) -> str:
    """Fill `{name}` placeholders; variable values may themselves contain placeholders."""
    text = template
    # A few passes resolve chains like {database_url} -> {acts_database_url} -> {state_dir};
    # the bound stops a variable that refers to itself from looping forever.
    for _ in range(5):
        if not placeholders(text):
            return text
        text = text.format_map(_Strict(values))
    raise KeyError(f"placeholders nested too deep in {template!r}")


class _Strict(dict):
    def __missing__(self, key: str) -> Any:
        raise KeyError(f"unknown placeholder {{{key}}}")


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class a validation error's location points into, for listing the keys allowed
    there; None when the path leaves the models (a dict of strings...)."""
    here: Any = Stack
    for part in loc:
        while typing.get_origin(here) is Annotated:
            here = typing.get_args(here)[0]
        if isinstance(here, type) and issubclass(here, BaseModel):
            field = here.model_fields.get(str(part))
            here = field.annotation if field is not None else None
        else:
            here = _model_at_part(here, part)
        if here is None:
            return None
    while typing.get_origin(here) is Annotated:
        here = typing.get_args(here)[0]
    return here if isinstance(here, type) and issubclass(here, BaseModel) else None


def _model_at_part(here: Any, part: Any) -> Any:
    """One step into a non-model type: a dict's value type, or the tagged member of a union."""
    origin = typing.get_origin(here)
    if origin is dict:
        return typing.get_args(here)[1]
    if origin is Union:
        for member in typing.get_args(here):
            tag = getattr(member, "model_fields", {}).get("policy")
            if tag is not None and part in typing.get_args(tag.annotation):
                return member
    return None


def _did_you_mean(loc: tuple) -> str:
    """` (did you mean 'replicas'?)` for a misspelt key, from the keys allowed where it stands."""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _format(err: ValidationError) -> list[str]:
    """Turn pydantic's errors into `path.to.field: what is wrong` lines."""
    out: list[str] = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        # Discriminated unions add the tag as a path element; `services.acts.autoscale.window.x`
        # reads worse than `services.acts.autoscale.x`.
        path = re.sub(r"\.(window|rate|none)(?=\.|$)", "", path) if ".autoscale" in path else path
        if e["type"] == "value_error":
            msg = str(e["ctx"]["error"])
        elif e["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(tuple(p for p in e["loc"] if not str(p).startswith("function-")))
        elif e["type"] == "missing":
            msg = "required"
        elif e["type"] == "union_tag_invalid":
            ctx = e["ctx"]
            msg = f"{ctx['discriminator'].strip(chr(39))}: must be one of {ctx['expected_tags']} (got {ctx['tag']!r})"
        elif e["type"] == "string_pattern_mismatch" and path == "name":
            msg = "must start with a lowercase letter or digit and contain only a-z, 0-9, '.', '_', '-'"
        else:
            msg = e["msg"].replace("Input should be", "must be")
        for line in msg.split("\n"):
            # "field: text" raised by a model validator belongs to that field.
            m = re.match(r"^([a-z_][a-z0-9_.\[\]]*): (.*)$", line, re.S)
            if m and line.startswith("services."):
                out.append(line)
            elif m:
                out.append(f"{path}.{m.group(1)}: {m.group(2)}" if path else line)
            else:
                out.append(f"{path}: {line}" if path else line)
    return out


def parse_stack(data: Any, source: str | None = None) -> Stack:
    if not isinstance(data, dict):
        raise StackError(["the document must be a mapping with `name` and `services`"], source)
    try:
        return Stack.model_validate(data)
    except ValidationError as e:
        raise StackError(_format(e), source) from None


def load_stack(path: str | Path) -> Stack:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise StackError([f"cannot read: {e.strerror}"], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise StackError([f"{where}not valid YAML ({getattr(e, 'problem', e)})"], str(path)) from None
    return parse_stack(data, str(path))
