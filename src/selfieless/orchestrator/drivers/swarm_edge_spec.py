"""The stack's edge services on a swarm, their pure half: the gateway on every node and the
floating IP, each one global Swarm service per stack (one task per node). Their service
definitions, the commands their tasks run, and what their Swarm records say (which nodes run a
gateway, its control token, every node's address for keepalived). No sockets here; the calls to
the manager are swarm_edge.py's.
"""

from __future__ import annotations

from typing import Any

from .swarm_spec import LABEL_STACK, NO_HEALTHCHECK, NS, RESTART_DELAY, ready_nodes

# --- the gateway on every node ---------------------------------------------------------------------
# One global service per stack runs the gateway (python -m selfieless.gateway) on every node, its
# public and control ports published in host mode on the node's own address; the control plane
# attaches to each task's control API (orchestrator/gateway_fleet.py). Labelled with the stack and
# this role, and with no service label: it is no replica of any service (tasks_to_replicas and
# replica_counts pass it by), and cleanup() removes it with the rest of the stack.
LABEL_ROLE = "selfieless.role"
GATEWAY_ROLE = "gateway"
GATEWAY_TOKEN_ENV = "SELFIELESS_GATEWAY_TOKEN"
LABEL_GATEWAY_SPEC = "selfieless.gateway_spec"  # what the service was created from: changed, it is updated
# A gateway boots from its arguments and its control plane re-sends the pools: nothing to pace.
# Swarm's restart delay is all of its time out of service after a crash or a kill, besides the
# container's start.
GATEWAY_RESTART_DELAY = 0.0
GATEWAY_STOP_GRACE = 5.0  # requests in flight when a gateway task is stopped (its --grace)


def gateway_service_name(stack: str) -> str:
    return f"{stack}-{GATEWAY_ROLE}"


def gateway_command(config: dict[str, Any], routes: dict[str, str], port: int, control_port: int,
                    tls: dict[str, Any] | None = None) -> list[str]:
    """The gateway's command line in a task: every address of the container, the given ports, and
    with `tls` (TlsSettings as JSON, without certificates: the control plane sends them) HTTPS."""
    import json

    config = {**config, "host": "0.0.0.0", "port": port}
    tls_args = ["--tls-json", json.dumps(tls, sort_keys=True)] if tls is not None else []
    return ["python3", "-m", "selfieless.gateway", "--control-listen", f"0.0.0.0:{control_port}",
            "--config-json", json.dumps(config, sort_keys=True), "--routes-json", json.dumps(routes, sort_keys=True),
            *tls_args, "--grace", f"{GATEWAY_STOP_GRACE:g}"]


def gateway_spec_key(image: str, command: list[str]) -> str:
    """A short digest of what the gateway service runs, kept as its label: the next `up` compares
    it to tell whether the running service must be updated."""
    import hashlib

    return hashlib.sha256("\0".join([image, *command]).encode()).hexdigest()[:16]


def gateway_service_definition(stack: str, image: str, command: list[str], port: int, control_port: int,
                               token: str, network: str, tls_port: int | None = None) -> dict[str, Any]:
    """Keyword arguments for `create_service` (and `update_service`): the stack's gateway, one
    task per node (global mode), its ports (public, control, HTTPS if any) published in host
    mode, the token in its environment
    (readable only through the manager's API, whose users can run anything on the swarm anyway;
    a restarted control plane reads it back from there)."""
    from docker import types

    labels = {LABEL_STACK: stack, LABEL_ROLE: GATEWAY_ROLE}
    container = types.ContainerSpec(
        image, command=command, env={GATEWAY_TOKEN_ENV: token},
        labels=labels, stop_grace_period=int((GATEWAY_STOP_GRACE + 1) * NS), init=True,
        healthcheck=NO_HEALTHCHECK,
    )
    template = types.TaskTemplate(
        container_spec=container,
        restart_policy=types.RestartPolicy(condition="any", delay=int(GATEWAY_RESTART_DELAY * NS), max_attempts=0),
        networks=[{"Target": network}],
    )
    return {
        "task_template": template,
        "name": gateway_service_name(stack),
        "labels": {**labels, LABEL_GATEWAY_SPEC: gateway_spec_key(image, command)},
        "mode": types.ServiceMode("global"),
        # One node at a time, the old task stopped first (the new one needs its ports).
        "update_config": types.UpdateConfig(parallelism=1, delay=0, order="stop-first", failure_action="pause"),
        "endpoint_spec": types.EndpointSpec(mode="dnsrr", ports=[
            {"Protocol": "tcp", "TargetPort": p, "PublishedPort": p, "PublishMode": "host"}
            for p in (port, control_port, tls_port) if p]),
    }


