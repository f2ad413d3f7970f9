"""The control plane as a Swarm service (`selfieless up --driver swarm --detach`): its definition
(pure) and the calls that deploy and remove it.

One replica, on a manager (`node.role==manager`), restarted on any exit: when its node dies Swarm
starts it on another manager, where `up` waits for the stack's lease (orchestrator/lease.py),
then adopts the stack's services by label as after any restart. It runs `selfieless up` of the
stack file, which it reads from a Swarm config (configs live in the managers' Raft store, so every
manager has it), with the manager's engine socket mounted and the host's network (the gateway
and the admin API listen on the node; the admin API on its loopback only unless a token is given,
and then on every address of the node, found by the CLI through the swarm: :func:`admin_url`).
It runs in the image
of one of the stack's services (this project's images hold selfieless and the Docker SDK; `swarm:
{helper_image: ...}` names another).

Files the stack file names on the machine that deploys it (the certificates and keys of
`gateway.tls`, a test CA's bundle) are not on the manager that runs the task: each goes as a Swarm
secret of its own (named by its content: a file changed is a new secret, and the control plane is
updated to it), mounted in the task under /run/secrets, and the stack file the task reads names
them there (:func:`ship_files`). The control plane then sends the certificates to every gateway
(orchestrator/fleet_tls.py).

The service, the stack-file config and those secrets carry `selfieless.control-plane=<stack>`, not the stack's
own label: the stack's services are what the control plane drives and removes on `down`, and it
must not remove itself half way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from .swarm_spec import DEFAULT_SOCKET, NO_HEALTHCHECK

LABEL_CONTROL = "selfieless.control-plane"
STACK_PATH = "/etc/selfieless/stack.yaml"     # where the task finds the stack file
STATE_DIR = "/var/lib/selfieless"             # inside the task: gone with it (see README)
RESTART_DELAY_NS = 1_000_000_000              # Swarm's default is 5 s: a control plane back sooner
ADMIN_TOKEN_FILE_ENV = "SELFIELESS_ADMIN_TOKEN_FILE"


def control_service_name(stack: str) -> str:
    return f"{stack}-control"


def _named_by_content(stack: str, kind: str, data: bytes) -> str:
    """Configs and secrets cannot change: each version is one of its own, named by its content
    (the same content deployed twice is the same object)."""
    return f"{stack}-{kind}-{hashlib.sha256(data).hexdigest()[:12]}"


def stack_config_name(stack: str, text: str) -> str:
    return _named_by_content(stack, "stackfile", text.encode())


def file_secret_name(stack: str, data: bytes) -> str:
    return _named_by_content(stack, "file", data)


def admin_token_secret_name(stack: str, token: str) -> str:
    return _named_by_content(stack, "admin-token", token.encode())


def tls_file_fields(tls: dict[str, Any]) -> list[tuple[dict, str]]:
    """Where `gateway.tls` (as data) names a file: (the dict holding it, its key)."""
    out = [(tls, k) for k in ("cert", "key") if tls.get(k)]
    out += [(pair, k) for pair in tls.get("certs") or [] for k in ("cert", "key")]
    acme = tls.get("acme") or {}
    return out + ([(acme, "ca_bundle")] if acme.get("ca_bundle") else [])


def control_command(gateway_port: int, admin_port: int, remote_admin: bool = False) -> list[str]:
    """The task's `up`. With a token (`remote_admin`) its admin API listens on every address of
    its node, so the CLI reaches it from elsewhere (`--admin swarm://STACK`); without one, on the
    node's loopback only."""
    return ["python3", "-m", "selfieless", "up", STACK_PATH, "--driver", "swarm", "--port", str(gateway_port),
            "--admin-port", str(admin_port), "--state-dir", STATE_DIR, "--quiet", "--in-service",
            *(["--admin-host", "0.0.0.0"] if remote_admin else [])]


