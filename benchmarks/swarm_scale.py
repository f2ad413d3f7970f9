#!/usr/bin/env python3
"""A hundred tasks on the swarm lab (issue 28): the echo replica as a Swarm service over the
lab's 3 nodes, driven by a real `selfieless up --driver swarm`.

    flock /tmp/selfieless-heavy.lock python benchmarks/swarm_scale.py [--tasks 100]

- scale 3 -> 100: the time until the control plane counts all 100 ready, and until the gateway
  has all 100 in rotation;
- idle CPU of the control plane (the `up` process, every thread) and of the gateway per second,
  at 3 and at 100 tasks: the control plane's CPU per task per second is the difference over the
  97 tasks added (its probes and its watch of Swarm), and the total divided by 100 beside it;
- scale 100 -> 3 under a 4-client GET load through the gateway, held until Swarm reports only 3
  containers running: failed GETs (no answer or a 5xx), the time until the status converges at 3
  and until the other 97 containers have stopped.
No bar yet: it prints one `swarm-scale:` line.

The replica is `python3 -m selfieless.apps.echo` in an image `selfieless/echo:latest` built here
FROM acts:latest (which holds the whole selfieless package; the swarm driver runs an image's own
command, so the echo service needs its own image). The lab gets that image copied from this
host's engine (SWARM_LAB_IMAGES; its tarball cached under a folder of its own, so the lab's usual
image cache stays). The lab is brought up unless one is running, and taken down at the end if it
was brought up here; the stack is removed on any exit. `--budget` (default 540 s) bounds the whole
run: past it the run stops, cleans up and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "swarm"), str(REPO / "benchmarks")]

from scale import cpu_seconds  # noqa: E402  (schedstat: every thread, in ns)
from swarm_support import LAB_ENV, LAB_SCRIPT, GetLoad, Lab, SwarmUp, remove_stack  # noqa: E402
from swarm_failover import wait  # noqa: E402  (the same polling wait as the failover benchmark)

STACK = "slscale"
SERVICE = "echo"
IMAGE = "selfieless/echo:latest"
BASE_IMAGE = "acts:latest"
FROM = 3
CLIENTS = 4
# The image's environment (SELFIELESS_HOST=0.0.0.0, SELFIELESS_PORT=80) places the listener.
DOCKERFILE = (f"FROM {BASE_IMAGE}\n"
              f'CMD ["python3", "-m", "selfieless.apps.echo", "--service", "{SERVICE}"]\n')


def stack_document(tasks: int) -> dict:
    """One echo service spread over every node of the lab, probed each second like the scale
    stack's (process driver) replicas."""
    return {
        "name": STACK, "driver": "swarm", "network": STACK,
        "gateway": {"host": "127.0.0.1", "port": 8080},
        # The one gateway process beside `up`, whose CPU this measures (not one on every node).
        "swarm": {"gateway": "local"},
        "services": {SERVICE: {
            "image": IMAGE, "container_port": 80, "routes": [f"/{SERVICE}"],
            "placement": {"constraints": ["node.labels.selfieless.lab==true"],
                          "preferences": [{"spread": "node.labels.selfieless.lab.node"}]},
            "health": {"path": f"/{SERVICE}/_health", "interval": "1s", "timeout": "1s", "failure_threshold": 1},
            "replicas": {"initial": FROM, "min": 1, "max": tasks},
            "autoscale": {"policy": "none"},
            "drain_timeout": "2s",
        }},
    }


def build_image() -> None:
    """selfieless/echo:latest from acts:latest, after checking acts:latest has the echo app."""
    probe = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", BASE_IMAGE,
                            "-c", "import selfieless.apps.echo"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        raise SystemExit(f"cannot measure: {BASE_IMAGE} has no selfieless.apps.echo (an image built before it; "
                         f"rebuild with scripts/docker-prepare):\n{probe.stderr[-500:]}")
    subprocess.run(["docker", "build", "-q", "--network", "none", "-t", IMAGE, "-"], input=DOCKERFILE,
                   text=True, check=True, capture_output=True, timeout=120)


def idle_cpu(pids: list[int], seconds: float) -> list[float]:
    """CPU seconds per second of each of `pids` over `seconds` of idling."""
    c0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - t0
    return [(cpu_seconds(p) - c) / took for p, c in zip(pids, c0)]


def running_tasks(client) -> int:
    """The service's tasks whose container runs (or starts), as Swarm reports them."""
    tasks = client.api.tasks(filters={"service": f"{STACK}-{SERVICE}"})
    return sum(t["Status"]["State"] in ("running", "starting") for t in tasks)


