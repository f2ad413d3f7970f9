#!/usr/bin/env python3
"""Benchmark: the Docker stack end to end, two builds of the images side by side (not a test).

    flock /tmp/selfieless-heavy.lock python benchmarks/docker_stack.py \\
        --build e2f98a1:before --build HEAD:after

Each `--build REF:TAG` builds users:TAG and acts:TAG from that commit's tree, exactly as
scripts/docker-prepare builds :latest (the project wheel of that tree, the dependency wheels of
--deps-wheelhouse, base selfieless/base:bookworm, `docker build --network none`); `--tags`
names images built earlier instead. For each tag a stack of its own comes up with
`selfieless up --driver docker`: the bundled selfieless-docker.yaml renamed (own network, MariaDB
container and volume, free ports), the images swapped for that tag, acts fixed at 3 replicas,
no web service. All stacks run at once; wrk then loads each gateway in turn, alternating the
stacks every round (--rounds), with
    GET /api/v1/categories  (5 categories, 20 acts)
    POST /api/v1/acts       (uploads with fresh actIds: the username check, the insert, the count)
and the medians of requests/s are printed with the failures wrk saw (non-2xx answers, socket
errors). Everything comes down at the end, even on failure: `selfieless down --volumes` for each
stack, and the images this run built (unless --keep-images).

Needs root or the docker group, wrk, the base images and a wheelhouse from scripts/docker-prepare.
The machine may be shared: run it under the benchmark lock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from app_throughput import LISTED, N_ACTS, N_CATEGORIES, UPLOAD_LUA, lua_string, run_wrk, sha1  # noqa: E402
from selfieless.orchestrator.stack import BUNDLED_DOCKER_STACK  # noqa: E402
from support.ports import free_port, free_port_range  # noqa: E402
from support.up_process import UpProcess  # noqa: E402

BASE_IMAGE = "selfieless/base:bookworm"
SERVICES = ("users", "acts")
USER = "bench"


def sh(*cmd: str, cwd: Path | None = None, env: dict | None = None) -> None:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-3000:]}")


def build_images(ref: str, tag: str, deps: Path, tmp: Path) -> list[str]:
    """users:TAG and acts:TAG from commit REF's tree; returns the image names."""
    src = tmp / f"src-{tag}"
    src.mkdir()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", f"{ref}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    wheels = src / "build" / "wheelhouse"
    shutil.copytree(deps, wheels / "deps")
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
       "-w", str(wheels / "project"), ".", cwd=src, env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
    images = []
    for service in SERVICES:
        image = f"{service}:{tag}"
        t0 = time.monotonic()
        sh("docker", "build", "-q", "--network", "none", "-f", f"docker/{service}.Dockerfile",
           "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", image, ".", cwd=src,
           env={**os.environ, "DOCKER_BUILDKIT": "0"})
        images.append(image)
        print(f"built {image} from {ref} = {commit} ({time.monotonic() - t0:.0f} s)", flush=True)
    return images


