"""The scale stack (issue 28) end to end, at a size a test can afford: `selfieless up` of
stacks/scale.yaml with 56 echo replicas (50 behind one route), routing to each service, the
summarised status, the dashboard's summary card, kill -9 of five replicas replaced, and
`selfieless down` leaving no process and no listener behind. benchmarks/scale.py measures the
same at 100 to 1,000 replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.ports import free_port, free_port_blocks
from support.processes import kill_all, listening_on, wait_until, working_in

STACK = Path(__file__).resolve().parents[2] / "src" / "selfieless" / "stacks" / "scale.yaml"
COUNTS = {"echo1": 50, "echo2": 4, "echo3": 1, "echo4": 1}
CHROMIUM = Path(os.environ.get("SELFIELESS_TEST_CHROMIUM", "/usr/bin/chromium"))


class ScaleStack:
    def __init__(self, tmp: Path):
        self.home = tmp / "run"  # `up`'s working directory, inherited by all it starts
        self.home.mkdir()
        # The four ranges keep their spacing under --ports-from: N, N+1000, ...; 51 ports each suffice.
        blocks = free_port_blocks(51, count=4, spacing=1000)
        first = blocks[0][0]
        self.ranges = [(b[0], b[-1]) for b in blocks]
        # The stack declares 1,000 ports a service, of which only the blocks above were checked free;
        # a gateway or admin port anywhere in that span is refused as an overlap.
        declared = range(first, blocks[-1][0] + 1000)
        self.gateway = f"http://127.0.0.1:{free_port(avoid=declared)}"
        self.admin = f"http://127.0.0.1:{free_port(avoid=declared)}"
        self.log = tmp / "up.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "selfieless", "up", str(STACK), "--quiet", "--port", self.gateway.rsplit(":", 1)[1],
                 "--admin-port", self.admin.rsplit(":", 1)[1], "--ports-from", str(first),
                 "--state-dir", str(tmp / "state")],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.home)

    def status(self, **params) -> dict | None:
        assert self.proc.poll() is None, f"`up` exited:\n{self.log.read_text()[-3000:]}"
        try:
            return httpx.get(self.admin + "/api/status", params=params, timeout=10).json()
        except httpx.HTTPError:
            return None

    def converged(self) -> dict | None:
        st = self.status()
        return st if st and st["converged"] and all(
            st["services"][n]["ready"] == c == len(st["services"][n]["replicas"]) for n, c in COUNTS.items()) else None

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        kill_all(working_in(self.home))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = ScaleStack(tmp_path_factory.mktemp("scale"))
    try:
        wait_until(lambda: s.status() is not None, 60, 0.2, what="the admin API")
        for name, n in COUNTS.items():
            httpx.post(s.admin + "/api/scale", json={"service": name, "replicas": n}, timeout=10).raise_for_status()
        wait_until(s.converged, 120, 0.2, what=f"{sum(COUNTS.values())} ready echo replicas")
        yield s
    finally:
        s.close()


def test_each_route_reaches_its_own_service(stack):
    with httpx.Client(base_url=stack.gateway, timeout=10) as c:
        for name in COUNTS:
            ports = set()
            for _ in range(8):
                r = c.get(f"/{name}/hello")
                assert r.status_code == 200 and r.json()["service"] == name
                ports.add(r.json()["port"])
            assert len(ports) == min(8, COUNTS[name])  # round-robin over the service's replicas


def test_status_lists_a_few_and_counts_the_rest(stack):
    echo1 = stack.status(list=20)["services"]["echo1"]
    assert len(echo1["replicas"]) == 20 and echo1["not_listed"] == {"ready": 30}
    cli = subprocess.run([sys.executable, "-m", "selfieless", "status", "--admin", stack.admin],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert cli.returncode == 0, cli.stderr
    assert "and 30 more: 30 ready (--all lists them)" in cli.stdout


def test_dashboard_draws_a_summary_card_past_its_limit(stack):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (Debian package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install playwright (never `playwright install`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(base_url=stack.admin)
            page.goto("/")
            page.wait_for_selector("[data-testid=more-echo1]", timeout=30_000)
            assert page.eval_on_selector("[data-testid=more-echo1]", "e => e.dataset.count") == "2"
            assert page.eval_on_selector_all("[data-testid=replicas-echo1] li", "els => els.length") == 49
            assert page.eval_on_selector_all("[data-testid=replicas-echo2] li", "els => els.length") == 4
            assert page.query_selector("[data-testid=more-echo2]") is None
        finally:
            browser.close()


def test_kill_9_of_five_replicas_are_replaced(stack):
    st = stack.status()
    victims = st["services"]["echo1"]["replicas"][:5]
    for r in victims:
        os.kill(r["pid"], signal.SIGKILL)
    gone = {r["id"] for r in victims}
    wait_until(lambda: (s := stack.converged()) and not gone & {r["id"] for r in s["services"]["echo1"]["replicas"]},
               60, 0.1, what="the killed replicas replaced")


def test_down_leaves_nothing_behind(stack):
    r = subprocess.run([sys.executable, "-m", "selfieless", "down", "--admin", stack.admin, "--timeout", "120"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    stack.proc.wait(60)
    wait_until(lambda: not working_in(stack.home), 10, 0.1, what="every process of the stack gone")
    assert listening_on(stack.ranges) == []
