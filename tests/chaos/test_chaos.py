"""Chaos: a real stack under a mixed load, with faults from a seeded schedule; then invariants.

`selfieless up` (process driver, users x1, acts x3) serves GET listings, uploads, upvotes and
deletes from several clients for `--chaos-duration` seconds (60 by default), once on SQLite and
once on MariaDB (a fresh database on the test server, tests/support/databases.py), while a
schedule drawn from `--chaos-seed` injects: kill -9 and SIGSTOP of replicas, `POST _crash`, a long
write (a large category filled and deleted), a slow-client flood, malformed and smuggling
requests, and a kill -9 and restart of the orchestrator itself (which must adopt its replicas).

Afterwards it checks what must hold whatever the timing, reading the database through SQLAlchemy
on the services' URL (so the same check reads either backend) and `_count` through the API:
- every upload answered 201 is stored (act ids are unique: at most once by construction), and
  every act deleted with 200 is gone;
- nothing answered 4xx, 500 or 503 was written (502/504 and dropped connections are "unknown":
  the replica may or may not have committed before it died, so both outcomes are allowed);
- every act's upvotes lie between the upvotes acknowledged and those plus the unknown ones;
- `_count` is at least the number of acts requests a replica answered (a counted request is
  committed before its answer, so a replica killed afterwards cannot take it back);
- a big category deleted with 200 has none of its acts left; one refused keeps them all;
- no malformed request was answered 2xx;
- no service was without a ready replica for longer than AVAILABILITY_BOUND while the control
  plane was up, and the stack converges back to its desired count;
- no replica log and not the orchestrator's output holds a traceback.
The seed is printed at the start and in every failure, so a failing run can be replayed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from selfieless.orchestrator.stack import BUNDLED_STACK
from support.databases import fresh_database
from support.ports import free_port, free_port_range

AVAILABILITY_BOUND = 10.0  # seconds a service may go without a ready replica (control plane up)
CLIENTS = 4
FAULTS = ("kill9", "sigstop", "crash", "long_write", "slow_flood", "malformed", "restart")
UNKNOWN = "unknown"
# Statuses the gateway answers itself (no replica, a replica that died mid-request, a timeout):
# such a request may or may not have reached a replica. Every other answer came from one.
GATEWAY_ANSWERS = (502, 503, 504)


def write_stack(path: Path, acts_ports: range, users_ports: range, acts_db: str, users_db: str) -> Path:
    data = yaml.safe_load(BUNDLED_STACK.read_text())
    data["name"] = f"chaos-{acts_ports[0]}"
    data["driver"] = "process"
    data["variables"].update(acts_database_url=acts_db, users_database_url=users_db)
    data["gateway"]["host"] = "127.0.0.1"
    del data["services"]["web"]
    for svc, ports in (("acts", acts_ports), ("users", users_ports)):
        s = data["services"][svc]
        s["host_ports"] = f"{ports[0]}-{ports[-1]}"
        s["drain_timeout"] = "3s"
    acts = data["services"]["acts"]
    acts["replicas"] = {"initial": 3, "min": 3, "max": len(acts_ports)}
    acts["autoscale"] = {"policy": "none"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Up:
    """`selfieless up` on fixed ports, killable and restartable on the same state directory."""

    def __init__(self, tmp: Path, stack: Path):
        self.tmp, self.stack = tmp, stack
        self.state_dir = tmp / "state"
        self.port, self.admin_port = free_port(), free_port()
        self.gateway = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.out_path = tmp / "up.out"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        out = open(self.out_path, "ab")
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("SELFIELESS_ADMIN_URL", None)
        env.pop("SELFIELESS_ADMIN_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "selfieless.cli.main", "up", str(self.stack), "--port", str(self.port),
             "--admin-port", str(self.admin_port), "--state-dir", str(self.state_dir)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        out.close()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def status(self) -> dict | None:
        try:
            return httpx.get(self.admin + "/api/status", timeout=2, trust_env=False).json()
        except (httpx.HTTPError, ValueError):
            return None

    def wait_converged(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"up exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
            st = self.status()
            if st and st["converged"] and all(s["ready"] == s["desired"] for s in st["services"].values()):
                return st
            time.sleep(0.2)
        raise AssertionError(f"not converged within {timeout} s: {self.status()}")

    def kill9(self) -> None:
        self.proc.kill()  # only `up`: replicas run in sessions of their own and are adopted
        self.proc.wait(10)

    def replica_pids(self) -> list[int]:
        pids = []
        for f in self.state_dir.glob("*/replicas/*.json"):
            try:
                pids.append(int(yaml.safe_load(f.read_text())["pid"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        gateways = []  # the gateway runs as its own process: left over only if `up` died at the end
        for f in self.state_dir.glob("*/gateway.json"):
            try:
                gateways.append(int(yaml.safe_load(f.read_text())["pid"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        for pid in self.replica_pids() + gateways:  # whatever is left (should be nothing): not our problem next
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass


@dataclass
class Ledger:
    """What clients were told, to hold against what the database holds afterwards."""

    uploads: dict[int, str] = field(default_factory=dict)        # act id -> ok | refused | unknown
    deletes: dict[int, str] = field(default_factory=dict)        # act id -> ok | refused | unknown
    upvotes: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    big: dict[str, tuple[list[int], str]] = field(default_factory=dict)  # category -> (acts ok, delete outcome)
    faults: Counter = field(default_factory=Counter)
    requests: Counter = field(default_factory=Counter)
    malformed_2xx: list[bytes] = field(default_factory=list)
    answered_by_acts: int = 0  # counted acts requests a replica answered (not the gateway)
    zero_ready: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # longest stretch


def outcome(r: httpx.Response | None) -> str:
    if r is None or r.status_code in (502, 504):
        return UNKNOWN
    return "ok" if r.status_code < 300 else "refused"


def act(act_id: int, category: str, size: int = 48) -> dict:
    return {"actId": act_id, "username": "chaos", "timestamp": "28-11-2026:00-00-12",
            "caption": f"act {act_id}", "categoryName": category,
            "imgB64": base64.b64encode(os.urandom(size)).decode()}


class Chaos:
    def __init__(self, up: Up, seed: int, duration: float):
        self.up, self.seed, self.duration = up, seed, duration
        self.ledger = Ledger()
        self.next_id = 1_000_000
        self.stopped: set[int] = set()
        self.ending = False
        self.control_plane_up = True

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    async def call(self, client: httpx.AsyncClient, method: str, path: str, **kw) -> httpx.Response | None:
        self.ledger.requests[method] += 1
        try:
            r = await client.request(method, self.up.gateway + "/api/v1" + path, **kw)
        except httpx.HTTPError:
            return None
        if path != "/_crash" and r.status_code not in GATEWAY_ANSWERS:
            self.ledger.answered_by_acts += 1
        return r

    # --- load ------------------------------------------------------------------------------
    async def client(self, i: int, until: float) -> None:
        rng = random.Random(self.seed * 100 + i)
        led = self.ledger
        async with httpx.AsyncClient(timeout=15, trust_env=False) as c:
            while time.monotonic() < until:
                roll = rng.random()
                ok_acts = [a for a, o in led.uploads.items() if o == "ok" and a not in led.deletes]
                if roll < 0.4:
                    path = rng.choice(["/categories", f"/categories/C{rng.randrange(3)}/acts?start=1&end=20",
                                       f"/categories/C{rng.randrange(3)}/acts/size", "/acts/count"])
                    await self.call(c, "GET", path)
                elif roll < 0.7 or not ok_acts:
                    a = self.new_id()
                    led.uploads[a] = UNKNOWN  # until answered
                    led.uploads[a] = outcome(await self.call(c, "POST", "/acts", json=act(a, f"C{rng.randrange(3)}")))
                elif roll < 0.9:
                    a = rng.choice(ok_acts)
                    r = await self.call(c, "POST", "/acts/upvote", json=[a])
                    led.upvotes[a][outcome(r)] += 1
                else:
                    a = rng.choice(ok_acts)
                    led.deletes[a] = UNKNOWN
                    led.deletes[a] = outcome(await self.call(c, "DELETE", f"/acts/{a}"))
                await asyncio.sleep(rng.uniform(0, 0.02))

    async def watch(self, until: float) -> None:
        """Longest stretch with no ready replica, per service, while the control plane answers."""
        since: dict[str, float] = {}
        while time.monotonic() < until + 30 and not self.ending:
            st = await asyncio.to_thread(self.up.status)
            now = time.monotonic()
            if st is None or not self.control_plane_up:
                since.clear()  # nothing to judge while the control plane itself is down
            else:
                for name, s in st["services"].items():
                    ready = sum(1 for r in s["replicas"] if r["state"] == "ready" and r["in_pool"])
                    if ready:
                        since.pop(name, None)
                    else:
                        start = since.setdefault(name, now)
                        self.ledger.zero_ready[name] = max(self.ledger.zero_ready[name], now - start)
            await asyncio.sleep(0.25)

    # --- faults ----------------------------------------------------------------------------
    async def faults(self, until: float) -> None:
        rng = random.Random(self.seed)
        order = list(FAULTS)
        rng.shuffle(order)  # every kind once first, then at random
        background = []
        while True:
            await asyncio.sleep(rng.uniform(2.0, 5.0))
            if time.monotonic() >= until - 3:
                break
            kind = order.pop(0) if order else rng.choice(FAULTS)
            self.ledger.faults[kind] += 1
            if kind in ("long_write", "slow_flood"):
                background.append(asyncio.create_task(getattr(self, kind)(rng)))
            else:
                await getattr(self, kind)(rng)
        await asyncio.gather(*background)
        for pid in list(self.stopped):
            self._signal(pid, signal.SIGCONT)

    def _acts_pids(self) -> list[int]:
        st = self.up.status()
        if not st:
            return []
        return [r["pid"] for r in st["services"]["acts"]["replicas"] if r["pid"] and r["state"] == "ready"]

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except OSError:
            pass

    async def kill9(self, rng) -> None:
        pids = await asyncio.to_thread(self._acts_pids)
        if pids:
            self._signal(rng.choice(pids), signal.SIGKILL)

    async def sigstop(self, rng) -> None:
        pids = await asyncio.to_thread(self._acts_pids)
        if pids:
            pid = rng.choice(pids)
            self.stopped.add(pid)
            self._signal(pid, signal.SIGSTOP)
            asyncio.get_running_loop().call_later(4.0, self._signal, pid, signal.SIGCONT)

    async def crash(self, rng) -> None:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as c:
            await self.call(c, "POST", "/_crash")

    async def long_write(self, rng) -> None:
        """Fill a category with large acts, then delete it in one statement."""
        name = f"big-{self.new_id()}"
        stored: list[int] = []
        async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
            if outcome(await self.call(c, "POST", "/categories", json=[name])) != "ok":
                return
            for _ in range(120):
                a = self.new_id()
                o = outcome(await self.call(c, "POST", "/acts", json=act(a, name, size=30_000)))
                if o == "ok":
                    stored.append(a)
                elif o == UNKNOWN:
                    self.ledger.uploads[a] = UNKNOWN  # may exist until the category goes
            r = await self.call(c, "DELETE", f"/categories/{name}")
        self.ledger.big[name] = (stored, outcome(r))

    async def slow_flood(self, rng) -> None:
        """200 connections that send a request head one byte now and then, for ~5 s."""
        def flood() -> None:
            socks = []
            for _ in range(200):
                try:
                    s = socket.create_connection(("127.0.0.1", self.up.port), 2)
                    s.sendall(b"GET /api/v1/categories HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    socks.append(s)
                except OSError:
                    break
            for _ in range(5):
                time.sleep(1)
                for s in socks:
                    try:
                        s.sendall(b"a")
                    except OSError:
                        pass
            for s in socks:
                s.close()
        await asyncio.to_thread(flood)

    MALFORMED = [
        b"GET /api/v1/categories HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/v1/categories HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/v1/categories HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n[\"x\"]",
        b"POST /api/v1/acts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"GET /api/v1/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /api/v1/categories HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
    ]

    async def malformed(self, rng) -> None:
        def send(payload: bytes) -> None:
            try:
                with socket.create_connection(("127.0.0.1", self.up.port), 3) as s:
                    s.settimeout(3)
                    s.sendall(payload)
                    answer = s.recv(64)
            except OSError:
                return
            if answer[:10] in (b"HTTP/1.1 2", b"HTTP/1.0 2") and b"etc/passwd" not in payload:
                self.ledger.malformed_2xx.append(payload)
        for payload in rng.sample(self.MALFORMED, 4):
            await asyncio.to_thread(send, payload)

    async def restart(self, rng) -> None:
        self.control_plane_up = False
        await asyncio.to_thread(self.up.kill9)
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        self.up.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and await asyncio.to_thread(self.up.status) is None:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # give the adopted replicas their first probes
        self.control_plane_up = True

    async def run(self) -> None:
        until = time.monotonic() + self.duration
        watcher = asyncio.create_task(self.watch(until))
        await asyncio.gather(self.faults(until), *(self.client(i, until) for i in range(CLIENTS)))
        self.ending = True
        await watcher


def stored(url: str) -> tuple[dict[int, int], set[str]]:
    """Every act's upvotes and every category name in the acts database at this URL."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            acts = dict(conn.execute(text("SELECT act_id, upvotes FROM acts")).fetchall())
            categories = {row[0] for row in conn.execute(text("SELECT name FROM categories"))}
    finally:
        engine.dispose()
    return acts, categories


