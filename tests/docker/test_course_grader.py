"""The course grader's acceptance scenario, step for step, against the bundled Docker stack
(`selfieless up --driver docker`, gateway on port 80 when free, else a free port):

  exactly one container whose `docker ps` line contains `acts`, published on 0.0.0.0:8000, healthy;
  20 GET /api/v1/categories through the gateway, each < 300;
  141 s after the first of them: exactly two acts containers, the newest on 0.0.0.0:8001;
  6 more requests split exactly 3 and 3 between the two ports (the per-replica counters);
  POST localhost:8000/api/v1/_crash -> 200;
  20 s later: exactly two acts containers, the newest a new container on 8000, healthy;
  120 s later: exactly one acts container.

With the real timings (window 120 s; about 5 minutes; marked slow) and time-compressed (window
12 s: a container needs a second or two to start and Docker's health check runs every 3 s, so the
compressed run keeps a few seconds of absolute slack where the course has 21 s and 20 s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import pytest

from docker_stack_support import Up, acts_lines, free_port, make_stack_file, port_free, stack_containers
from support.processes import wait_until as wait_for

COURSE_PORTS = [*range(8000, 8010), 8100, 8200, 13306]


@dataclass
class Timings:
    window: float          # autoscaling window
    scaled_check: float    # after the first request: two acts containers (course: 141 s)
    crash_check: float     # after the crash: a new container on 8000, healthy (course: 20 s)
    final_check: float     # after that: one acts container again (course: 120 s)


REAL = Timings(window=120, scaled_check=141, crash_check=20, final_check=120)
COMPRESSED = Timings(window=12, scaled_check=15, crash_check=6, final_check=12)


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def _cid(line: str) -> str:
    return line.split()[0]


def run_grader(tmp_path, t: Timings) -> None:
    if stack_containers("selfieless"):
        pytest.fail("a `selfieless` Docker stack is already running here (docker ps --filter "
                    "label=selfieless.stack=selfieless); stop it with `selfieless down` first")
    busy = [p for p in COURSE_PORTS if not port_free(p)]
    assert not busy, f"the course's host ports must be free: {busy} are in use"
    stack = None if t is REAL else make_stack_file(tmp_path, "selfieless", window=t.window, ports=False)
    up = Up(stack, tmp_path / "state", gateway_port=free_port([80])).start()
    log = []

    def step(msg: str) -> None:
        log.append(f"{time.strftime('%H:%M:%S')} {msg}")
        print(log[-1], flush=True)

    try:
        up.wait_converged(180)
        gw = up.gateway
        # 1. Exactly one acts container, on 0.0.0.0:8000, healthy (Docker's HEALTHCHECK).
        lines = wait_for(lambda: (x := acts_lines()) and len(x) == 1 and "(healthy)" in x[0] and x, 30,
                         0.2, what=f"one healthy acts container: {acts_lines()}")
        assert "0.0.0.0:8000->" in lines[0], lines
        step(f"one acts container: {lines[0]}")
        with httpx.Client(timeout=10) as client:
            # 2. 20 requests through the gateway.
            t_first = time.monotonic()
            for i in range(20):
                r = client.get(f"{gw}/api/v1/categories")
                assert r.status_code < 300, (i, r.status_code, r.text)
            step("20 GET /api/v1/categories through the gateway: all < 300")
            # 3. 141 s after the first: two acts containers, the newest on 8001.
            _sleep_until(t_first + t.scaled_check)
            lines = acts_lines()
            step(f"{t.scaled_check:g} s after the first request: {lines}")
            assert len(lines) == 2, lines
            assert "0.0.0.0:8001->" in lines[0], lines  # docker ps lists the newest first
            # 4. Six requests, exactly three to each port.
            wait_for(lambda: up.ready_ports("acts") == [8000, 8001], 10, what="both acts replicas ready")
            before = up.served_by_port("acts")
            for i in range(6):
                r = client.get(f"{gw}/api/v1/categories")
                assert r.status_code < 300, (i, r.status_code)
            after = up.served_by_port("acts")
            split = {p: after[p] - before.get(p, 0) for p in after}
            step(f"6 more requests reached the ports {split}")
            assert split == {8000: 3, 8001: 3}, (before, after)
            # 5. Crash the replica on 8000 (directly, not through the gateway).
            [old_8000] = [_cid(x) for x in lines if "0.0.0.0:8000->" in x]
            r = client.post("http://localhost:8000/api/v1/_crash")
            assert r.status_code == 200, r.status_code
            t_crash = time.monotonic()
            step("POST localhost:8000/api/v1/_crash -> 200")
        # 6. 20 s later: two acts containers, the newest a new one on 8000, healthy.
        _sleep_until(t_crash + t.crash_check)
        lines = acts_lines()
        step(f"{t.crash_check:g} s after the crash: {lines}")
        assert len(lines) == 2, lines
        assert "0.0.0.0:8000->" in lines[0] and _cid(lines[0]) != old_8000, (old_8000, lines)
        assert "(healthy)" in lines[0], lines
        # 7. 120 s later: one acts container.
        _sleep_until(t_crash + t.crash_check + t.final_check)
        lines = acts_lines()
        step(f"{t.final_check:g} s later: {lines}")
        assert len(lines) == 1, lines
        assert "0.0.0.0:8000->" in lines[0], lines
    except BaseException:
        print("\n".join(log), "\n--- selfieless up output ---\n", up.log())
        raise
    finally:
        r = up.down()
        assert r.returncode == 0, r.stdout + r.stderr
    assert stack_containers("selfieless") == []


def test_course_grader_scenario_compressed(tmp_path):
    run_grader(tmp_path, COMPRESSED)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_course_grader_scenario_real_timings(tmp_path):
    run_grader(tmp_path, REAL)