def run(args, lab: Lab, up: SwarmUp, client) -> str:
    print(f"stack up at {FROM} tasks in {up.wait_converged(240):.1f} s", flush=True)
    st = up.status
    wait(lambda: len(up.in_rotation(SERVICE)) == FROM, 120, f"{FROM} tasks in rotation", 0.2)
    gw_pid = json.loads((up.state_dir / STACK / "gateway.json").read_text())["pid"]
    time.sleep(3)
    up3, gw3 = idle_cpu([up.proc.pid, gw_pid], args.idle)
    print(f"idle at {FROM}: up {up3 * 100:.1f} %, gateway {gw3 * 100:.1f} % of a core", flush=True)

    t0 = time.monotonic()
    up.scale(SERVICE, args.tasks)
    wait(lambda: len(up.ready(SERVICE)) == args.tasks, args.ready_timeout, f"{args.tasks} tasks ready", 0.5)
    ready_s = time.monotonic() - t0
    wait(lambda: len(up.in_rotation(SERVICE)) == args.tasks, 60, f"{args.tasks} tasks in rotation", 0.5)
    serving_s = time.monotonic() - t0
    per_node: dict[str, int] = {}
    for r in up.ready(SERVICE):
        per_node[r["host"]] = per_node.get(r["host"], 0) + 1
    print(f"3 -> {args.tasks}: ready {ready_s:.1f} s, in rotation {serving_s:.1f} s, per node {per_node}", flush=True)
    time.sleep(5)  # the starts' events settle
    upn, gwn = idle_cpu([up.proc.pid, gw_pid], args.idle)
    per_task = (upn - up3) / (args.tasks - FROM)
    print(f"idle at {args.tasks}: up {upn * 100:.1f} %, gateway {gwn * 100:.1f} % of a core", flush=True)

    with GetLoad(f"{up.gateway}/{SERVICE}/x", clients=CLIENTS) as load:
        time.sleep(2)
        t1 = time.monotonic()
        up.scale(SERVICE, FROM)
        wait(lambda: len(up.ready(SERVICE)) == FROM and (st() or {}).get("converged"), args.ready_timeout,
             f"convergence at {FROM} tasks", 0.5)
        down_s = time.monotonic() - t1
        # Swarm picks the tasks that end and stops their containers after the control plane has
        # counted them gone: the load goes on until only FROM containers run.
        wait(lambda: running_tasks(client) == FROM, 120, f"only {FROM} tasks running", 0.5)
        stopped_s = time.monotonic() - t1
        time.sleep(2)
    if load.failures:
        print(f"failed GETs: {load.failures[:5]}", flush=True)
    return (f"swarm-scale: {FROM} -> {args.tasks} tasks over {lab.env['SWARM_LAB_NODES']} nodes: all ready in "
            f"{ready_s:.1f} s, all in the gateway's rotation in {serving_s:.1f} s; control plane idle at "
            f"{args.tasks}: {upn * 100:.1f} % of a core ({up3 * 100:.1f} % at {FROM}) = {per_task * 1e6:.0f} µs "
            f"CPU per added task per second ({upn / args.tasks * 1e6:.0f} µs/task/s overall); gateway idle "
            f"{gwn * 100:.1f} % ({gw3 * 100:.1f} %); {args.tasks} -> {FROM} under a {CLIENTS}-client GET load: "
            f"converged in {down_s:.1f} s, the {args.tasks - FROM} tasks' containers stopped in {stopped_s:.1f} s, "
            f"failed GETs {len(load.failures)}/{load.total}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=100, help="tasks to scale to (default 100)")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idling per CPU figure (default 20)")
    ap.add_argument("--ready-timeout", type=float, default=300.0, help="seconds for a scale to finish (default 300)")
    ap.add_argument("--budget", type=int, default=540, help="seconds for the whole run (default 540)")
    args = ap.parse_args()
    if args.tasks <= FROM:
        ap.error(f"--tasks must be above {FROM}")
    if os.geteuid() != 0:
        print("cannot measure: the swarm lab needs root (scripts/swarm-lab)", file=sys.stderr)
        return 2

    def over_budget(*_):
        raise TimeoutError(f"over the budget of {args.budget} s")

    signal.signal(signal.SIGALRM, over_budget)
    signal.signal(signal.SIGTERM, over_budget)
    signal.alarm(args.budget)
    build_image()
    # Only the echo image goes to the nodes, through a tarball cache of its own.
    os.environ["SWARM_LAB_IMAGES"] = IMAGE
    os.environ["SELFIELESS_DOCKER_CACHE"] = os.environ.get("SELFIELESS_DOCKER_CACHE", "/var/cache/selfieless-docker") + "/swarm-scale"
    lab = Lab()
    tmp = Path(tempfile.mkdtemp(prefix="swarm-scale-"))
    stack = tmp / "stack.yaml"
    stack.write_text(yaml.safe_dump(stack_document(args.tasks), sort_keys=False))
    up = None
    client = None
    # Known before `up`: a lab this run half built (an `up` that failed) is taken down too.
    was_up = LAB_ENV.exists() and subprocess.run([str(LAB_SCRIPT), "status"], capture_output=True).returncode == 0
    try:
        t0 = time.monotonic()
        lab.started_here = not was_up
        lab.up()
        print(f"lab up in {time.monotonic() - t0:.0f} s ({'built here' if lab.started_here else 'was up'})", flush=True)
        client = lab.client()
        up = SwarmUp(stack, tmp / "state", lab.manager, local_gateway=True).start()
        print(run(args, lab, up, client))
        return 0
    except Exception as e:
        log = up.log() if up is not None else ""
        print(f"cannot measure: {type(e).__name__}: {e}\n{log}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        if up is not None:
            up.stop_quietly()
        if client is not None:
            remove_stack(client, STACK)
            client.close()
        lab.down()


if __name__ == "__main__":
    sys.exit(main())
