"""Lose the manager that runs the control plane and holds the floating IP, and the site keeps
serving (issue "lose any one node"): the stack deployed by `selfieless up --driver swarm
--detach` on a lab of three managers (the control plane a one-replica Swarm service, a gateway on
every node), GETs and uploads sent to the floating IP, and that node cut off the network. Twice:
a manager that is not the Raft leader, then the Raft leader's node (where Swarm's new leader
lists the surviving tasks without their published ports: drivers/swarm_portless.py).

The floating IP answers again from another node, no GET fails beyond those in flight on the cut
node, every acknowledged upload is there afterwards, another control plane takes the lease on
another manager once the cut-off one (alive, without a quorum) has stopped acting, and acts (the
stack back at its counts on the two nodes left, and a scale carried out), and `down --swarm`
from a surviving manager removes the control plane, the gateways and the stack from every node.
It runs last (file order), on a lab it builds afresh with three managers (Lab.rebuild: a node cut
earlier cannot be promoted) and leaves so; a lab the session built goes at its end anyway. About
4.5 minutes: 45 s the rebuild, ~1.5 min the first case, ~2 min the second.
"""

from __future__ import annotations

import json
import time

import pytest

from detached_support import (DB_NODE, DetachedStack, deploy_on_leader, make_detached_stack_file, manager_loss,
                              raft_leader)
from support.processes import wait_until

STACK = "slml"
ACTS = 3   # one acts task per node (the spread preference): the cut node holds one


@pytest.fixture(scope="module")
def three_managers(lab):
    lab.rebuild(managers=3)
    try:
        yield lab
    finally:
        for n in lab.nodes:
            lab.heal(n)
        lab.vip_stop()


@pytest.fixture()
def detached(three_managers, tmp_path):
    """The stack with its data on node DB_NODE (a fresh lab's Raft leader), the control plane on
    another manager."""
    lab = three_managers
    stack = DetachedStack(lab, make_detached_stack_file(tmp_path / "stack.yaml", STACK, acts=ACTS), STACK)
    try:
        stack.deploy()
        yield stack
    finally:
        stack.cleanup()


@pytest.fixture()
def detached_on_leader(three_managers, tmp_path):
    """The stack with its control plane on the Raft leader's node and its data on another
    (detached_support.deploy_on_leader)."""
    stack = deploy_on_leader(three_managers, tmp_path / "stack.yaml", STACK, acts=ACTS)
    try:
        yield stack
    finally:
        stack.cleanup()


def _acts_ready_off(stack: DetachedStack, node: int, address: str, want: int):
    st = stack.status(node)
    if st is None or not st.get("converged"):
        return None
    ready = [r for r in st["services"]["acts"]["replicas"] if r["state"] == "ready"]
    return ready if len(ready) == want and all(r["host"] != address for r in ready) else None


@pytest.mark.timeout(600)
def test_losing_the_node_with_the_control_plane_and_the_floating_ip_keeps_the_site_serving(detached, lab):
    _lose_the_control_planes_node(detached, lab)


@pytest.mark.timeout(600)   # a deployment, the trial, the waits for the counts and a scale: ~3-4 min
def test_losing_the_raft_leaders_node_with_the_control_plane_keeps_the_site_serving(detached_on_leader, lab):
    victim, leader = _lose_the_control_planes_node(detached_on_leader, lab)
    assert victim == leader != detached_on_leader.db_node


def _lose_the_control_planes_node(stack: DetachedStack, lab) -> tuple[int, int]:
    """The trial (detached_support.manager_loss) and its checks; the node cut and the node that
    was the Raft leader just before."""
    node = wait_until(lambda: stack.control_node(1), 180, 0.5, what="the control plane's task running")
    wait_until(lambda: (stack.status(node) or {}).get("converged"), 300, 0.5, what="the stack converged")
    leader = raft_leader(lab, via=stack.db_node)
    r = manager_loss(lab, stack)
    victim, new = r["victim"], r["new_node"]
    print(f"\nmanager-loss: node {victim} cut (control plane, floating IP, a gateway"
          f"{', the Raft leader' if victim == leader else ''}): floating IP back "
          f"{r['vip_back']:.2f} s, another control plane holding the lease {r['acting']:.1f} s (on node {new}), "
          f"failed GETs {r['failed_gets']}/{r['gets']} (in flight: at most {r['in_flight']}), "
          f"uploads lost {r['lost']}/{r['uploads']} ({r['upload_failures']} refused or unanswered)")
    assert r["vip_back"] <= 10.0, "the floating IP did not move within 10 s"
    assert r["failed_gets"] <= r["in_flight"], r["failures"]
    assert r["lost"] == 0, "acknowledged uploads missing"
    assert new not in (None, victim)
    gap = r["new_acting_from"] - r["old_stopped_at"]
    print(f"manager-loss: the cut-off control plane stopped acting {gap:.1f} s before the new one took the lease")
    assert gap > 0, "two control planes acted at once"

    # The new control plane acts: the stack back at its counts off the cut node, then a scale.
    t0 = time.monotonic()
    try:
        wait_until(lambda: _acts_ready_off(stack, new, lab.address(victim), ACTS), 180, 0.5,
                   what=f"{ACTS} acts tasks ready on the nodes left")
    except TimeoutError as e:
        st = stack.status(new) or {}
        seen = [(r["host"], r["state"]) for r in (st.get("services", {}).get("acts", {}).get("replicas") or [])]
        raise AssertionError(f"{e}: the control plane sees {seen} (converged {st.get('converged')}); Swarm's tasks:\n"
                             + "\n".join(stack.tasks_seen(stack.db_node, "acts"))) from None
    print(f"manager-loss: {ACTS} acts tasks ready off node {victim} {time.monotonic() - t0:.1f} s after the takeover")
    # The CLI finds the moved control plane through a surviving manager (`--admin swarm://STACK`).
    r = stack.cli_status(stack.db_node)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["services"]["acts"]["replicas"], r.stdout
    code, body = stack.admin(new, "/api/scale", {"service": "acts", "replicas": ACTS + 1})
    assert code < 300, body
    wait_until(lambda: _acts_ready_off(stack, new, lab.address(victim), ACTS + 1), 120, 0.5,
               what=f"the scale to {ACTS + 1} carried out by the new control plane")

    # `down` from a surviving manager removes the control plane, the gateways and the stack.
    lab.heal(victim)
    lab.wait_all_ready(via=stack.db_node)
    r = stack.down(manager=stack.db_node)
    assert r.returncode == 0, r.stdout + r.stderr
    client = stack.client(stack.db_node)
    try:
        left = [s.name for s in client.services.list() if s.name.startswith(f"{STACK}-")]
        configs = [c.name for c in client.configs.list() if c.name.startswith(f"{STACK}-")]
    finally:
        client.close()
    assert left == [] and configs == [], (left, configs)
    return victim, leader
