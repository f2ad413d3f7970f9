#!/usr/bin/env python3
"""Rolling updates, rollback and cold start from zero, measured under load.

Runs the orchestrator in-process (gateway + driver + control plane, as `selfieless up` does) with
real acts replicas and 4 clients sending GET /api/v1/categories and POST /api/v1/categories (a
write answered 201) through the gateway, then:

- rolls 3 replicas to a new version (a changed environment): time, failed requests, p99 latency
  during the rollout against p99 just before it, and every category answered 201 read back after;
- rolls to a broken version (exits at start): time until rolled back, failed requests;
- scale to zero, then one request: time from the held request to its answer.

New acts replicas are warmed up before they join (health.warmup: 8 GETs of the categories);
`--no-warmup` measures without it, and `--compare PAIRS` runs only rollouts with it off and on,
alternating, and prints p99 during / before for each (pooled, and per rollout). The tail line says
where the slowest requests of the rollout fall: within 2 s after a replica joined (cold), while an
old one drained, while a new one started, or elsewhere.

Bars (README): failed 0; p99 during <= 2x before; cold start <= 1 s (process, preload) / 2 s docker.
The docker run needs the images of scripts/docker-prepare (acts, selfieless/mariadb); its broken
version is acts:latest with a CMD that exits, built offline and removed after.
One summary line per figure, e.g.
`rolling update (process): 3 replicas in 4.1 s, failed 0/2310, p99 12 ms (before 9 ms)`.

    flock /tmp/selfieless-heavy.lock python benchmarks/rollout.py [--driver process|docker] [--compare 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time

from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from selfieless.gateway import new_event_loop
from selfieless.orchestrator.runner import Runner
from selfieless.orchestrator.rollout_exec import roll
from selfieless.orchestrator.stack import RatePolicy, parse_stack
from support.loads import WriteLoad  # the rollout tests' GET + POST load  # noqa: E402

FIRST_PORT = 8000
# The warm-up of a new acts replica (health.warmup): reads of the categories, the load's GET.
WARMUP = {"warmup": 8, "warmup_path": "/api/v1/categories"}


def _p99(xs: list[float]) -> float:
    xs = sorted(xs) or [0.0]
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000


def acts_stack(driver: str, warmup: bool = True, **extra) -> object:
    service = {
        "preload": driver == "process",
        "host_ports": f"{FIRST_PORT}-{FIRST_PORT + 9}",
        "routes": ["/api/v1"],
        "health": {"interval": 1.0, "timeout": 1.0, "start_grace": 20, **(WARMUP if warmup else {})},
        "replicas": {"initial": 3, "min": 1, "max": 10},
        "autoscale": {"policy": "none"},
        "drain_timeout": 5,
        "update": {"monitor": 1},
        "environment": {"ROLLOUT_VERSION": "1"},
        **extra,
    }
    data = {
        "name": "bench-rollout", "driver": driver,
        "gateway": {"host": "127.0.0.1", "port": 0, "limits": {"no_replica_wait": 20}},
        "variables": {"database_url": "sqlite:///{state_dir}/acts.db"},
        "services": {"acts": service},
    }
    if driver == "docker":
        # Old and new containers share one database (the deployment's MariaDB container), so a
        # write answered 201 by a replica that is later replaced must still be there.
        data["network"] = "bench-rollout"
        data["dependencies"] = {"db": {
            "image": "selfieless/mariadb:latest", "container_port": 3306, "host_port": 13399,
            "health": {"interval": 1, "timeout": 1, "failure_threshold": 3, "start_grace": 120},
            "stop_timeout": 10}}
        service.update(image="acts:latest", container_port=80, depends_on=["db"], environment={
            "SELFIELESS_DATABASE_URL": "mysql://selfieless:selfieless@bench-rollout-db:3306/acts",
            "ROLLOUT_VERSION": "1"})
    else:
        service["command"] = ["python", "-m", "selfieless.apps.acts", "--port", "{port}",
                              "--database-url", "{database_url}", "--users-url", "{gateway_url}"]
    return parse_stack(data)


BROKEN_TAG = "selfieless-bench/acts-broken:latest"


def build_broken_image() -> str:
    """acts:latest with a CMD that exits at once, built offline under BROKEN_TAG; its id."""
    import docker

    client = docker.from_env(timeout=120)
    dockerfile = 'FROM acts:latest\nCMD ["python3", "-c", "raise SystemExit(3)"]\n'
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=BROKEN_TAG, rm=True,
                                   network_mode="none")
    client.close()
    return image.id


def remove_image(image_id: str) -> None:
    import docker

    client = docker.from_env(timeout=120)
    try:
        client.images.remove(image_id, force=True)
    except docker.errors.APIError:
        pass
    client.close()


def tail_causes(samples: list[tuple[float, float]], events: list[tuple[float, str, str, str]],
                threshold: float, cold: float = 2.0) -> dict[str, int]:
    """Where the slow requests of a rollout fall: each (answered at, seconds) over `threshold` is
    put in the first window it overlaps, in this order: `cold` (a replica joined the pool less
    than `cold` s before), `draining` (an old replica was being drained), `starting` (a new
    replica was starting, not yet in the pool), else `other`. `events`: (ts, kind, replica,
    reason) of the rollout."""
    started, joined, drains = {}, [], []
    for ts, kind, rid, reason in events:
        if kind == "start":
            started[rid] = ts
        elif kind == "ready" and rid in started:
            joined.append((started.pop(rid), ts))
        elif kind == "drained":
            took = float(reason.split("after ", 1)[1].split(" s", 1)[0]) if "after " in reason else 0.0
            drains.append((ts - took, ts))
    starting = [(a, b) for a, b in joined] + [(a, float("inf")) for a in started.values()]
    windows = {"cold": [(b, b + cold) for _, b in joined], "draining": drains, "starting": starting}
    out = {"cold": 0, "draining": 0, "starting": 0, "other": 0}
    for end, took in samples:
        if took <= threshold:
            continue
        begin = end - took
        for name, spans in windows.items():
            if any(begin < hi and end > lo for lo, hi in spans):
                out[name] += 1
                break
        else:
            out["other"] += 1
    return out


async def compare_warmup(orch, stack, load: WriteLoad, driver: str, pairs: int, before: float) -> bool:
    """Rollouts with the warm-up off and on, alternating (off, on, on, off, ...), each measured
    against the `before` seconds just ahead of it: p99 during / p99 before per rollout."""
    acts = stack.services["acts"]
    ratios: dict[str, list[str]] = {"off": [], "on": []}
    failed: dict[str, list[int]] = {"off": [0, 0], "on": [0, 0]}
    order = [v for i in range(pairs) for v in (("off", "on") if i % 2 == 0 else ("on", "off"))]
    ok = True
    for i, variant in enumerate(order):
        health = acts.health.model_copy(update=WARMUP if variant == "on" else {"warmup": 0})
        new = acts.model_copy(update={"health": health,
                                      "environment": {**acts.environment, "ROLLOUT_VERSION": f"c{i}"}})
        load.phase = f"before-{i}"
        await asyncio.sleep(before)
        f0 = len(load.failures)
        load.phase = f"during-{i}"
        result = await roll(orch, "acts", new, reason=f"benchmark warm-up {variant}", timeout=300)
        load.phase = f"after-{i}"
        ok &= result.outcome == "complete"
        failed[variant][0] += len(load.failures) - f0
        failed[variant][1] += load.count(f"during-{i}")
        ratios[variant].append(f"{load.p99(f'during-{i}') / load.p99(f'before-{i}'):.1f}x "
                               f"({load.p99(f'during-{i}'):.0f}/{load.p99(f'before-{i}'):.0f} ms)")
    for variant in ("off", "on"):
        runs = [i for i, v in enumerate(order) if v == variant]
        during = _p99([x for i in runs for x in load.lat.get(f"during-{i}", [])])
        before_ = _p99([x for i in runs for x in load.lat.get(f"before-{i}", [])])
        print(f"warm-up {variant} ({driver}): p99 during/before {during / before_:.1f}x pooled "
              f"({during:.0f}/{before_:.0f} ms); per rollout {', '.join(ratios[variant])}; "
              f"failed {failed[variant][0]}/{failed[variant][1]}")
    return ok and not load.failures


async def main(args) -> int:
    driver = args.driver
    stack = acts_stack(driver, warmup=not args.no_warmup)
    ok = True
    with tempfile.TemporaryDirectory() as state:
        runner = Runner(signals=False)  # the start / stop `up` uses (Ctrl-C stays ours)
        system = await runner.start(stack, state)
        orch = system.orchestrator
        base = f"http://127.0.0.1:{system.gateway.port}"
        try:
            await orch.wait_converged(120)
            # Warm-up (not counted): the first requests open database connections and fill caches.
            load = WriteLoad(base, pause=0, prefix="rollout")
            load.phase = "warmup"
            load.start()
            await asyncio.sleep(args.warmup)
            if args.compare:
                ok = await compare_warmup(orch, stack, load, driver, args.compare, args.before)
                await load.stop()
                return 0 if ok else 1
            load.phase = "before"
            await asyncio.sleep(args.before)
            failed_before = len(load.failures)
            load.phase = "during"
            new = stack.services["acts"].model_copy(update={"environment": {
                **stack.services["acts"].environment, "ROLLOUT_VERSION": "2"}})
            t0 = time.monotonic()
            cursor = orch.events.last_id
            result = await roll(orch, "acts", new, reason="benchmark", timeout=300)
            took = time.monotonic() - t0
            load.phase = "after"
            await asyncio.sleep(0.5)
            n_during = load.count("during")
            failed = len(load.failures) - failed_before
            print(f"rolling update ({driver}): 3 replicas in {took:.1f} s, failed {failed}/{n_during}, "
                  f"p99 {load.p99('during'):.0f} ms (before {load.p99('before'):.0f} ms)"
                  + ("" if result.outcome == "complete" else f" [{result.outcome}: {result.reason}]"))
            threshold = 2 * load.p99("before") / 1000
            causes = tail_causes([(t, d) for t, d, ph in load.samples if ph == "during"],
                                 [(e.ts, e.kind, e.replica, e.reason) for e in orch.events.since(cursor)
                                  if e.service == "acts"], threshold)
            print(f"tail ({driver}): requests over 2x the p99 before ({threshold * 1000:.0f} ms): "
                  + ", ".join(f"{n} {k}" for k, n in causes.items()))
            top = tail_causes([(t, d) for t, d, ph in load.samples if ph == "during"],
                              [(e.ts, e.kind, e.replica, e.reason) for e in orch.events.since(cursor)
                               if e.service == "acts"], load.p99("during") / 1000 * 0.999)
            print(f"tail ({driver}): the slowest 1% during the rollout: " + ", ".join(f"{n} {k}" for k, n in top.items()))
            ok &= result.outcome == "complete" and failed == 0 and not load.failures
            ok &= load.p99("during") <= 2 * load.p99("before")

            # Broken version: exits at start.
            load.phase = "broken"
            f0 = len(load.failures)
            if driver == "process":
                broken = new.model_copy(update={"command": [sys.executable, "-c", "raise SystemExit(3)"]})
            else:
                broken_id = await asyncio.to_thread(build_broken_image)
                broken = new.model_copy(update={"image": BROKEN_TAG})
            t0 = time.monotonic()
            try:
                result = await roll(orch, "acts", broken, reason="benchmark broken", timeout=300)
            finally:
                took = time.monotonic() - t0
                if driver == "docker":
                    await asyncio.to_thread(remove_image, broken_id)
            failed = len(load.failures) - f0
            print(f"broken version ({driver}): {result.outcome.replace('_', ' ')} in {took:.1f} s, "
                  f"failed {failed}/{load.count('broken')}")
            ok &= result.outcome == "rolled_back" and failed == 0
            await load.stop()
            async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
                present = (await c.get(base + "/api/v1/categories")).json()
            missing = [n for n in load.created if n not in present]
            print(f"writes ({driver}): {len(load.created)} answered 201, {len(missing)} missing after")
            ok &= not missing

            # Cold start from zero: the rate policy with min 0, scaled to 0, then one held request.
            orch.services["acts"].spec = orch.services["acts"].spec.model_copy(update={
                "replicas": stack.services["acts"].replicas.model_copy(update={"min": 0}),
                "autoscale": RatePolicy(policy="rate", target_rps_per_replica=1000)})
            await orch.scale("acts", 0, reason="benchmark: to zero")
            while orch.services["acts"].replicas:
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
                t0 = time.monotonic()
                r = await c.get(base + "/api/v1/categories")
                took = time.monotonic() - t0
            bar = 1.0 if driver == "process" else 2.0
            print(f"cold start from zero ({driver}): {took:.2f} s to the first answer ({r.status_code}), "
                  f"failed {0 if r.status_code in (200, 204) else 1}/1 (bar {bar:g} s)")
            ok &= r.status_code in (200, 204)
        finally:
            await runner.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--driver", choices=["process", "docker"], default="process")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (not counted)")
    p.add_argument("--before", type=float, default=5.0, help="seconds of load measured before the rollout")
    p.add_argument("--no-warmup", action="store_true", help="new replicas join without the warm-up (as before)")
    p.add_argument("--compare", type=int, default=0, metavar="PAIRS",
                   help="only compare rollouts with the warm-up (health.warmup) off and on, PAIRS of each")
    args = p.parse_args()
    with asyncio.Runner(loop_factory=new_event_loop) as loop:
        sys.exit(loop.run(main(args)))