def violations(led: Ledger, acts: dict[int, int], categories: set[str], count: int) -> list[str]:
    found = []
    if count < led.answered_by_acts:
        found.append(f"_count is {count}, but replicas answered {led.answered_by_acts} counted requests")
    for a, o in led.uploads.items():
        deleted = led.deletes.get(a)
        if o == "ok" and a not in acts and deleted in (None, "refused"):
            found.append(f"act {a} answered 201 is missing")
        if o == "refused" and a in acts:
            found.append(f"act {a} refused but stored")
    for a, o in led.deletes.items():
        if o == "ok" and a in acts:
            found.append(f"act {a} deleted with 200 is still there")
    for a, seen in led.upvotes.items():
        if a in acts and not seen["ok"] <= acts[a] <= seen["ok"] + seen[UNKNOWN]:
            found.append(f"act {a} has {acts[a]} upvotes; acknowledged {seen['ok']}, unknown {seen[UNKNOWN]}")
    for name, (stored, o) in led.big.items():
        left = [a for a in stored if a in acts]
        if o == "ok" and (left or name in categories):
            found.append(f"category {name} deleted with 200 still has {len(left)} acts / exists")
        if o == "refused" and (len(left) != len(stored) or name not in categories):
            found.append(f"category {name} refused deletion but lost {len(stored) - len(left)} acts")
    found += [f"malformed request answered 2xx: {p[:60]!r}" for p in led.malformed_2xx]
    found += [f"{svc} had no ready replica for {t:.1f} s (bound {AVAILABILITY_BOUND} s)"
              for svc, t in led.zero_ready.items() if t > AVAILABILITY_BOUND]
    return found


