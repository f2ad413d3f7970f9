"""A replica port another program holds (taken_ports.py, drivers/port_holder.py): the plan goes on
to the next free port, and says so when none is left; then a real process-driver stack beside a
real socket holding its ports."""

from __future__ import annotations

import os
import socket

import pytest

from selfieless.orchestrator import taken_ports as tp
from selfieless.orchestrator.assemble import start_system
from selfieless.orchestrator.drivers.port_holder import holder_of, listening_inodes
from selfieless.orchestrator.plan import Slot, Start
from selfieless.orchestrator.replica import ReplicaState as S

from orch_helpers import echo_stack, wait_until

PORTS = range(9400, 9404)
HELD = {9400: tp.TakenPort(9400, "pid 7 (nc)", 100.0)}


@pytest.mark.parametrize("desired, slots, taken, now, starts, note", [
    (1, [], {}, 100.0, [9400], None),
    (1, [], HELD, 100.0, [9401], None),                       # the next free port, at once
    (2, [Slot(9402, S.READY, "r")], HELD, 110.0, [9401], None),
    (1, [], HELD, 100.0 + tp.TAKEN_RECHECK, [9400], None),   # tried again after the recheck delay
    (4, [Slot(9401, S.READY, "a"), Slot(9402, S.READY, "b"), Slot(9403, S.READY, "c")], HELD, 101.0, [],
     "no free port in 9400-9403 for 1 replica of acts: taken by other programs: 9400 (pid 7 (nc)); "
     "tried again every 30 s"),
    (3, [Slot(9401, S.READY, "a")], {**HELD, 9402: tp.TakenPort(9402, None, 100.0)}, 101.0, [9403],
     "no free port in 9400-9403 for 1 replica of acts: taken by other programs: 9400 (pid 7 (nc)), 9402; "
     "tried again every 30 s"),
])
def test_place(desired, slots, taken, now, starts, note):
    actions, said = tp.place("acts", desired, slots, PORTS, taken, now)
    assert [a.port for a in actions if isinstance(a, Start)] == starts
    assert said == note


def test_taken_text_and_record():
    taken = tp.record({}, 9400, None, 5.0)
    assert taken == {9400: tp.TakenPort(9400, None, 5.0)}
    assert tp.taken_text("acts", taken[9400], "9400-9409") == (
        "port 9400 is taken by another program: acts starts on the next free port of 9400-9409 "
        "(port 9400 is tried again after 30 s)")


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:24B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0
   1: 0100007F:24B8 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0
   2: 00000000:24B9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4444 1 0
"""


def test_listening_inodes_reads_only_listeners_of_the_port():
    assert listening_inodes(PROC_NET_TCP, 0x24B8) == {"4242"}   # 9400; the connection on it is not one
    assert listening_inodes(PROC_NET_TCP, 9000) == set()


def listener(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("0.0.0.0", port))
    s.listen()
    return s


def test_holder_of_names_this_process():
    with listener(0) as s:
        assert holder_of(s.getsockname()[1]) == f"pid {os.getpid()} ({open('/proc/self/comm').read().strip()})"



@pytest.mark.anyio
async def test_a_taken_port_is_skipped_and_said(tmp_path, ports):
    # Another program listens on the first port: the replica starts on the second one at once.
    with listener(ports[0]):
        system = await start_system(echo_stack(ports), tmp_path, gateway_overrides={"host": "127.0.0.1"})
        orch = system.orchestrator
        try:
            await orch.wait_ready(20)
            assert [r.port for r in orch.services["echo"].replicas.values()] == [ports[1]]
            said = [e.reason for e in orch.events.since(0) if e.kind == "port"]
            assert said and said[0].startswith(f"port {ports[0]} is taken by pid {os.getpid()} ("), said
        finally:
            await system.stop()


@pytest.mark.anyio
async def test_a_range_wholly_taken_is_said_and_the_first_port_freed_is_used(tmp_path, ports, monkeypatch):
    monkeypatch.setattr(tp, "TAKEN_RECHECK", 1.0)
    two = ports[:2]
    held = [listener(p) for p in two]
    system = await start_system(echo_stack(two), tmp_path, gateway_overrides={"host": "127.0.0.1"})
    orch = system.orchestrator
    try:
        note = await wait_until(lambda: orch.status()["services"]["echo"]["no_port"], 20, what="no_port")
        assert note.startswith(f"no free port in {two[0]}-{two[1]} for 1 replica of echo: taken by other "
                               f"programs: {two[0]} (pid {os.getpid()} ("), note
        assert any(e.kind == "port" and e.reason == note for e in orch.events.since(0))
        held.pop().close()
        await orch.wait_ready(20)
        assert [r.port for r in orch.services["echo"].replicas.values()] == [two[1]]
        assert orch.status()["services"]["echo"]["no_port"] is None
    finally:
        for s in held:
            s.close()
        await system.stop()
