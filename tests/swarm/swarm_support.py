"""Helpers for the swarm tests and benchmark: the lab (scripts/swarm-lab), a real
`selfieless up --driver swarm` in a subprocess, a GET load that counts failures, and uploads
that keep what was acknowledged (to read back after).

(No __init__.py here, as in tests/docker: the module names must not shadow packages.)
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx

from support.ports import free_port
from support.up_process import UpProcess

REPO = Path(__file__).resolve().parents[2]
LAB_SCRIPT = REPO / "scripts" / "swarm-lab"
LAB_ENV = Path("/run/sllab/lab.env")
IMAGES = ("users:latest", "acts:latest", "selfieless/mariadb:latest")
HOW_TO = ("run them as root on a machine prepared by `scripts/docker-prepare` (dockerd and the images); "
          "the tests build the lab themselves with `scripts/swarm-lab up` (about 2 minutes)")


def lab_unavailable() -> str | None:
    """Why the lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return f"the swarm lab needs root (network namespaces, one dockerd per node): {HOW_TO}"
    for tool in ("dockerd", "docker", "ip", "nsenter", "iptables"):
        if shutil.which(tool) is None:
            return f"the swarm lab needs `{tool}`: {HOW_TO}"
    from support.docker_engine import _not_ready

    why = _not_ready(IMAGES)
    if why is not None:
        return f"the swarm lab copies the images from this host's engine: {why}; {HOW_TO}"
    return None


def read_env() -> dict[str, str]:
    out = {}
    for line in LAB_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = value.strip('"')
    return out