def stack_file(tag: str, tmp: Path) -> Path:
    data = yaml.safe_load(BUNDLED_DOCKER_STACK.read_text())
    name = f"bench-{tag}"
    data.update(name=name, network=name)
    data["variables"]["db_url"] = data["variables"]["db_url"].replace("selfieless-db", f"{name}-db")
    db = data["dependencies"]["db"]
    db["volumes"] = {f"{name}-db-data": "/var/lib/mysql"}
    db["host_port"] = free_port()
    del data["services"]["web"]
    for service in SERVICES:
        s = data["services"][service]
        s["image"] = f"{service}:{tag}"
        ports = free_port_range(10)
        s["host_ports"] = f"{ports[0]}-{ports[-1]}"
    acts = data["services"]["acts"]
    acts["replicas"] = {"initial": 3, "min": 3, "max": 3}
    acts["autoscale"] = {"policy": "none"}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wait_ready(up: UpProcess, timeout: float = 300) -> None:
    """Converged with 3 acts replicas and a users replica that answer through the gateway."""
    up.wait_converged(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = sum(1 for r in up.replicas("acts") if r["state"] == "ready")
        try:
            answers = httpx.get(up.gateway + "/api/v1/categories", timeout=5).status_code in (200, 204)  # 204: none yet
        except httpx.HTTPError:
            answers = False
        if ready == 3 and answers:
            return
        time.sleep(0.5)
    raise SystemExit(f"{up.stack_path.name}: 3 acts replicas not ready within {timeout} s:\n{up.log()}")


def seed(gateway: str) -> None:
    """A user, 5 categories and 20 acts in the first one."""
    with httpx.Client(base_url=gateway + "/api/v1", timeout=30) as c:
        assert c.post("/users", json={"username": USER, "password": sha1(USER)}).status_code == 201
        for i in range(N_CATEGORIES):
            assert c.post("/categories", json=[LISTED if i == 0 else f"cat{i}"]).status_code == 201
        for i in range(N_ACTS):
            r = c.post("/acts", json={"actId": 1000 + i, "username": USER, "timestamp": "09-04-2019:00-30-14",
                                      "caption": f"helped a neighbour #{i}", "categoryName": LISTED,
                                      "imgB64": "aGVsbG8g" * 128})
            assert r.status_code == 201, r.text


def upload_script(tmp: Path, run: int) -> str:
    """A wrk script whose actIds no earlier run used."""
    body = ('{"actId": %d, "username": "' + USER + '", "timestamp": "09-04-2019:00-30-14", '
            '"caption": "helped a neighbour", "categoryName": "cat1", "imgB64": "aGVsbG8gd29ybGQ="}')
    path = tmp / f"upload-{run}.lua"
    path.write_text(f"BODY = {lua_string(body)}\nBASE = 5000000000000 + {run} * 10000000\n" + UPLOAD_LUA)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="append", default=[], metavar="REF:TAG",
                    help="build users:TAG and acts:TAG from commit REF (repeatable)")
    ap.add_argument("--tags", default="", help="comma-separated tags of images already built (e.g. latest)")
    ap.add_argument("--deps-wheelhouse", type=Path, default=None,
                    help="dependency wheels (default: build/wheelhouse/deps here, else /work/main's)")
    ap.add_argument("--keep-images", action="store_true", help="keep the images this run built")
    ap.add_argument("--rounds", type=int, default=3, help="wrk runs per stack and endpoint")
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--wrk-cpu", default="0-1", help="cores for wrk (taskset list)")
    args = ap.parse_args()
    builds = [b.rsplit(":", 1) for b in args.build]
    tags = [t for _, t in builds] + [t for t in args.tags.split(",") if t]
    if not tags:
        ap.error("nothing to compare: give --build REF:TAG and/or --tags")

    # A TERM (or an INT, which a background job may have ignored) still runs the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    built: list[str] = []
    ups: dict[str, UpProcess] = {}
    with tempfile.TemporaryDirectory(prefix="docker-stack-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            deps = args.deps_wheelhouse or next(
                (p for p in (ROOT / "build/wheelhouse/deps", Path("/work/main/build/wheelhouse/deps")) if p.is_dir()),
                None)
            if builds and deps is None:
                raise SystemExit("no dependency wheelhouse: run scripts/docker-prepare or pass --deps-wheelhouse")
            for ref, tag in builds:
                built += build_images(ref, tag, deps, tmp)
            for tag in tags:
                ups[tag] = UpProcess(stack_file(tag, tmp), tmp / f"state-{tag}").start()
            for tag, up in ups.items():
                wait_ready(up)
                seed(up.gateway)
                print(f"{tag}: 3 acts replicas ready, seeded (gateway {up.gateway})", flush=True)

            results: dict[tuple[str, str], list[tuple[float, str]]] = {}
            run = 0
            for rnd in range(args.rounds):
                order = tags if rnd % 2 == 0 else tags[::-1]
                for label, path in (("GET /categories", "/api/v1/categories"), ("POST /acts (upload)", "/api/v1/acts")):
                    for tag in order:
                        run += 1
                        script = upload_script(tmp, run) if path == "/api/v1/acts" else None
                        rps, _, errors = run_wrk(ups[tag].gateway + path, args, script)
                        results.setdefault((label, tag), []).append((rps, errors))
                        print(f"  round {rnd + 1} {tag} {label}: {rps:,.0f} rps {errors}", flush=True)

            print(f"\nDocker stack, gateway -> 3 acts containers on the MariaDB container; wrk -c{args.connections} "
                  f"{args.duration} s, median of {args.rounds}:")
            for label in ("GET /categories", "POST /acts (upload)"):
                cells = []
                for tag in tags:
                    runs = results[(label, tag)]
                    failures = "; ".join(e for _, e in runs if e) or "no failures"
                    cells.append(f"{tag} {statistics.median(r for r, _ in runs):,.0f} rps ({failures})")
                print(f"  {label}: " + ", ".join(cells))
        finally:
            for tag, up in ups.items():
                try:
                    r = up.down("--volumes")
                    if r.returncode != 0:
                        print(f"{tag}: selfieless down: {r.stdout}{r.stderr}", file=sys.stderr)
                except Exception as exc:  # noqa: BLE001 - keep bringing the others down
                    print(f"{tag}: selfieless down failed ({exc}); stopping up", file=sys.stderr)
                    up.stop_quietly()
            if built and not args.keep_images:
                subprocess.run(["docker", "rmi", *built], capture_output=True)
                print(f"removed {' '.join(built)}")


if __name__ == "__main__":
    main()
