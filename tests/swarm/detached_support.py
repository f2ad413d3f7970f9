"""A stack whose control plane runs as a Swarm service (`selfieless up --driver swarm --detach`)
on a lab of three managers, and the manager-loss trial the test and benchmarks/swarm_failover.py
share: the node holding the floating IP, the control plane and a gateway cut off at once under
GET and upload load sent to the floating IP.

The control plane's admin API listens on the loopback of whichever node runs it (it has the
node's network), so it is reached through that node's network namespace (curl run by nsenter).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path


from selfieless.orchestrator.drivers.swarm_control import swarm_electing
from selfieless.orchestrator.stack import LeaseSpec
from support.ports import free_port
from support.processes import wait_until
from swarm_support import GetLoad, Lab, Writes, gateway_answers, make_stack_file, remove_stack

# The database's node, never the one cut (its loss takes the data, not a test of failover). Node 1
# is the Raft leader of a fresh lab (it ran `swarm init`): with the data there, the node cut is
# another manager. The Raft leader's own loss is the other case (`held_off` below, and
# test_swarm_vip_manager_loss.py): the data on another node, the control plane on the leader's.
DB_NODE = 1
# A node label that keeps the control plane off a node while it is set (`held_off`); Swarm reads
# a constraint only when it places a task, so taking the label away later moves nothing.
HOLD_LABEL = "selfieless.lab.hold-control"


def make_detached_stack_file(path: Path, name: str, acts: int = 3, lease: dict | None = None,
                             db_node: int = DB_NODE) -> Path:
    """The lab stack (swarm_support.make_stack_file) with `acts` acts tasks (3: one per node, by
    the spread preference, so the node cut holds one), the database and users on node `db_node`
    and the control plane kept off it (`swarm.control_placement`), and off any node labelled
    HOLD_LABEL when it is placed, so the node cut holds the control plane but not the data."""
    import yaml

    make_stack_file(path, name, lease)
    data = yaml.safe_load(path.read_text())
    data["services"]["acts"]["replicas"] = {"initial": acts, "min": 1, "max": 2 * acts}
    # users has one task, pinned by a label: with the database, so the node cut holds neither.
    for part in (data["dependencies"]["db"], data["services"]["users"]):
        part["placement"] = {"constraints": [f"node.labels.selfieless.lab.node=={db_node}"]}
    data["swarm"] = {**data.get("swarm", {}),
                     "control_placement": {"constraints": [f"node.labels.selfieless.lab.node!={db_node}",
                                                           f"node.labels.{HOLD_LABEL}!=true"]}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def raft_leader(lab: Lab, via: int) -> int:
    """The lab node that is the swarm's Raft leader, as node `via`'s engine says (waiting while
    the swarm elects one: a node healed a moment ago makes the leader step down)."""
    import docker

    client = docker.DockerClient(base_url=lab.node_socket(via), timeout=15)

    def leader() -> int | None:
        try:
            for n in client.nodes.list():
                if (n.attrs.get("ManagerStatus") or {}).get("Leader"):
                    return int(n.attrs["Spec"]["Labels"]["selfieless.lab.node"])
        except docker.errors.APIError as e:
            if not swarm_electing(str(e)):
                raise
        return None

    try:
        return wait_until(leader, 60, 0.5, what="a Raft leader")
    finally:
        client.close()


def set_hold(lab: Lab, node: int, held: bool, via: int) -> None:
    """Set or take away HOLD_LABEL on lab node `node` (through node `via`, a manager)."""
    import docker

    client = docker.DockerClient(base_url=lab.node_socket(via), timeout=15)

    def update() -> bool:
        # A node's record changes under us (its status, a role): the update names the version it
        # read, and Swarm refuses it as "out of sequence" if another write came first: read again.
        try:
            for n in client.nodes.list(filters={"node.label": f"selfieless.lab.node={node}"}):
                spec = n.attrs["Spec"]
                labels = {k: v for k, v in (spec.get("Labels") or {}).items() if k != HOLD_LABEL}
                if held:
                    labels[HOLD_LABEL] = "true"
                n.update({**spec, "Labels": labels})
            return True
        except docker.errors.APIError as e:   # ... or the swarm is electing a leader: ask again
            if "out of sequence" in str(e) or swarm_electing(str(e)):
                return False
            raise

    try:
        wait_until(update, 30, 0.2, what=f"node {node}'s hold label {'set' if held else 'taken away'}")
    finally:
        client.close()


def deploy_on_leader(lab: Lab, path: Path, name: str, acts: int = 3) -> DetachedStack:
    """A detached stack with its control plane on the Raft leader's node and its data on another
    manager: the third manager is held off (HOLD_LABEL) until the control plane runs on the
    leader's node, then freed, so the control plane can move there when the leader's node is cut.
    The caller cleans up (`cleanup()`) the stack it gets; a failed deployment is cleaned here."""
    leader = raft_leader(lab, via=DB_NODE)
    db_node, held = (n for n in lab.nodes if n != leader)
    stack = DetachedStack(lab, make_detached_stack_file(path, name, acts=acts, db_node=db_node), name, db_node=db_node)
    set_hold(lab, held, True, via=leader)
    try:
        stack.deploy()
        wait_until(lambda: stack.control_node(leader), 180, 0.5, what="the control plane's task running")
        assert stack.control_node(leader) == leader, "the control plane is not on the Raft leader's node"
    except BaseException:
        stack.cleanup()
        raise
    finally:
        set_hold(lab, held, False, via=db_node)
    return stack


class DetachedStack:
    def __init__(self, lab: Lab, stack_path: Path, name: str, db_node: int = DB_NODE):
        self.lab, self.stack_path, self.name, self.db_node = lab, stack_path, name, db_node
        # Below Swarm's own range (30000-32767): the gateways publish the port and the next one.
        self.gateway_port = free_port(avoid=range(29999, 32768))
        self.admin_port = free_port(avoid=range(self.gateway_port - 1, 32768))
        self.lease_seconds = LeaseSpec().seconds   # the stack files here keep the default lease
        # With a token the control plane's admin API listens on its node's addresses, where the
        # CLI finds it through the swarm (`--admin swarm://STACK`) after a move too.
        self.admin_token = secrets.token_hex(16)

    def _cli(self, *args: str, manager: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "DOCKER_HOST": self.lab.node_socket(manager)}
        return subprocess.run([sys.executable, "-m", "selfieless", *args], capture_output=True, text=True,
                              timeout=timeout, env=env)

    def deploy(self) -> str:
        r = self._cli("up", str(self.stack_path), "--driver", "swarm", "--detach", "--port", str(self.gateway_port),
                      "--admin-port", str(self.admin_port), "--admin-token", self.admin_token)
        assert r.returncode == 0, f"up --detach failed ({r.returncode}):\n{r.stdout}{r.stderr}"
        return r.stdout

    def cli_status(self, manager: int, token: bool = True) -> subprocess.CompletedProcess:
        """`selfieless status --json --admin swarm://STACK` from the host, through `manager`'s engine."""
        return self._cli("status", "--json", "--admin", f"swarm://{self.name}",
                         *(["--admin-token", self.admin_token] if token else []), manager=manager, timeout=60)

    def down(self, manager: int) -> subprocess.CompletedProcess:
        """`down --swarm` from `manager` (it tries again itself while the swarm elects a leader)."""
        return self._cli("down", "--swarm", self.name, manager=manager)

    def cleanup(self) -> None:
        """Whatever a failed test or trial left: every node healed, `down --swarm` from a manager
        that keeps the quorum, then any service of the stack or of its control plane."""
        for n in self.lab.nodes:
            self.lab.heal(n)
        self.lab.wait_all_ready(via=self.db_node)
        self.down(manager=self.db_node)
        client = self.client(self.db_node)
        try:
            remove_stack(client, self.name)
            for s in client.services.list(filters={"label": f"selfieless.control-plane={self.name}"}):
                s.remove()
        finally:
            client.close()

    def client(self, manager: int):
        import docker

        return docker.DockerClient(base_url=self.lab.node_socket(manager), timeout=15)

    def control_node(self, manager: int) -> int | None:
        """The lab node running the control plane's task, as the swarm (asked of `manager`) says."""
        client = self.client(manager)
        try:
            tasks = client.api.tasks(filters={"service": f"{self.name}-control", "desired-state": "running"})
            running = [t for t in tasks if t["Status"]["State"] == "running"]
            if not running:
                return None
            node = client.api.inspect_node(running[0]["NodeID"])
            return int(node["Spec"]["Labels"]["selfieless.lab.node"])
        finally:
            client.close()

    def lease_holder(self, manager: int) -> str | None:
        """Who holds the stack's control-plane lease (its Swarm config, read through `manager`)."""
        from selfieless.orchestrator.drivers.swarm_lease import SwarmLeaseStore

        client = self.client(manager)
        try:
            lease = SwarmLeaseStore(client, self.name).read().lease
            return lease.holder if lease is not None else None
        finally:
            client.close()

    def admin(self, node: int, path: str, body: dict | None = None, timeout: float = 5) -> tuple[int, dict | None]:
        """A call to the admin API on node `node`'s loopback: (status, JSON body); (0, None) when
        nothing answered."""
        cmd = [*self.lab.netns_prefix(node), "curl", "-s", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code}",
               "-H", f"Authorization: Bearer {self.admin_token}"]
        if body is not None:
            cmd += ["-H", "content-type: application/json", "--data", json.dumps(body)]
        r = subprocess.run([*cmd, f"http://127.0.0.1:{self.admin_port}{path}"], capture_output=True, text=True,
                           timeout=timeout + 10)
        text, _, code = r.stdout.rpartition("\n")
        try:
            return int(code or 0), json.loads(text) if text else None
        except ValueError:
            return int(code or 0), None

    def status(self, node: int) -> dict | None:
        code, body = self.admin(node, "/api/status")
        return body if code == 200 else None

    def acting_from(self, node: int) -> float | None:
        """When the control plane on `node` took the lease (wall clock), from its own event log:
        the deadline its acquisition wrote, less the lease's length."""
        code, body = self.admin(node, "/api/events?after=0")
        events = body.get("events", []) if code == 200 and isinstance(body, dict) else []
        for ev in events:
            m = re.search(r"acquired by \S+ until (\d+\.\d+)", ev.get("reason") or "")
            if ev.get("kind") == "lease" and m:
                return float(m.group(1)) - self.lease_seconds
        return None

    def control_logs(self, node: int) -> list[str]:
        """What each control-plane container on `node` wrote (through that node's own engine)."""
        import docker

        engine = docker.DockerClient(base_url=self.lab.node_socket(node), timeout=15)
        try:
            return [c.logs().decode(errors="replace")
                    for c in engine.containers.list(all=True, filters={"label": f"selfieless.control-plane={self.name}"})]
        finally:
            engine.close()

    def stopped_acting_at(self, node: int) -> float | None:
        """When the control plane on `node` (cut off, alive) stopped acting for want of a renewal,
        from the last words of its container."""
        for logs in self.control_logs(node):
            m = re.search(r"stopped acting at (\d+\.\d+)", " ".join(logs.split()))   # the console wraps lines
            if m:
                return float(m.group(1))
        return None

    def tasks_seen(self, manager: int, service: str) -> list[str]:
        """Swarm's tasks of one of the stack's services, a line each (for a failure's message)."""
        client = self.client(manager)
        try:
            out = []
            for t in client.api.tasks(filters={"service": f"{self.name}-{service}"}):
                ports = [p.get("PublishedPort") for p in ((t["Status"].get("PortStatus") or {}).get("Ports") or [])]
                out.append(f"{t['ID'][:12]} node {t['NodeID'][:6]} desired {t['DesiredState']} "
                           f"state {t['Status']['State']} ports {ports} {t['Status'].get('Err', '')}")
            return out
        finally:
            client.close()

    def gateway(self, address: str) -> str:
        return f"http://{address}:{self.gateway_port}"


