#!/usr/bin/env python3
"""Failover on a real multi-node swarm (the lab, scripts/swarm-lab), under a 4-client GET load
through the gateway of `selfieless up --driver swarm`:

- task-kill: one acts task's container killed on its node (`docker kill`): how long until a new
  task is in rotation (Swarm's restart delay, the container start, our first probe);
- node-loss: the node of one acts task cut off the network (`scripts/swarm-lab cut 3`): how long
  until its tasks are out of the gateway's rotation (withdrawn as stalled, or unhealthy), until
  the control plane's probe calls them unhealthy, and until the service serves with its count
  again (Swarm reschedules them after it declares the node down);
- load-step: acts scaled 1 -> 2 under load, with every node up for a while: how long until the
  first new task serves (this is what follows an autoscaler decision; the decision itself is
  measured by benchmarks/failover.py);
- rejoin: once the cut node is back, acts scaled 3 -> 5: whether a new task lands on the node that
  came back (the spread preference would put the first there, but Swarm's scheduler still
  counts the tasks it moved off that node) and how long until the first serves. No bar: for
  tens of seconds after a heal, Docker Engine's overlay network may not carry a new task's
  connections to its database (README "Several machines");
- gateway-kill: the gateway container on node 2 killed (every node runs one, a global Swarm
  service) under a GET load through the other nodes' gateways: the failed GETs through those,
  and how long until node 2's gateway answers a GET again (Swarm's restart, the gateway's
  start, the control plane sending it the routes and pools);
- manager-loss: on the lab promoted to three managers, a stack deployed by `up --driver swarm
  --detach` (the control plane a Swarm service), GETs and uploads sent to the lab's floating IP,
  and the node that runs the control plane and holds the floating IP cut off: how long until the
  floating IP answers again and until another control plane holds the lease (it acts from then
  on), the failed GETs beside those in flight on that node, and the acknowledged uploads lost;
  each trial twice: the control plane on a manager that is not the Raft leader (whose node holds
  the data), then on the Raft leader's node (the data on another), where Swarm elects a new
  leader before it notices the node is gone;
and the failed GETs (no answer, or a 5xx) in each.

It brings the lab up when none is running (and takes down what it brought up), exits non-zero
when it could not measure, and prints one summary line per figure:

    flock /tmp/selfieless-heavy.lock python benchmarks/swarm_failover.py [--trials 3]

Each figure is the median of the trials with the worst trial in parentheses, and the failed GETs
are the sum over the trials with the worst single trial beside them: a fault that fails GETs one
run in five must show, not drown in a median.

The task-kill, load-step and gateway-kill trials come first, then the node-loss and rejoin trials,
then the manager-loss trials (each with a stack of its own). Bars (README "Several machines"):
replacement serving <= 3 s; node out of rotation <= 1.5 s; restored <= 20 s; failed GETs 0; first
new task serving <= 3 s; a killed gateway serving again <= 3 s with 0 failed GETs through the
others; a lost manager: floating IP back <= 3 s, a control plane acting <= 30 s, failed GETs no
more than were in flight on it, uploads lost 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The lab wrapper, the `selfieless up` subprocess and the GET load are the swarm tests' helpers.
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "swarm")]

from detached_support import DetachedStack, deploy_on_leader, make_detached_stack_file, manager_loss  # noqa: E402
from swarm_support import (GetLoad, Lab, SwarmUp, gateway_kill, lab_unavailable, make_stack_file,  # noqa: E402
                           remove_stack)

BARS = {"replace": 3.0, "out_of_rotation": 1.5, "restored": 20.0, "scale_out": 3.0, "gateway": 3.0,
        "vip": 3.0, "acting": 30.0}
STACK = "slbench"
CLIENTS = 4


def wait(pred, timeout: float, what: str, step: float = 0.02) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no {what} within {timeout:g} s")
        time.sleep(step)
    return time.monotonic() - t0


def ready_ids(up: SwarmUp) -> set[str]:
    return {r["id"] for r in up.ready("acts")}


def settle(up: SwarmUp, n: int) -> None:
    up.scale("acts", n)
    wait(lambda: len(up.ready("acts")) == n and up.status()["converged"], 120, f"{n} acts tasks ready", 0.1)


def task_kill(up: SwarmUp, lab: Lab) -> tuple[float, int, int]:
    import docker

    settle(up, 3)
    # A task on node 2: not the manager's (its engine also runs the database), and not on node 3,
    # which node_loss cuts and rejoin watches: Swarm's scheduler avoids, for 5 minutes, a node
    # where 5 tasks of a service failed.
    on_node_2 = [r for r in up.ready("acts") if lab.node_of(r["host"]) == 2]
    if not on_node_2:
        raise RuntimeError("no acts task on node 2 to kill")
    victim = on_node_2[0]
    task_id = victim["detail"].split()[1]
    api = lab.client().api
    [task] = [t for t in api.tasks(filters={"service": f"{STACK}-acts"}) if t["ID"].startswith(task_id)]
    container = task["Status"]["ContainerStatus"]["ContainerID"]
    before = ready_ids(up)
    node = docker.DockerClient(base_url=lab.node_socket(2), timeout=30)
    with GetLoad(f"{up.gateway}/api/v1/acts/count", clients=CLIENTS) as load:
        time.sleep(1.0)
        t0 = time.monotonic()
        node.containers.get(container).kill()
        wait(lambda: len(ready_ids(up) - before) >= 1, 60, "replacement task in rotation")
        took = time.monotonic() - t0
        time.sleep(1.0)
    node.close()
    return took, len(load.failures), load.total


def node_loss(up: SwarmUp, lab: Lab) -> tuple[float, float, int, int, float]:
    settle(up, 1)
    settle(up, 3)  # from one task, the spread preference puts one on each node
    lost = lab.address(3)
    if lost not in {r["host"] for r in up.ready("acts")}:
        raise RuntimeError("no acts task on node 3 to lose")
    try:
        with GetLoad(f"{up.gateway}/api/v1/acts/count", clients=CLIENTS) as load:
            time.sleep(1.0)
            lab.cut(3)
            t0 = time.monotonic()
            out = wait(lambda: lost not in {r["host"] for r in up.in_rotation("acts")}, 30, "node out of rotation")
            wait(lambda: lost not in {r["host"] for r in up.ready("acts")}, 30, "node's tasks unhealthy")
            unhealthy = time.monotonic() - t0
            restored = unhealthy + wait(lambda: len(up.ready("acts")) == 3, 120, "3 acts tasks again", 0.1)
            time.sleep(1.0)
    finally:
        lab.heal(3)
    wait(lambda: all(n["Status"]["State"] == "ready" for n in lab.client().api.nodes()), 60, "node 3 ready", 0.2)
    return out, restored, len(load.failures), load.total, unhealthy


def rejoin(up: SwarmUp, lab: Lab) -> tuple[float, bool, int, int]:
    """After node_loss, once the tasks Swarm moved off the node that came back have stopped there."""
    api = lab.client().api
    [back] = [n["ID"] for n in api.nodes() if n["Status"].get("Addr") == lab.address(3)]
    wait(lambda: not [t for t in api.tasks(filters={"service": f"{STACK}-acts", "node": back})
                      if t["Status"]["State"] in ("running", "starting")], 60, "the moved tasks stopped on node 3", 0.2)
    before = ready_ids(up)
    with GetLoad(f"{up.gateway}/api/v1/acts/count", clients=CLIENTS) as load:
        t0 = time.monotonic()
        up.scale("acts", len(before) + 2)
        wait(lambda: len(ready_ids(up) - before) >= 1, 120, "a new acts task in rotation after the heal")
        took = time.monotonic() - t0
        wait(lambda: len(ready_ids(up) - before) >= 2, 120, "two new acts tasks in rotation after the heal")
        new = [r for r in up.ready("acts") if r["id"] not in before]
        time.sleep(1.0)
    return took, lab.address(3) in {r["host"] for r in new}, len(load.failures), load.total


def load_step(up: SwarmUp) -> tuple[float, int, int]:
    settle(up, 1)
    before = ready_ids(up)
    with GetLoad(f"{up.gateway}/api/v1/acts/count", clients=CLIENTS) as load:
        time.sleep(1.0)
        t0 = time.monotonic()
        up.scale("acts", 2)
        wait(lambda: len(ready_ids(up) - before) >= 1, 60, "a new acts task in rotation")
        took = time.monotonic() - t0
        time.sleep(1.0)
    return took, len(load.failures), load.total


def gateway_trial(up: SwarmUp, lab: Lab) -> tuple[float, int, int]:
    settle(up, 3)
    got = gateway_kill(up, lab, STACK, victim=2, clients=CLIENTS // 2)
    if not got["replaced"]:
        raise RuntimeError("Swarm did not start another gateway container on node 2")
    # Attached again (the status says so) before the next trial kills anything.
    wait(lambda: all(g["attached"] and g["answering"] for g in up.status()["gateways"]), 60, "every gateway attached", 0.1)
    return got["serving"], len(got["failures"]), got["total"]


def manager_loss_trial(lab: Lab, tmp: Path, i: int, leader: bool = False) -> dict:
    """One manager-loss trial with a detached stack of its own (removed after): the control plane
    on another manager than the Raft leader (whose node holds the data), or with `leader` on the
    Raft leader's node (the data on another)."""
    name = f"slbml{'l' if leader else ''}{i}"
    if leader:
        stack = deploy_on_leader(lab, tmp / f"{name}.yaml", name)
    else:
        stack = DetachedStack(lab, make_detached_stack_file(tmp / f"{name}.yaml", name), name)
        stack.deploy()
    try:
        wait(lambda: stack.control_node(1) is not None, 180, "control plane task running", 0.5)
        node = stack.control_node(1)
        wait(lambda: (stack.status(node) or {}).get("converged"), 300, "detached stack converged", 0.5)
        return manager_loss(lab, stack, clients=CLIENTS)
    finally:
        stack.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=3, help="rounds of each fault (default 3)")
    ap.add_argument("--only", choices=["gateway-kill", "node-loss", "manager-loss"],
                    help="measure this fault only (node-loss: with rejoin) and print its row")
    args = ap.parse_args()
    why = lab_unavailable()
    if why is not None:
        print(f"cannot measure: {why}", file=sys.stderr)
        return 2
    lab = Lab()
    lab.up()
    tmp = Path(tempfile.mkdtemp(prefix="swarm-failover-"))
    kills, steps, gateways, losses, rejoins, managers, leaders = [], [], [], [], [], [], []
    try:
        if args.only != "manager-loss":
            measure_one_stack(lab, tmp, args, kills, steps, gateways, losses, rejoins)
        if args.only in (None, "manager-loss"):
            lab.rebuild(managers=3)
            try:
                for i in range(args.trials):
                    managers.append(manager_loss_trial(lab, tmp, i))
                    print(f"  trial {i + 1}: manager-loss {managers[-1]}", flush=True)
                    leaders.append(manager_loss_trial(lab, tmp, i, leader=True))
                    print(f"  trial {i + 1}: manager-loss (the Raft leader's node) {leaders[-1]}", flush=True)
            finally:
                lab.run("vip", "stop")
    except Exception as e:
        print(f"cannot measure: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        lab.down()
    print_rows(args.only, kills, steps, gateways, losses, rejoins, managers, leaders)
    return 0


def measure_one_stack(lab: Lab, tmp: Path, args, kills, steps, gateways, losses, rejoins) -> None:
    """The trials that share one `selfieless up --driver swarm` (all but manager-loss)."""
    up = SwarmUp(make_stack_file(tmp / "stack.yaml", STACK), tmp / "state", lab.manager).start()
    client = lab.client()
    try:
        print(f"stack up in {up.wait_converged(300):.1f} s (lab of {lab.env['SWARM_LAB_NODES']} nodes)", flush=True)
        # Every node up since the lab started for the first two figures: what a heal leaves behind
        # (see rejoin) is measured on its own.
        for i in range(0 if args.only == "node-loss" else args.trials):
            if not args.only:
                kills.append(task_kill(up, lab))
                print(f"  trial {i + 1}: task-kill {kills[-1]}", flush=True)
                steps.append(load_step(up))
                print(f"  trial {i + 1}: load-step {steps[-1]}", flush=True)
            gateways.append(gateway_trial(up, lab))
            print(f"  trial {i + 1}: gateway-kill {gateways[-1]}", flush=True)
        for i in range(0 if args.only == "gateway-kill" else args.trials):
            losses.append(node_loss(up, lab))
            print(f"  trial {i + 1}: node-loss {losses[-1]}", flush=True)
            rejoins.append(rejoin(up, lab))
            print(f"  trial {i + 1}: rejoin {rejoins[-1]}", flush=True)
    except Exception:
        print(up.log(), file=sys.stderr)
        raise
    finally:
        up.stop_quietly()
        remove_stack(client, STACK)
        client.close()


def print_rows(only: str | None, kills, steps, gateways, losses, rejoins, managers, leaders) -> None:
    def fig(xs):
        """Median, and the worst when there were several trials."""
        text = f"{statistics.median(xs):.1f} s"
        return text + (f" (max {max(xs):.1f} s)" if len(xs) > 1 else "")

    def failed(trials, bad: int, total: int) -> str:
        """Failed GETs over all the trials, and in the worst trial when there were several."""
        text = f"failed GETs {sum(t[bad] for t in trials)}/{sum(t[total] for t in trials)}"
        if len(trials) > 1:
            worst = max(trials, key=lambda t: (t[bad], -t[total]))
            text += f" (worst trial {worst[bad]}/{worst[total]})"
        return text

    rows = {
        "task-kill": lambda: f"task-kill: replacement serving {fig([k[0] for k in kills])} "
                             f"[bar <= {BARS['replace']:g} s], {failed(kills, 1, 2)}",
        "node-loss": lambda: f"node-loss: out of rotation {fig([x[0] for x in losses])} "
                             f"[bar <= {BARS['out_of_rotation']:g} s], unhealthy {fig([x[4] for x in losses])}, "
                             f"restored {fig([x[1] for x in losses])} [bar <= {BARS['restored']:g} s], "
                             f"{failed(losses, 2, 3)}",
        "load-step": lambda: f"load-step: first new task serving {fig([s[0] for s in steps])} "
                             f"[bar <= {BARS['scale_out']:g} s; from the scale decision], {failed(steps, 1, 2)}",
        "gateway-kill": lambda: f"gateway-kill: replaced serving {fig([g[0] for g in gateways])} "
                                f"[bar <= {BARS['gateway']:g} s], {failed(gateways, 1, 2)} through the other "
                                f"nodes' gateways [bar 0]",
        "rejoin": lambda: f"rejoin: first new task after the heal serving {fig([r[0] for r in rejoins])} [no bar], "
                          f"one of two on the node that came back in {sum(r[1] for r in rejoins)}/{len(rejoins)}, "
                          f"{failed(rejoins, 2, 3)}",
        "manager-loss": lambda: manager_row("manager-loss", managers),
        "manager-loss-leader": lambda: manager_row("manager-loss (the Raft leader's node)", leaders),
    }

    def manager_row(title: str, trials: list[dict]) -> str:
        return (f"{title}: floating IP back {fig([m['vip_back'] for m in trials])} [bar <= {BARS['vip']:g} s], "
                f"control plane acting {fig([m['acting'] for m in trials])} [bar <= {BARS['acting']:g} s], "
                f"failed GETs {sum(m['failed_gets'] for m in trials)}/{sum(m['gets'] for m in trials)} "
                f"(in flight on the node: at most {sum(m['in_flight'] for m in trials)}), "
                f"uploads lost {sum(m['lost'] for m in trials)}/{sum(m['uploads'] for m in trials)} [bar 0]")

    wanted = {None: list(rows), "gateway-kill": ["gateway-kill"], "node-loss": ["node-loss", "rejoin"],
              "manager-loss": ["manager-loss", "manager-loss-leader"]}[only]
    for name in wanted:
        print(rows[name]())


if __name__ == "__main__":
    sys.exit(main())