def control_service_definition(stack: str, image: str, config_id: str, config_name: str, socket: str,
                               gateway_port: int, admin_port: int, constraints: Sequence[str] = (),
                               preferences: Sequence[str] = (),
                               secrets: Sequence[tuple[str, str]] = (),
                               admin_token: tuple[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for the SDK's low-level `create_service` / `update_service`.
    `constraints` and `preferences` (the stack's `swarm.control_placement`) narrow the managers
    it may run on, e.g. keeping it off the node of a database it would otherwise go down with.
    `secrets`: (id, name) of the shipped files, each at /run/secrets/<name>. `admin_token`: (id,
    name) of the secret holding the admin API's token, which `up` reads from the file that
    $SELFIELESS_ADMIN_TOKEN_FILE names (a secret's data, unlike an environment's, is not shown by
    the manager's API)."""
    from docker import types

    env = [f"DOCKER_HOST=unix://{DEFAULT_SOCKET}"]
    if admin_token is not None:
        env.append(f"{ADMIN_TOKEN_FILE_ENV}=/run/secrets/{admin_token[1]}")
    mounted = [*secrets, *([admin_token] if admin_token is not None else [])]
    container = types.ContainerSpec(
        image, command=control_command(gateway_port, admin_port, remote_admin=admin_token is not None),
        user="0",   # the engine socket is root's
        env=env,
        labels={LABEL_CONTROL: stack},
        mounts=[types.Mount(target=DEFAULT_SOCKET, source=socket, type="bind")],
        configs=[types.ConfigReference(config_id, config_name, filename=STACK_PATH)],
        secrets=[types.SecretReference(secret_id, name, mode=0o400) for secret_id, name in mounted] or None,
        # `up` drains on SIGTERM with the stack left running (--in-service); give it the time.
        stop_grace_period=30_000_000_000,
        healthcheck=NO_HEALTHCHECK,
    )
    template = types.TaskTemplate(
        container_spec=container,
        restart_policy=types.RestartPolicy(condition="any", delay=RESTART_DELAY_NS),
        placement=types.Placement(constraints=["node.role==manager", *constraints],
                                  preferences=[("spread", label) for label in preferences] or None),
        networks=[types.NetworkAttachmentConfig("host")],
    )
    return {
        "task_template": template,
        "name": control_service_name(stack),
        "labels": {LABEL_CONTROL: stack},
        "mode": types.ServiceMode("replicated", replicas=1),
    }


def swarm_electing(message: str) -> bool:
    """Whether an engine's error says the swarm is between two Raft leaders (a call made again
    in a few seconds succeeds)."""
    return "does not have a leader" in message or "lost leader status" in message


def admin_address(service: dict, tasks: list[dict], nodes: list[dict]) -> str:
    """`http://ADDRESS:PORT` of the control plane's admin API: its running task's node (one Swarm
    calls ready: a task still listed on a node that died is not there) and the port of its
    command. ValueError saying why there is none to reach."""
    command = service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Command") or []
    port = command[command.index("--admin-port") + 1] if "--admin-port" in command else None
    by_id = {n["ID"]: n for n in nodes}
    live = [by_id[t["NodeID"]] for t in tasks
            if t.get("DesiredState") == "running" and t["Status"]["State"] == "running"
            and ((by_id.get(t.get("NodeID")) or {}).get("Status") or {}).get("State") == "ready"]
    name = service["Spec"]["Name"]
    if port is None:
        raise ValueError(f"service {name} names no admin port: is it a control plane of `up --detach`?")
    if not live:
        raise ValueError(f"no task of {name} is running on a node that is up (Swarm may be starting one "
                         "on another manager: try again in a few seconds)")
    node = live[0]
    where = f"{node['Description']['Hostname']} ({node['Status']['Addr']})"
    if "--admin-host" not in command:
        raise ValueError(f"the control plane runs on {where}, with its admin API on that node's loopback only: "
                         "run the command there, or deploy it again with --admin-token to reach it from here")
    address = node["Status"]["Addr"]
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


def manager_socket(nodes: list[dict], default: str = DEFAULT_SOCKET) -> str | None:
    """The engine socket to mount: the one every manager has (its `selfieless.docker-socket`
    label, else the usual path); None when they differ, since one service mounts one path on
    whichever manager runs it."""
    found = {((n.get("Spec") or {}).get("Labels") or {}).get("selfieless.docker-socket") or default
             for n in nodes if (n.get("Spec") or {}).get("Role") == "manager"}
    return found.pop() if len(found) == 1 else None


# --- the I/O (blocking: the CLI calls these) -----------------------------------------------------

def ship_files(client: Any, stack: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    """Each file `gateway.tls` names in `data` (the stack as data, changed in place to name the
    copies) as a secret of the stack's control plane; returns (id, name) of each, for
    control_service_definition. OSError names a file that cannot be read."""
    shipped: dict[str, str] = {}
    for holder, key in tls_file_fields((data.get("gateway") or {}).get("tls") or {}):
        with open(holder[key], "rb") as f:
            content = f.read()
        name = file_secret_name(stack, content)
        if name not in shipped:
            shipped[name] = _secret(client, stack, name, content)
        holder[key] = f"/run/secrets/{name}"
    return [(secret_id, name) for name, secret_id in shipped.items()]


def admin_token_secret(client: Any, stack: str, token: str) -> tuple[str, str]:
    """The admin API's token as a secret of the stack's control plane: (id, name)."""
    name = admin_token_secret_name(stack, token)
    return _secret(client, stack, name, token.encode()), name


def _secret(client: Any, stack: str, name: str, content: bytes) -> str:
    """The id of the control plane's secret `name` (named by its content), created if new."""
    api = client.api
    found = [s for s in api.secrets(filters={"name": name}) if (s.get("Spec") or {}).get("Name") == name]
    return found[0]["ID"] if found else api.create_secret(name, content, labels={LABEL_CONTROL: stack})["ID"]


def admin_url(client: Any, stack: str) -> str:
    """Where the CLI reaches the stack's control plane (admin_address); ValueError saying why not."""
    import docker.errors

    api = client.api
    try:
        service = api.inspect_service(control_service_name(stack))
    except docker.errors.NotFound:
        raise ValueError(f"this swarm has no service {control_service_name(stack)}: was {stack} deployed "
                         "with `selfieless up --driver swarm --detach`?") from None
    return admin_address(service, api.tasks(filters={"service": control_service_name(stack)}), api.nodes())


def deploy(client: Any, stack: str, stack_text: str, image: str, gateway_port: int, admin_port: int,
           constraints: Sequence[str] = (), preferences: Sequence[str] = (),
           secrets: Sequence[tuple[str, str]] = (), admin_token: tuple[str, str] | None = None) -> str:
    """Create the stack-file config and the control-plane service, or update the service to this
    stack file (a rolling replacement of its one task). Returns what it did."""
    import docker.errors

    api = client.api
    name = stack_config_name(stack, stack_text)
    found = [c for c in api.configs(filters={"name": name}) if (c.get("Spec") or {}).get("Name") == name]
    config_id = found[0]["ID"] if found else api.create_config(
        name, stack_text.encode(), labels={LABEL_CONTROL: stack})["ID"]
    socket = manager_socket(api.nodes())
    if socket is None:
        raise ValueError("the managers' engine sockets are at different paths (node label "
                         "selfieless.docker-socket), and a service mounts one path on whichever manager "
                         "runs it: give every manager its engine socket at the same path")
    definition = control_service_definition(stack, image, config_id, name, socket, gateway_port, admin_port,
                                            constraints, preferences, secrets, admin_token)
    try:
        current = api.inspect_service(control_service_name(stack))
    except docker.errors.NotFound:
        api.create_service(**definition)
        return f"created service {definition['name']} (1 replica on a manager) with stack file config {name}"
    api.update_service(current["ID"], current["Version"]["Index"], fetch_current_spec=False, **definition)
    return f"updated service {definition['name']} to stack file config {name}"


def remove(client: Any, stack: str) -> bool:
    """Remove the control-plane service (its `up` stops, leaving the stack running); False when
    there was none."""
    import docker.errors

    try:
        client.api.remove_service(control_service_name(stack))
        return True
    except docker.errors.NotFound:
        return False


def remove_configs(client: Any, stack: str, timeout: float = 30.0) -> list[str]:
    """The control plane's configs and secrets (stack files, shipped files, the sealed ACME
    folder and its key). A removed service's task holds them for a few seconds more: tried again
    until `timeout`; returns the names still left then (the next `down` takes them)."""
    import time

    api = client.api
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for listing, remove in ((api.configs, api.remove_config), (api.secrets, api.remove_secret)):
            for c in listing(filters={"label": f"{LABEL_CONTROL}={stack}"}):
                try:
                    remove(c["ID"])
                except Exception:   # still in use by a task being removed
                    left.append(c["Spec"]["Name"])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def stack_text(client: Any, stack: str) -> str | None:
    """The stack file the control-plane service runs (from its config), or None."""
    import base64

    import docker.errors

    api = client.api
    try:
        svc = api.inspect_service(control_service_name(stack))
    except docker.errors.NotFound:
        return None
    refs = svc["Spec"]["TaskTemplate"]["ContainerSpec"].get("Configs") or []
    if not refs:
        return None
    data = api.inspect_config(refs[0]["ConfigID"])["Spec"].get("Data") or ""
    return base64.b64decode(data).decode()
