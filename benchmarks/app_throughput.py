#!/usr/bin/env python3
"""Benchmark: what the microservices make of their own web stack, and what the control plane
spends per watched replica (not a test).

    python benchmarks/app_throughput.py                          # everything, about 6 minutes
    python benchmarks/app_throughput.py --part apps --backends sqlite --rounds 3
    python benchmarks/app_throughput.py --part stack             # memory + control plane only

Part "apps": one acts replica and one users replica pinned to one core (--app-cpu), wrk -t1 -c10
pinned to the other (--wrk-cpu). Next to them, on the same core, a bare Starlette app on uvicorn
(same loop, same HTTP parser) answers the very same bodies from memory. For each database and
endpoint wrk runs on the replica and on the bare app alternately (--rounds times each, the order
swapped every round) and the medians are compared:

    sqlite GET /categories: 9,210 rps = 0.29x bare (31,600); CPU per request 105 µs = 0.30x bare (32 µs)

The CPU time the serving processes spent per request (all their threads, from /proc) is printed
too, and its ratio: on a shared machine the rate depends on what else ran on the core during
each run, the CPU a request costs much less so.

Endpoints: GET /api/v1/categories (5 categories), GET /api/v1/categories/{c}/acts (20 acts with
--img-bytes of base64 each), POST /api/v1/acts (uploads with fresh actIds; each asks the users
replica whether its user exists), POST /api/v1/acts/upvote, and on the users replica
GET /api/v1/users (20 users): the list, which is also the username check every upload makes.

Part "stack": `selfieless up` with the process driver and preloaded acts replicas, no traffic.
The CPU time of the `up` process (gateway + control plane) is read from /proc over --idle seconds
with 3 and then with 12 replicas; the difference per probe is the control plane's cost of watching
one more replica. Then, with 10 replicas, each replica's resident (RSS) and proportional (PSS)
set size from /proc/PID/smaps_rollup: preload forks share their pages, PSS splits shared pages
between the sharers.

Needs wrk and taskset (Debian: apt-get install wrk util-linux); MariaDB and PostgreSQL at the
test suite's URLs (SELFIELESS_TEST_MYSQL_URL / SELFIELESS_TEST_POSTGRES_URL) or they are skipped.
The machine may be shared: run it under the benchmark lock, and read ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVER_URLS = {
    "mariadb": os.environ.get("SELFIELESS_TEST_MYSQL_URL", "mysql+pymysql://selfieless:selfieless@127.0.0.1:3306/mysql"),
    "postgresql": os.environ.get("SELFIELESS_TEST_POSTGRES_URL",
                                 "postgresql+psycopg://selfieless:selfieless@127.0.0.1:5432/postgres"),
}
N_CATEGORIES, N_ACTS, N_USERS = 5, 20, 20
LISTED = "Nature"


# --- helpers ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(n: int) -> int:
    """First port of n consecutive free ports."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit("no range of free ports found")


def wait_200(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, in ns from schedstat: /proc/PID/stat counts in
    clock ticks (10 ms), too coarse for a few ms a second."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


@contextmanager
def database(backend: str, tmp: str, async_commit: bool = False):
    """URL of an empty database of this kind, dropped afterwards; None when the server is missing.
    `async_commit`: PostgreSQL commits in it answer before their log record is flushed to disk."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:8]}.db"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    name = f"selfieless_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(SERVER_URLS[backend], isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
            if async_commit and backend == "postgresql":
                conn.execute(text(f"ALTER DATABASE {name} SET synchronous_commit = off"))
    except Exception as exc:
        print(f"{backend}: skipped, server not reachable ({type(exc).__name__})", flush=True)
        yield None
        return
    try:
        yield make_url(SERVER_URLS[backend]).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if backend == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


def run_wrk(url: str, args, script: str | None = None,
            pids: tuple[int, ...] = ()) -> tuple[float, list[float], str]:
    """Requests/s, and the CPU time each of the server processes `pids` spent per request (s)."""
    cmd = ["taskset", "-c", args.wrk_cpu, "wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s"]
    if script:
        cmd += ["-s", script]
    cpu0 = [cpu_seconds(pid) for pid in pids]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu0)]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = max(int(re.search(r"(\d+) requests in", out).group(1)), 1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return rps, [c / total for c in cpu], errors.group(0) if errors else ""


# --- the bare app -----------------------------------------------------------------------------------

def bare_server(port: int, bodies_file: str) -> None:
    """A Starlette app answering fixed bodies from memory, on uvicorn with the replicas' settings."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    routes = []
    for spec in json.loads(Path(bodies_file).read_text()):
        body, status = spec["body"].encode(), spec["status"]

        async def answer(request, body=body, status=status):
            return Response(body, status_code=status, media_type="application/json")
        routes.append(Route(spec["path"], answer, methods=[spec["method"]]))
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=port, loop="auto", http="auto", ws="none",
                access_log=False, log_level="warning", proxy_headers=False, server_header=False)


