#!/usr/bin/env python3
"""Rolling updates, rollback and cold start from zero, measured under load.

Runs the orchestrator in-process (gateway + driver + control plane, as `selfieless up` does) with
real acts replicas and 4 clients sending GET /api/v1/categories and POST /api/v1/categories (a
write answered 201) through the gateway, then:

- rolls 3 replicas to a new version (a changed environment): time, failed requests, p99 latency
  during the rollout against p99 just before it, and every category answered 201 read back after;
- rolls to a broken version (exits at start): time until rolled back, failed requests;
- scale to zero, then one request: time from the held request to its answer.

Bars (README): failed 0; p99 during <= 2x before; cold start <= 1 s (process, preload) / 2 s docker.
The docker run needs the images of scripts/docker-prepare (acts, selfieless/mariadb); its broken
version is acts:latest with a CMD that exits, built offline and removed after.
One summary line per figure, e.g.
`rolling update (process): 3 replicas in 4.1 s, failed 0/2310, p99 12 ms (before 9 ms)`.

    flock /tmp/selfieless-heavy.lock python benchmarks/rollout.py [--driver process|docker]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import sys
import tempfile
import time

import httpx

from selfieless.gateway import new_event_loop
from selfieless.orchestrator.runner import Runner
from selfieless.orchestrator.rollout_exec import roll
from selfieless.orchestrator.stack import RatePolicy, parse_stack

FIRST_PORT = 8000


def acts_stack(driver: str, **extra) -> object:
    service = {
        "preload": driver == "process",
        "host_ports": f"{FIRST_PORT}-{FIRST_PORT + 9}",
        "routes": ["/api/v1"],
        "health": {"interval": 1.0, "timeout": 1.0, "start_grace": 20},
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


class Load:
    """4 clients alternating GET and POST; latencies per phase, failures, names answered 201."""

    def __init__(self, base: str, concurrency: int = 4):
        self.base, self.concurrency = base, concurrency
        self.lat: dict[str, list[float]] = {}
        self.phase = "before"
        self.ok = 0
        self.failed: list[str] = []
        self.created: list[str] = []
        self._stop = asyncio.Event()
        self._n = itertools.count()

    async def _worker(self, w: int):
        async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
            while not self._stop.is_set():
                i = next(self._n)
                t0 = time.perf_counter()
                try:
                    if i % 2:
                        name = f"rollout-{w}-{i}"
                        r = await c.post(self.base + "/api/v1/categories", json=[name])
                        good = r.status_code == 201
                        if good:
                            self.created.append(name)
                    else:
                        r = await c.get(self.base + "/api/v1/categories")
                        good = r.status_code in (200, 204)
                    if good:
                        self.ok += 1
                    else:
                        self.failed.append(f"{r.status_code} {r.text[:80]}")
                except httpx.HTTPError as e:
                    self.failed.append(repr(e))
                self.lat.setdefault(self.phase, []).append(time.perf_counter() - t0)

    def start(self):
        self._tasks = [asyncio.create_task(self._worker(w)) for w in range(self.concurrency)]
        return self

    async def stop(self):
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def p99(self, phase: str) -> float:
        xs = sorted(self.lat.get(phase, [0.0]))
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000

    def count(self, *phases: str) -> int:
        return sum(len(self.lat.get(p, [])) for p in phases)


async def main(args) -> int:
    driver = args.driver
    stack = acts_stack(driver)
    ok = True
    with tempfile.TemporaryDirectory() as state:
        runner = Runner(signals=False)  # the start / stop `up` uses (Ctrl-C stays ours)
        system = await runner.start(stack, state)
        orch = system.orchestrator
        base = f"http://127.0.0.1:{system.gateway.port}"
        try:
            await orch.wait_ready(120)
            # Warm-up (not counted): the first requests open database connections and fill caches.
            load = Load(base)
            load.phase = "warmup"
            load.start()
            await asyncio.sleep(args.warmup)
            load.phase = "before"
            await asyncio.sleep(args.before)
            failed_before = len(load.failed)
            load.phase = "during"
            new = stack.services["acts"].model_copy(update={"environment": {
                **stack.services["acts"].environment, "ROLLOUT_VERSION": "2"}})
            t0 = time.monotonic()
            result = await roll(orch, "acts", new, reason="benchmark", timeout=300)
            took = time.monotonic() - t0
            load.phase = "after"
            await asyncio.sleep(0.5)
            n_during = load.count("during")
            failed = len(load.failed) - failed_before
            print(f"rolling update ({driver}): 3 replicas in {took:.1f} s, failed {failed}/{n_during}, "
                  f"p99 {load.p99('during'):.0f} ms (before {load.p99('before'):.0f} ms)"
                  + ("" if result.outcome == "complete" else f" [{result.outcome}: {result.reason}]"))
            ok &= result.outcome == "complete" and failed == 0 and not load.failed
            ok &= load.p99("during") <= 2 * load.p99("before")

            # Broken version: exits at start.
            load.phase = "broken"
            f0 = len(load.failed)
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
            failed = len(load.failed) - f0
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
    args = p.parse_args()
    with asyncio.Runner(loop_factory=new_event_loop) as loop:
        sys.exit(loop.run(main(args)))