class Lab:
    """The lab: brought up here unless one was running already (then left as it was found)."""

    def __init__(self) -> None:
        self.started_here = False
        self.env: dict[str, str] = {}

    def run(self, *args: str, timeout: float = 300) -> str:
        r = subprocess.run([str(LAB_SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/swarm-lab {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r.stdout

    def up(self) -> None:
        was_up = LAB_ENV.exists() and subprocess.run([str(LAB_SCRIPT), "status"], capture_output=True).returncode == 0
        self.run("up")
        self.started_here = not was_up
        self.env = read_env()

    def down(self) -> None:
        if self.started_here:
            self.run("down")

    def rebuild(self, managers: int) -> None:
        """A fresh lab with `managers` managers. Promoting a node that an earlier module cut and
        healed fails on this Docker Engine (node 3 stayed a worker, its log saying `failed to renew
        the certificate: tls: private key does not match public key`), and a fresh lab also has
        none of a cut's aftermath in its overlay network."""
        self.run("down")
        self.run("up", "--managers", str(managers))
        self.env = read_env()

    @property
    def manager(self) -> str:
        return self.env["SWARM_LAB_MANAGER"]

    def node_socket(self, n: int) -> str:
        return self.env[f"SWARM_LAB_NODE{n}_DOCKER_HOST"]

    @property
    def nodes(self) -> range:
        """The node numbers, from 1 (the manager)."""
        return range(1, len(self._addresses()) + 1)

    def address(self, n: int) -> str:
        return self._addresses()[n - 1]

    def node_of(self, address: str) -> int:
        """The number of the node at `address` (a replica's host)."""
        return self._addresses().index(address) + 1

    def grow(self, nodes: int) -> None:
        """Join nodes to the lab up to `nodes` (their engines, the swarm, the images)."""
        self.run("up", "--nodes", str(nodes))
        self.env = read_env()

    def _addresses(self) -> list[str]:
        return self.env["SWARM_LAB_ADDRESSES"].split()

    def cut(self, n: int) -> None:
        self.run("cut", str(n))

    def heal(self, n: int) -> None:
        self.run("heal", str(n))

    def wait_all_ready(self, via: int, timeout: float = 180.0) -> None:
        """Until the swarm, asked through node `via`'s engine, has a leader and calls every node
        ready (after a heal: a node that was the Raft leader rejoins, and may call an election)."""
        import docker

        def ready() -> bool:
            client = docker.DockerClient(base_url=self.node_socket(via), timeout=10)
            try:
                nodes = client.api.nodes()
                return len(nodes) == len(self.nodes) and all(n["Status"]["State"] == "ready" for n in nodes)
            except Exception:   # no leader yet, or the engine slow to answer (a read timeout)
                return False
            finally:
                client.close()

        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the swarm did not call every node ready within {timeout:g} s")
            time.sleep(1.0)

    def netns_prefix(self, n: int) -> tuple[str, ...]:
        """The command prefix that runs a program in node `n`'s network namespace."""
        return ("nsenter", f"--net=/run/netns/sllab-n{n}")

    @property
    def vip(self) -> str:
        return self.env["SWARM_LAB_VIP"]

    def vip_start(self, port: int, prefer: int | None = None) -> None:
        self.run("vip", "start", "--port", str(port), *(("--prefer", str(prefer)) if prefer else ()))

    def vip_stop(self) -> None:
        self.run("vip", "stop")

    def vip_holder(self) -> int | None:
        """The reachable node holding the floating IP (`scripts/swarm-lab vip`), or None."""
        r = subprocess.run([str(LAB_SCRIPT), "vip"], capture_output=True, text=True, timeout=30)
        for line in r.stdout.splitlines():
            if "cut off" not in line:
                return int(line.split()[1])
        return None

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.manager, timeout=30)


def make_stack_file(path: Path, name: str, lease: dict | None = None) -> Path:
    """The bundled swarm stack renamed (its own services, network and volume), with placement
    that lets the acts tasks move: the database on the manager, users on the users node, acts
    spread over every node. `lease`: the control-plane lease's terms (swarm.lease)."""
    import yaml

    from selfieless.orchestrator.stack import BUNDLED_SWARM_STACK

    data = yaml.safe_load(BUNDLED_SWARM_STACK.read_text())
    data["name"] = name
    data["network"] = name
    data["variables"]["db_url"] = data["variables"]["db_url"].replace("selfieless-db", f"{name}-db")
    data["variables"]["users_url"] = f"http://{name}-users:80"
    db = data["dependencies"]["db"]
    db["volumes"] = {f"{name}-db-data": "/var/lib/mysql"}
    db["placement"] = {"constraints": ["node.role==manager"]}
    acts = data["services"]["acts"]
    acts["placement"] = {"constraints": ["node.labels.selfieless.lab==true"],
                         "preferences": [{"spread": "node.labels.selfieless.lab.node"}]}
    acts["autoscale"] = {"policy": "none"}
    for svc in data["services"].values():
        svc["environment"]["SELFIELESS_PUBLIC_URL"] = svc["environment"]["SELFIELESS_PUBLIC_URL"].replace(
            "selfieless-", f"{name}-")
    if lease is not None:
        data.setdefault("swarm", {})["lease"] = lease
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class SwarmUp(UpProcess):
    """`selfieless up STACK --driver swarm` as a subprocess, talking to the lab's manager."""

    driver = "swarm"
    converge_timeout = 240.0
    stop_timeout = 120.0
    down_timeout = 180.0

    def __init__(self, stack_path: Path, state_dir: Path, manager: str, gateway_port: int | None = None,
                 local_gateway: bool = False):
        self.local_gateway = local_gateway   # the stack says swarm: {gateway: local}
        # Below Swarm's range for the ports it picks (30000-32767): the gateway's public port and
        # its control port (the next one) are published on every node beside the tasks' ports.
        super().__init__(stack_path, state_dir, gateway_port or free_port(avoid=range(29999, 32768)))
        self.manager = manager

    @property
    def gateway(self) -> str:
        """The first node's gateway (the manager's on the lab; `up` names the same one), or the
        one gateway process beside `up` (swarm: {gateway: local})."""
        if self.local_gateway:
            return super().gateway
        return self.node_gateway(read_env()["SWARM_LAB_ADDRESSES"].split()[0])

    def node_gateway(self, address: str) -> str:
        """The gateway on the node at `address` (every node runs one)."""
        return f"http://{address}:{self.gateway_port}"

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "DOCKER_HOST": self.manager}

    def ready(self, service: str) -> list[dict]:
        return [r for r in self.replicas(service) if r["state"] == "ready"]

    def in_rotation(self, service: str) -> list[dict]:
        """Ready replicas the gateway sends requests to (not withdrawn as stalled, not ejected)."""
        return [r for r in self.ready(service) if r["in_pool"]]

    def scale(self, service: str, n: int) -> None:
        r = httpx.post(f"{self.admin}/api/scale", json={"service": service, "replicas": n}, timeout=10)
        assert r.status_code < 300, r.text


def remove_stack(client, name: str) -> None:
    """Whatever a failed test left on the swarm: the services and the network of stack `name`."""
    for s in client.services.list(filters={"label": f"selfieless.stack={name}"}):
        s.remove()
    for _ in range(40):
        nets = client.networks.list(filters={"label": f"selfieless.stack={name}"})
        if not nets:
            return
        for n in nets:
            try:
                n.remove()
            except Exception:
                pass
        time.sleep(0.5)


class GetLoad:
    """`clients` threads sending GETs through the gateway back to back; counts what failed (no
    answer, or a 5xx) and when, so a test or the benchmark can tell failures apart by time."""

    def __init__(self, url: str, clients: int = 4, timeout: float = 10.0):
        self.url = url
        self.clients = clients
        self.timeout = timeout
        self.ok = 0
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as c:
            while not self._stop.is_set():
                try:
                    r = c.get(self.url)
                    bad = f"HTTP {r.status_code}" if r.status_code >= 500 else None
                except httpx.HTTPError as e:
                    bad = f"{type(e).__name__}: {e}"
                with self._lock:
                    if bad is None:
                        self.ok += 1
                    else:
                        self.failures.append((time.monotonic(), bad))

    def __enter__(self) -> "GetLoad":
        for i in range(self.clients):
            t = threading.Thread(target=self._run, name=f"get-load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


class Writes:
    """Uploads of acts back to back (besides the GETs): what answered 201, and every failure."""

    def __init__(self, gw: str, ready_timeout: float = 120.0):
        self.gw = gw
        self.ready_timeout = ready_timeout
        self.user, self.category = f"u{random.randrange(10**9)}", f"k{random.randrange(10**9)}"
        self.acked: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()

    def __enter__(self) -> "Writes":
        with httpx.Client(timeout=10) as c:
            assert c.post(f"{self.gw}/api/v1/users", json={"username": self.user, "password": "b" * 40}).status_code == 201
            assert c.post(f"{self.gw}/api/v1/categories", json=[self.category]).status_code == 201
            # An upload crosses nodes (acts asks users about the name, over the overlay network),
            # which after an earlier test's node cut may take tens of seconds to carry it again
            # (README "Several machines"): the fault under test starts from a working write path.
            deadline = time.monotonic() + self.ready_timeout
            while not self._upload(c, record_failure=False):
                assert time.monotonic() < deadline, f"no upload acknowledged within {self.ready_timeout:g} s"
                time.sleep(0.5)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _upload(self, c: httpx.Client, record_failure: bool = True) -> bool:
        act_id = random.randrange(10**12)
        act = {"actId": act_id, "username": self.user, "timestamp": "28-11-2026:00-00-00", "caption": "r",
               "categoryName": self.category, "imgB64": "aGVsbG8="}
        try:
            r = c.post(f"{self.gw}/api/v1/acts", json=act)
            failure = None if r.status_code == 201 else f"HTTP {r.status_code} {r.text[:80]}"
        except httpx.HTTPError as e:
            failure = f"{type(e).__name__}: {e}"
        if failure is None:
            self.acked.append(act_id)
        elif record_failure:
            self.failures.append(failure)
        return failure is None

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                self._upload(c)
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)

    def stored(self) -> set[int]:
        out: set[int] = set()
        with httpx.Client(timeout=10) as c:
            total = c.get(f"{self.gw}/api/v1/categories").json()[self.category]
            for start in range(1, total + 1, 100):
                page = c.get(f"{self.gw}/api/v1/categories/{self.category}/acts",
                             params={"start": start, "end": min(total, start + 99)})
                assert page.status_code == 200, page.text
                out |= {a["actId"] for a in page.json()}
        return out


def gateway_answers(url: str, timeout: float) -> bool:
    """The gateway's own answer at `url` (`/`: its status page, no backend involved)."""
    try:
        r = httpx.get(url, timeout=timeout)
        return r.status_code == 200 and r.json().get("gateway") == "selfieless"
    except (httpx.HTTPError, ValueError):
        return False


def serving_again(url: str, t0: float, timeout: float = 60.0) -> float:
    """Seconds from t0 until a GET to `url` is answered 200 (tried back to back)."""
    with httpx.Client(timeout=2) as c:
        while True:
            try:
                if c.get(url).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{url} not serving again within {timeout:g} s")
            time.sleep(0.02)


def gateway_kill(up: SwarmUp, lab: Lab, stack: str, victim: int, clients: int = 2) -> dict:
    """Kill the gateway container on node `victim` under a GET load through every other node's
    gateway (`clients` each): how long until the node's gateway answers a GET again (Swarm
    starts another, the control plane sends it the routes and pools), and the failed GETs
    through the others."""
    import contextlib

    import docker

    engine = docker.DockerClient(base_url=lab.node_socket(victim), timeout=30)
    labels = {"label": [f"selfieless.stack={stack}", "selfieless.role=gateway"]}
    try:
        [container] = engine.containers.list(filters=labels)
        loads = [GetLoad(f"{up.node_gateway(lab.address(n))}/api/v1/acts/count", clients=clients)
                 for n in lab.nodes if n != victim]
        with contextlib.ExitStack() as running:
            for load in loads:
                running.enter_context(load)
            time.sleep(1.0)
            t0 = time.monotonic()
            container.kill()
            took = serving_again(f"{up.node_gateway(lab.address(victim))}/api/v1/acts/count", t0)
            time.sleep(1.0)
        [again] = engine.containers.list(filters=labels)
    finally:
        engine.close()
    return {"serving": took, "failures": [f for x in loads for f in x.failures], "total": sum(x.total for x in loads),
            "replaced": again.id != container.id}


class CuttableSocket:
    """A unix-socket relay in front of the manager's engine socket that a test can cut, as a
    network split cuts a control plane from the managers: after `cut()` the relay stops carrying
    bytes either way and new connections hang unanswered (nothing is refused: a cut refuses
    nothing). `close()` then drops every connection, so calls hung on it fail at once."""

    def __init__(self, target: str, path: Path):
        import socket

        self.target = target.removeprefix("unix://")
        self.path = path
        self._cut = threading.Event()
        self._socks: list = []
        self._lock = threading.Lock()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _keep(self, s) -> None:
        with self._lock:
            self._socks.append(s)

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self._keep(client)
            if self._cut.is_set():
                continue   # held open, never answered
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._keep(upstream)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self._cut.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        if not self._cut.is_set():   # a cut keeps both ends open (and silent) until close()
            for s in (src, dst):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def cut(self) -> None:
        self._cut.set()

    def close(self) -> None:
        self._cut.set()
        self.server.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass
        self.path.unlink(missing_ok=True)
