"""Process liveness (orchestrator/pids.py) against real processes: running, zombie, reaped, reused."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from selfieless.orchestrator.pids import pid_alive, start_ticks


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_running_process_is_alive_and_has_a_start_time():
    p = _sleeper()
    try:
        ticks = start_ticks(p.pid)
        assert ticks is not None and ticks > 0
        assert pid_alive(p.pid) and pid_alive(p.pid, ticks)
    finally:
        p.kill()
        p.wait()


def test_unreaped_zombie_counts_as_gone():
    p = _sleeper()
    p.kill()
    # Not reaped: the kernel keeps a zombie entry that kill(pid, 0) still accepts.
    deadline = time.monotonic() + 10
    while pid_alive(p.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(p.pid, 0)  # the pid still exists...
    assert not pid_alive(p.pid)  # ...but the process is gone
    assert start_ticks(p.pid) is None
    p.wait()
    assert not pid_alive(p.pid)


def test_another_start_time_means_a_reused_pid():
    p = _sleeper()
    try:
        ticks = start_ticks(p.pid)
        assert not pid_alive(p.pid, ticks - 1)
        assert not pid_alive(p.pid, ticks + 1)
    finally:
        p.kill()
        p.wait()


def test_command_name_with_spaces_and_parentheses(tmp_path):
    # Field 2 of /proc/PID/stat is "(comm)", and comm (the executable's name) may hold ") " itself.
    odd = tmp_path / "x) y (z"
    odd.symlink_to("/bin/sleep")
    before = _sleeper()
    p = subprocess.Popen([str(odd), "60"])
    after = _sleeper()
    try:
        deadline = time.monotonic() + 10
        while "(x) y (z)" not in open(f"/proc/{p.pid}/stat").read():
            assert time.monotonic() < deadline, "the odd command name never showed in /proc"
            time.sleep(0.01)
        # Parsed from the right field: it started between the two processes around it.
        assert start_ticks(before.pid) <= start_ticks(p.pid) <= start_ticks(after.pid)
        assert pid_alive(p.pid, start_ticks(p.pid))
    finally:
        for q in (before, p, after):
            q.kill()
            q.wait()