def failure_summary(failures: list[tuple[float, str]], cut_at: float) -> str:
    """The failed GETs by what went wrong, each kind with its count and when (seconds after the cut)."""
    kinds: dict[str, list[float]] = {}
    for at, what in failures:
        kinds.setdefault(what[:60], []).append(at - cut_at)
    return "; ".join(f"{len(ts)} x {what} at {min(ts):+.1f}..{max(ts):+.1f} s" for what, ts in kinds.items())


def manager_loss(lab: Lab, stack: DetachedStack, clients: int = 4, acting_timeout: float = 120.0) -> dict:
    """Cut the node that runs the control plane and holds the floating IP (a gateway runs on every
    node) under `clients` GET clients and an upload loop sent to the floating IP. Returns the
    seconds until the floating IP answers again and until another control plane holds the lease,
    the failed GETs (each client has at most one request in flight on the cut node at the cut),
    the uploads acknowledged and those missing afterwards, the node cut and the new control
    plane's node. The node is left cut: the caller heals it."""
    victim = wait_until(lambda: stack.control_node(1), 120, what="the control plane's task running")
    survivor = next(n for n in lab.nodes if n != victim)
    lab.vip_start(stack.gateway_port, prefer=victim)
    wait_until(lambda: lab.vip_holder() == victim, 30, what=f"node {victim} holding the floating IP")
    vip = stack.gateway(lab.vip)
    old = wait_until(lambda: stack.lease_holder(survivor), 60, what="the control plane holding its lease")
    with Writes(vip) as writes, GetLoad(f"{vip}/api/v1/categories", clients) as load:
        time.sleep(2.0)
        t0 = time.monotonic()
        lab.cut(victim)
        wait_until(lambda: gateway_answers(f"{vip}/", 0.25), 30, 0.02, what="the floating IP answering again")
        back = time.monotonic() - t0

        def taken_over() -> bool:
            try:
                return stack.lease_holder(survivor) not in (None, "", old)
            except Exception:   # the survivor's manager re-electing a Raft leader: ask again
                return False

        wait_until(taken_over, acting_timeout, 0.2, what="another control plane holding the lease")
        acting = time.monotonic() - t0
        time.sleep(3.0)   # the load goes on through the new layout for a while
    missing = set(writes.acked) - writes.stored()
    new_node = stack.control_node(survivor)
    # Split brain: the old control plane is alive, cut off from the quorum. It must have stopped
    # acting (no renewal committed) before the new one took the lease.
    old_stop = wait_until(lambda: stack.stopped_acting_at(victim), 60, 0.5,
                          what=f"the control plane cut off on node {victim} saying it stopped acting")
    new_start = wait_until(lambda: stack.acting_from(new_node), 60, 0.5,
                           what=f"the control plane on node {new_node} saying when it took the lease")
    return {"victim": victim, "vip_back": back, "acting": acting, "failed_gets": len(load.failures),
            "gets": load.total, "in_flight": clients, "failures": failure_summary(load.failures, t0),
            "uploads": len(writes.acked), "lost": len(missing), "upload_failures": len(writes.failures),
            "new_node": new_node, "old_stopped_at": old_stop, "new_acting_from": new_start}