# --- part "apps" ------------------------------------------------------------------------------------

UPLOAD_LUA = """
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.format(BODY, BASE + counter))
end
"""


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def seed(acts: str, users: str, img: str) -> int:
    """Users, categories and acts the endpoints read; returns an actId to upvote."""
    with httpx.Client(timeout=30, trust_env=False) as c:
        for i in range(N_USERS):
            name = f"user{i:02d}"
            assert c.post(f"{users}/api/v1/users", json={"username": name, "password": sha1(name)}).status_code == 201
        for i in range(N_CATEGORIES):
            assert c.post(f"{acts}/api/v1/categories", json=[LISTED if i == 0 else f"cat{i}"]).status_code == 201
        assert c.post(f"{acts}/api/v1/categories", json=["Uploads"]).status_code == 201
        for i in range(N_ACTS):
            body = {"actId": 1000 + i, "username": f"user{i % N_USERS:02d}",
                    "timestamp": f"{1 + i % 28:02d}-04-2019:00-30-14", "caption": f"helped a neighbour #{i}",
                    "categoryName": LISTED, "imgB64": img}
            r = c.post(f"{acts}/api/v1/acts", json=body)
            assert r.status_code == 201, r.text
    return 1000


def bench_backend(backend: str, url: str, args, tmp: str, results: dict) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")
    uport, aport = free_port(), free_port()
    users_url, acts_url = f"http://127.0.0.1:{uport}", f"http://127.0.0.1:{aport}"

    def replica(service: str, port: int, extra: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            ["taskset", "-c", args.app_cpu, sys.executable, "-m", f"selfieless.apps.{service}", "--port", str(port),
             "--database-url", url, *extra], env=env, start_new_session=True,
            stdout=open(f"{tmp}/{backend}-{service}.log", "wb"), stderr=subprocess.STDOUT)

    users = replica("users", uport, [])
    acts = replica("acts", aport, ["--users-url", users_url])
    bare = None
    try:
        wait_200(users_url + "/api/v1/_health", users)
        wait_200(acts_url + "/api/v1/_health", acts)
        img = "aGVsbG8g" * (args.img_bytes // 8)
        upvote_id = seed(acts_url, users_url, img)
        upload_body = json.dumps({"actId": 0, "username": "user07", "timestamp": "09-04-2019:00-30-14",
                                  "caption": "helped a neighbour", "categoryName": "Uploads",
                                  "imgB64": "aGVsbG8gd29ybGQ="}).replace('"actId": 0', '"actId": %d')
        upload_runs = iter(range(1, 10**6))

        def upload_lua() -> str:
            """A script per run: each run's actIds start where no earlier run's reach."""
            path = Path(tmp, "upload.lua")
            path.write_text(f"BODY = {lua_string(upload_body)}\nBASE = 5000000000000 + {next(upload_runs)} * 10000000\n"
                            + UPLOAD_LUA)
            return str(path)
        upvote_path = Path(tmp, "upvote.lua")
        upvote_path.write_text(f'wrk.method = "POST"\nwrk.body = "[{upvote_id}]"\n'
                              'wrk.headers["Content-Type"] = "application/json"\n')
        endpoints = [  # (label, replica URL, bare path, wrk script, processes doing the work)
            ("GET /categories", acts_url + "/api/v1/categories", "/api/v1/categories", None, (acts.pid,)),
            (f"GET /categories/{{c}}/acts ({N_ACTS} acts)", f"{acts_url}/api/v1/categories/{LISTED}/acts",
             f"/api/v1/categories/{LISTED}/acts", None, (acts.pid,)),
            ("POST /acts (upload)", acts_url + "/api/v1/acts", "/api/v1/acts", upload_lua, (acts.pid, users.pid)),
            ("POST /acts/upvote", acts_url + "/api/v1/acts/upvote", "/api/v1/acts/upvote", lambda: str(upvote_path),
             (acts.pid,)),
            (f"users GET /users ({N_USERS} users, the username check)", users_url + "/api/v1/users",
             "/api/v1/users", None, (users.pid,)),
        ]
        # The bare app answers exactly what the replica answered, from memory.
        bodies = []
        with httpx.Client(timeout=30, trust_env=False) as c:
            for _, real, path, script, _ in endpoints:
                if script is None:
                    r = c.get(real)
                    assert r.status_code == 200, r.text
                    bodies.append({"method": "GET", "path": path, "status": 200, "body": r.text})
                else:
                    status = 201 if path == "/api/v1/acts" else 200
                    bodies.append({"method": "POST", "path": path, "status": status, "body": "{}"})
        Path(tmp, "bodies.json").write_text(json.dumps(bodies))
        bport = free_port()
        bare_url = f"http://127.0.0.1:{bport}"
        bare = subprocess.Popen(["taskset", "-c", args.app_cpu, sys.executable, __file__, "--bare-server", str(bport),
                                 f"{tmp}/bodies.json"], env=env, start_new_session=True,
                                stdout=open(f"{tmp}/bare.log", "wb"), stderr=subprocess.STDOUT)
        wait_200(bare_url + "/api/v1/categories", bare)
        for label, real, path, script, pids in endpoints:
            if args.endpoints and not any(word in label for word in args.endpoints.split(",")):
                continue
            for target in (real, bare_url + path):  # warm up: connections, statement caches
                subprocess.run(["wrk", "-t1", "-c2", "-d1s", *(["-s", script()] if script else []), target],
                               capture_output=True, check=True)
            mine, theirs, mine_cpu, theirs_cpu, errors = [], [], [], [], set()
            per_process = []  # the replica's runs: CPU per request of each of `pids`
            for i in range(args.rounds):
                order = [("real", real, pids), ("bare", bare_url + path, (bare.pid,))]
                for side, target, busy in (order if i % 2 == 0 else order[::-1]):
                    rps, cpu, err = run_wrk(target, args, script() if script else None, busy)
                    (mine if side == "real" else theirs).append(rps)
                    (mine_cpu if side == "real" else theirs_cpu).append(sum(cpu))
                    if side == "real":
                        per_process.append(cpu)
                    if err:
                        errors.add(f"{side}: {err}")
            if args.profile:
                profile(label, backend, real, script() if script else None, pids, args)
            m, b = statistics.median(mine), statistics.median(theirs)
            mc, bc = statistics.median(mine_cpu), statistics.median(theirs_cpu)
            results[(backend, label)] = (m, b)
            note = f"   !! {'; '.join(sorted(errors))}" if errors else ""
            if len(pids) > 1:  # how the CPU per request splits between the processes (acts + users)
                split = " + ".join(f"{statistics.median(run[k] for run in per_process) * 1e6:,.0f}"
                                   for k in range(len(pids)))
                note = f"   [acts + users: {split} µs]" + note
            print(f"{backend} {label}: {m:,.0f} rps = {m / b:.2f}x bare ({b:,.0f}); "
                  f"CPU per request {mc * 1e6:,.0f} µs = {bc / mc:.2f}x bare ({bc * 1e6:,.0f} µs)"
                  f"   [runs: {', '.join(f'{x:,.0f}' for x in mine)} vs {', '.join(f'{x:,.0f}' for x in theirs)}]{note}",
                  flush=True)
    finally:
        if bare is not None:
            stop(bare)
        stop(acts)
        stop(users)


def profile(label: str, backend: str, url: str, script: str | None, pids: tuple[int, ...], args) -> None:
    """One more wrk run on the replica with py-spy sampling each serving process (--profile DIR):
    collapsed stacks to DIR, and the functions most often on the stack printed."""
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^a-z0-9]+", "-", f"{backend} {label}".lower()).strip("-")
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    spies = [subprocess.Popen([spy, "record", "-p", str(pid), "-r", "250", "-d", str(args.duration), "--nolineno",
                               "-f", "raw", "-o", str(out / f"{name}-{pid}.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in pids]
    time.sleep(0.5)  # py-spy attaches
    run_wrk(url, args, script)
    for spy in spies:
        spy.wait(60)
    for pid in pids:
        print(f"  profile {name} pid {pid}:\n" + summarise(out / f"{name}-{pid}.txt"), flush=True)


def summarise(path: Path, top: int = 14) -> str:
    """Share of the samples in which each function is on the stack (inclusive) and on top (own)."""
    total, inclusive, own = 0, {}, {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(.*?/(site-packages|selfieless|lib/python3[.0-9]*)/", " (", f)
                  for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    rows = [f"    own {n / total:5.1%}  {f}" for f, n in sorted(own.items(), key=lambda x: -x[1])[:top]]
    rows += [f"    in  {n / total:5.1%}  {f}" for f, n in sorted(inclusive.items(), key=lambda x: -x[1])[:top * 2]]
    return "\n".join(rows) if total else "    (no samples)"


def part_apps(args, tmp: str) -> None:
    results: dict = {}
    for backend in args.backends.split(","):
        with database(backend, tmp, args.pg_async_commit) as url:
            if url is not None:
                bench_backend(backend, url, args, tmp, results)


# --- part "stack": control plane cost per replica, memory per replica ------------------------------

def stack_yaml(tmp: str, base: int, n: int) -> str:
    return json.dumps({
        "name": "appbench", "driver": "process",
        "gateway": {"host": "127.0.0.1", "port": 8080},
        "services": {"acts": {
            "command": ["python", "-m", "selfieless.apps.acts", "--port", "{port}",
                        "--database-url", f"sqlite:///{tmp}/stack-acts.db", "--users-url", "{gateway_url}"],
            "preload": True, "host_ports": f"{base}-{base + n - 1}", "routes": ["/api/v1"],
            "health": {"path": "/api/v1/_health", "interval": "1s", "timeout": "1s", "failure_threshold": 1},
            "replicas": {"initial": 3, "min": 1, "max": n}, "autoscale": {"policy": "none"},
        }},
    })  # JSON is YAML


def smaps(pid: int) -> dict[str, int]:
    """kB figures from smaps_rollup."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}


def part_stack(args, tmp: str) -> None:
    n = 12
    base = free_port_range(n)
    Path(tmp, "stack.yaml").write_text(stack_yaml(tmp, base, n))
    gport, aport = free_port(), free_port()
    admin = f"http://127.0.0.1:{aport}"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    up = subprocess.Popen([sys.executable, "-m", "selfieless.cli.main", "up", f"{tmp}/stack.yaml", "--driver", "process",
                           "--port", str(gport), "--admin-port", str(aport), "--state-dir", f"{tmp}/state", "--quiet"],
                          stdout=open(f"{tmp}/up.log", "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def ready_ports(count: int) -> list[int]:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if up.poll() is not None:
                raise SystemExit("`up` exited:\n" + Path(tmp, "up.log").read_text()[-3000:])
            try:
                st = httpx.get(admin + "/api/status", timeout=5, trust_env=False).json()
                reps = st["services"]["acts"]["replicas"]
                ready = [(r["port"], r["pid"]) for r in reps if r["state"] == "ready"]
                if st.get("converged") and len(ready) == count and len(reps) == count:
                    return sorted(ready)
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"{count} ready replicas not reached:\n" + Path(tmp, "up.log").read_text()[-3000:])

    def idle_cpu(count: int) -> float:
        httpx.post(admin + "/api/scale", json={"service": "acts", "replicas": count}, timeout=10, trust_env=False)
        ready_ports(count)
        time.sleep(3)  # let starts and their events settle
        c0, t0 = control_cpu(), time.monotonic()
        time.sleep(args.idle)
        return (control_cpu() - c0) / (time.monotonic() - t0)

    def control_cpu() -> float:
        """`up` and the gateway process it started: the control plane's whole cost (the gateway
        hears of every replica added or removed)."""
        pids = [up.pid] + [json.loads(f.read_text())["pid"] for f in Path(tmp, "state").rglob("gateway.json")]
        return sum(cpu_seconds(pid) for pid in pids)

    try:
        ready_ports(3)
        runs = []
        for _ in range(args.probe_runs):
            low, high = idle_cpu(3), idle_cpu(12)
            per_probe = (high - low) / 9 * 1e6  # 9 more replicas, one probe a second each
            runs.append(per_probe)
            print(f"  `up` + gateway CPU idle: {low * 1000:.2f} ms/s with 3 replicas, {high * 1000:.2f} ms/s with 12 "
                  f"-> {per_probe:,.0f} µs per probe", flush=True)
        print(f"control plane: {statistics.median(runs):,.0f} µs CPU per probe (3 → 12 replicas; "
              f"median of {len(runs)}, each {args.idle:g} s idle)", flush=True)
        httpx.post(admin + "/api/scale", json={"service": "acts", "replicas": 10}, timeout=10, trust_env=False)
        replicas = ready_ports(10)
        with httpx.Client(timeout=10, trust_env=False) as c:  # one real request each, as after a warm-up
            for port, _ in replicas:
                c.get(f"http://127.0.0.1:{port}/api/v1/categories")
        mems = [smaps(pid) for _, pid in replicas]
        rss = statistics.mean(m["Rss"] for m in mems) / 1024
        pss = statistics.mean(m["Pss"] for m in mems) / 1024
        own = statistics.mean(m["Private_Clean"] + m["Private_Dirty"] for m in mems) / 1024
        print(f"memory: acts replica RSS {rss:.1f} MiB, PSS {pss:.1f} MiB, private {own:.1f} MiB "
              f"(mean of 10 preloaded replicas); all 10: PSS {pss * 10:.0f} MiB", flush=True)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--bare-server":
        bare_server(int(sys.argv[2]), sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("all", "apps", "stack"), default="all")
    ap.add_argument("--backends", default="sqlite,mariadb,postgresql")
    ap.add_argument("--rounds", type=int, default=2, help="wrk runs per side and endpoint")
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--img-bytes", type=int, default=1024, help="base64 characters per listed act's image")
    ap.add_argument("--app-cpu", default="1", help="core for the replicas and the bare app")
    ap.add_argument("--wrk-cpu", default="0", help="core for wrk")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measurement per replica count")
    ap.add_argument("--probe-runs", type=int, default=1)
    ap.add_argument("--pg-async-commit", action="store_true",
                    help="PostgreSQL: the benchmark's database commits without waiting for the log flush "
                         "(synchronous_commit = off), to show what the flush costs")
    ap.add_argument("--endpoints", default="", help="only the endpoints whose label contains one of these "
                                                    "comma-separated words (e.g. upload,upvote)")
    ap.add_argument("--profile", metavar="DIR", help="also sample each endpoint's serving processes with "
                                                    "py-spy during one more run (collapsed stacks to DIR)")
    args = ap.parse_args()
    missing = [t for t in ("wrk", "taskset") if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: apt-get install wrk util-linux")
    tmp = tempfile.mkdtemp(prefix="appbench-")
    try:
        if args.part in ("all", "apps"):
            part_apps(args, tmp)
        if args.part in ("all", "stack"):
            part_stack(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