def tracebacks(up: Up) -> list[str]:
    logs = [*up.state_dir.glob("*/logs/*.log"), up.out_path]
    return [f"{p.name}: ...{p.read_text(errors='replace')[max(0, i - 200):i + 600]}"
            for p in logs for i in [p.read_text(errors="replace").find("Traceback")] if i >= 0]


@pytest.fixture
def chaos_seed(request) -> int:
    seed = request.config.getoption("--chaos-seed")
    return seed if seed is not None else random.SystemRandom().randrange(1, 2**31)


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_chaos_invariants(tmp_path, request, chaos_seed, backend):
    duration = request.config.getoption("--chaos-duration")
    print(f"\nchaos on {backend}: seed {chaos_seed}, {duration:.0f} s "
          f"(replay: pytest tests/chaos -k {backend} --chaos-seed {chaos_seed})")
    with ExitStack() as dbs:
        acts_db = dbs.enter_context(fresh_database(backend, tmp_path))
        users_db = dbs.enter_context(fresh_database(backend, tmp_path))
        stack = write_stack(tmp_path / "stack.yaml", free_port_range(5), free_port_range(1), acts_db, users_db)
        run_chaos(Up(tmp_path, stack), acts_db, chaos_seed, duration)


def run_chaos(up: Up, acts_db: str, chaos_seed: int, duration: float) -> None:
    try:
        up.wait_converged(90)
        with httpx.Client(base_url=up.gateway + "/api/v1", timeout=10, trust_env=False) as c:
            assert c.post("/users", json={"username": "chaos", "password": "a" * 40}).status_code == 201
            for i in range(3):
                assert c.post("/categories", json=[f"C{i}"]).status_code == 201
        chaos = Chaos(up, chaos_seed, duration)
        asyncio.run(chaos.run())
        led = chaos.ledger
        final = up.wait_converged(60)
        assert final["services"]["acts"]["ready"] == 3
        with httpx.Client(timeout=10, trust_env=False) as c:
            count = c.get(up.gateway + "/api/v1/_count").json()[0]
        found = violations(led, *stored(acts_db), count) + tracebacks(up)
        summary = (f"chaos seed {chaos_seed}: {sum(led.requests.values())} requests "
                   f"({dict(led.requests)}), faults {dict(led.faults)}, "
                   f"uploads {Counter(led.uploads.values())}, deletes {Counter(led.deletes.values())}, "
                   f"longest without a ready replica {dict(led.zero_ready)}, _count {count} "
                   f"(replicas answered {led.answered_by_acts}); {len(found)} violations")
        print(summary)
        assert sum(Counter(led.uploads.values()).values()) > 50, summary  # the load really ran
        assert not found, summary + "\n" + "\n".join(found[:30])
    finally:
        up.stop()