def gateway_token(service: dict) -> str | None:
    """The control token in a gateway service's record (its container environment), or None."""
    env = ((service.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec", {}).get("Env") or []
    for item in env:
        key, _, value = item.partition("=")
        if key == GATEWAY_TOKEN_ENV and value:
            return value
    return None


def gateway_places(tasks: list[dict], nodes: list[dict]) -> dict[str, str]:
    """Node address -> hostname for every node where Swarm wants a gateway task running: the
    control plane attaches to `address : control port` there. A task being replaced (killed, or
    restarted) keeps its node's address listed, so the control plane stays attached and sends
    the routes and pools to the new instance as soon as it answers; a node Swarm reports down is
    not listed."""
    where = ready_nodes(nodes)
    out = {}
    for t in tasks:
        if t.get("DesiredState") != "running":
            continue
        labels = ((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
        if labels.get(LABEL_ROLE) != GATEWAY_ROLE:
            continue
        node = where.get(t.get("NodeID"))
        if node is not None:
            out[node[0]] = node[1]
    return out


# --- the floating IP --------------------------------------------------------------------------------
# With `swarm: {floating_ip: ...}` one more global service per stack runs keepalived on every node
# (python3 -m selfieless.floating_ip): on the node's own network (host network), as root, with the
# capabilities VRRP needs (adding the address, raw VRRP packets). Labelled like the gateway service
# (stack + role, no service label), so cleanup() removes it with the rest of the stack.
VIP_ROLE = "vip"
LABEL_VIP_SPEC = "selfieless.vip_spec"
VIP_CAPABILITIES = ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BROADCAST"]
# keepalived's SIGTERM: it drops the address and advertises priority 0 (the next holder takes over
# at once) before it exits; well under a second, the rest is margin.
VIP_STOP_GRACE = 5.0
# Between two nodes' tasks in an update (stop-first, one at a time): the restarted keepalived
# joins as a backup before the next node's stops, so at most one move of the address.
VIP_UPDATE_DELAY = 3.0


def vip_service_name(stack: str) -> str:
    return f"{stack}-{VIP_ROLE}"


def node_addresses(nodes: list[dict]) -> list[str]:
    """Every node's address, whatever its state, sorted: keepalived's peers. A node that is down
    stays listed (its peer is just silent), so losing a node changes nothing here and does not
    restart keepalived everywhere; a node joining or removed does."""
    import ipaddress

    out = set()
    for n in nodes:
        addr = (n.get("Status") or {}).get("Addr") or ""
        if addr in ("", "0.0.0.0"):
            addr = ((n.get("ManagerStatus") or {}).get("Addr") or "").rsplit(":", 1)[0]
        if addr:
            out.add(addr)
    return sorted(out, key=ipaddress.ip_address)


def vip_command(address: str, router_id: int, advert: float, gateway_port: int, nodes: list[str]) -> list[str]:
    """The `<stack>-vip` task's command line (selfieless/floating_ip/__main__.py)."""
    return ["python3", "-m", "selfieless.floating_ip", "--address", address, "--router-id", str(router_id),
            "--advert", f"{advert:g}", "--gateway-port", str(gateway_port), "--nodes", ",".join(nodes)]


def vip_service_definition(stack: str, image: str, command: list[str]) -> dict[str, Any]:
    """Keyword arguments for `create_service` (and `update_service`): keepalived on every node."""
    from docker import types

    labels = {LABEL_STACK: stack, LABEL_ROLE: VIP_ROLE}
    container = types.ContainerSpec(
        image, command=command, user="0", labels=labels, cap_add=list(VIP_CAPABILITIES),
        stop_grace_period=int(VIP_STOP_GRACE * NS), init=True, healthcheck={"Test": ["NONE"]},
    )
    template = types.TaskTemplate(
        container_spec=container,
        restart_policy=types.RestartPolicy(condition="any", delay=int(RESTART_DELAY * NS), max_attempts=0),
        networks=[{"Target": "host"}],
    )
    return {
        "task_template": template,
        "name": vip_service_name(stack),
        "labels": {**labels, LABEL_VIP_SPEC: gateway_spec_key(image, command)},
        "mode": types.ServiceMode("global"),
        "update_config": types.UpdateConfig(parallelism=1, delay=int(VIP_UPDATE_DELAY * NS), order="stop-first",
                                            failure_action="pause"),
    }
