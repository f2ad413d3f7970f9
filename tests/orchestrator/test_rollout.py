"""Pure tests of the rolling-replacement state machine: a tiny simulator plays the executor."""

from __future__ import annotations

import pytest

from selfieless.orchestrator import rollout as ro


class Sim:
    """Plays the executor: starts become replicas, which become ready (or fail) when told."""

    def __init__(self, r: ro.Rollout, fail_new: str | None = None):
        self.r, self.fail_new, self.now, self.n = r, fail_new, 0.0, 0
        self.log: list[str] = []
        self.finished: ro.Finish | None = None
        self.serving_min = len([m for m in r.members if m.status == "ready"])

    def step(self) -> bool:
        self.r, cmds = ro.decide(self.r, self.now)
        for c in cmds:
            if isinstance(c, ro.StartReplica):
                self.n += 1
                rid = f"{c.version}{self.n}"
                self.log.append(f"start {c.version} {c.port}" + (" spare" if c.spare else ""))
                self.r = ro.started(self.r, rid, c.version, c.port)
                if c.version == "new" and self.fail_new == "exit":
                    self.r = ro.failed(self.r, rid, "exited with status 1", self.now)
                elif c.version == "new" and self.fail_new == "monitor":
                    self.r = ro.ready(self.r, rid, self.now)
                    self.r = ro.failed(self.r, rid, "probe failed", self.now + 1)
                else:
                    self.r = ro.ready(self.r, rid, self.now)
            elif isinstance(c, ro.StopReplica):
                m = next(m for m in self.r.members if m.id == c.id)
                self.log.append(f"stop {m.version} {m.port}" + (" drain" if c.drain else ""))
                self.r = ro.stopped(self.r, c.id)
            else:
                self.finished = c
        serving = len([m for m in self.r.members if m.status == "ready"])
        self.serving_min = min(self.serving_min, serving)
        self.now += 10  # past every monitor period
        return bool(cmds)

    def run(self, limit: int = 50) -> "Sim":
        for _ in range(limit):
            if self.finished:
                return self
            self.step()
        raise AssertionError(f"did not finish: {self.log}")


OLD = [("a", 8000), ("b", 8001), ("c", 8002)]
PORTS = list(range(8000, 8010))


def ports_of(r: ro.Rollout, version: str) -> list[int]:
    return sorted(m.port for m in r.members if m.version == version and m.status == "ready")


def test_start_first_one_at_a_time_never_drops_below_desired_and_settles_home():
    sim = Sim(ro.begin("acts", OLD, PORTS)).run()
    assert sim.finished.outcome == "complete"
    assert ports_of(sim.r, "new") == [8000, 8001, 8002] and ports_of(sim.r, "old") == []
    assert sim.serving_min == 3
    # The first new replica borrows a spare port; an old one stops only after a new one serves.
    # Every start happens with 3 serving, so none needs to boot ahead of them ("spare").
    assert sim.log[:2] == ["start new 8003 spare", "stop old 8000 drain"]
    assert sim.log[-2:] == ["start new 8002 spare", "stop new 8003 drain"]
    assert all(line.endswith("spare") for line in sim.log if line.startswith("start"))


def test_one_new_replica_unproven_at_a_time():
    r = ro.begin("acts", OLD, PORTS)
    r, cmds = ro.decide(r, 0.0)
    assert [type(c) for c in cmds] == [ro.StartReplica]
    r = ro.started(r, "n1", "new", cmds[0].port)
    r, cmds = ro.decide(r, 0.1)
    assert cmds == []                        # still starting: nothing else happens
    r = ro.ready(r, "n1", 1.0)
    r, cmds = ro.decide(r, 1.0)
    # An old replica leaves, but the next new one waits for the monitor period of the first.
    assert [type(c) for c in cmds] == [ro.StopReplica]
    r = ro.stopped(r, cmds[0].id)
    r, cmds = ro.decide(r, 2.0)
    assert cmds == []
    r, cmds = ro.decide(r, 6.5)
    assert [type(c) for c in cmds] == [ro.StartReplica]


def test_parallelism_starts_several_at_once():
    r = ro.begin("acts", OLD, PORTS, parallelism=2)
    r, cmds = ro.decide(r, 0.0)
    assert [(type(c), c.port) for c in cmds] == [(ro.StartReplica, 8003), (ro.StartReplica, 8004)]


def test_stop_first_stops_before_starting_on_the_same_port():
    sim = Sim(ro.begin("acts", OLD, PORTS, order="stop-first")).run()
    assert sim.finished.outcome == "complete"
    assert sim.log[:2] == ["stop old 8000 drain", "start new 8000"]
    assert all(not line.startswith("start new 800") or int(line[-4:]) <= 8002 for line in sim.log)
    assert ports_of(sim.r, "new") == [8000, 8001, 8002]


def test_new_version_that_exits_at_start_is_rolled_back_without_stopping_an_old_one():
    sim = Sim(ro.begin("acts", OLD, PORTS), fail_new="exit").run()
    assert sim.finished.outcome == "rolled_back"
    assert "never became healthy" in sim.finished.reason and "exited with status 1" in sim.finished.reason
    assert not any(line.startswith("stop old") for line in sim.log)
    assert ports_of(sim.r, "old") == [8000, 8001, 8002] and sim.serving_min == 3


def test_failure_within_monitor_rolls_back_and_restores_the_old_version():
    sim = Sim(ro.begin("acts", OLD, PORTS), fail_new="monitor").run()
    assert sim.finished.outcome == "rolled_back"
    assert "failed within its monitor period" in sim.finished.reason
    assert len(ports_of(sim.r, "old")) == 3 and ports_of(sim.r, "new") == []


def test_rollback_after_an_old_replica_was_stopped_starts_the_old_version_first():
    r = ro.begin("acts", OLD, PORTS)
    r, (start,) = ro.decide(r, 0.0)
    r = ro.ready(ro.started(r, "n1", "new", start.port), "n1", 1.0)
    r, (stop,) = ro.decide(r, 1.0)
    r = ro.stopped(r, stop.id)               # old 8000 gone, n1 serves on 8003
    r = ro.failed(r, "n1", "probe failed", now=2.0)
    r, cmds = ro.decide(r, 2.0)
    # The failed replica is already out of rotation: it stops at once; the old version comes back.
    assert cmds == [ro.StopReplica("n1", drain=False, reason="rollback"),
                    ro.StartReplica("old", 8000, reason="rollback: previous version")]
    r = ro.stopped(r, "n1")
    r, cmds = ro.decide(r, 2.5)
    assert cmds == []                         # waits for the old version to serve again
    r = ro.ready(ro.started(r, "o1", "old", 8000), "o1", 3.0)
    r, cmds = ro.decide(r, 3.0)
    assert [type(c) for c in cmds] == [ro.Finish] and cmds[0].outcome == "rolled_back"


def test_pause_leaves_everything_in_place():
    sim = Sim(ro.begin("acts", OLD, PORTS, failure_action="pause"), fail_new="exit").run()
    assert sim.finished.outcome == "paused"
    assert not any(line.startswith("stop old") for line in sim.log)


def test_a_proven_new_replica_failing_later_is_only_replaced():
    r = ro.begin("acts", [("a", 8000)], PORTS, monitor=5)
    r, (start,) = ro.decide(r, 0.0)
    r = ro.ready(ro.started(r, "n1", "new", start.port), "n1", 1.0)
    r = ro.failed(r, "n1", "exited", now=10.0)
    assert r.phase == "rolling"


def test_start_that_fails_outright_counts_as_never_healthy():
    r = ro.begin("acts", OLD, PORTS)
    r, (start,) = ro.decide(r, 0.0)
    r = ro.start_failed(r, "new", start.port, "no such image")
    assert r.phase == "rolling_back" and "no such image" in r.reason
    r, cmds = ro.decide(r, 0.0)
    assert [type(c) for c in cmds] == [ro.Finish]


def test_start_first_without_a_spare_port_replaces_stop_first():
    sim = Sim(ro.begin("acts", OLD, [8000, 8001, 8002])).run()
    assert sim.finished.outcome == "complete"
    # One short of the desired count while it boots: not a spare.
    assert sim.log[:2] == ["stop old 8000 drain", "start new 8000"]
    assert ports_of(sim.r, "new") == [8000, 8001, 8002]



# ---- the executor is slow: commands take effect ticks later, decide runs on every tick ----

class SlowSim:
    """Plays the executor as rollout_exec does: decide runs on every tick while starts and drains
    are under way (a start is reported one tick later and passes its first probe the tick after; a
    stop takes `stop_ticks`). Fails on a command the executor would carry out twice, or a start on
    a port a replica (or another start) still holds."""

    def __init__(self, r: ro.Rollout, stop_ticks: int = 2, fail_new: dict[int, str] | None = None):
        self.r, self.now, self.n, self.stop_ticks = r, 0.0, 0, stop_ticks
        self.fail_new = fail_new or {}           # port -> "exit" | "monitor", for new replicas
        self.events: list[tuple[float, object]] = []
        self.starting: dict[str, int] = {}       # asked for, not yet reported: id -> port
        self.asked_stop: set[str] = set()
        self.log: list[str] = []
        self.finished: ro.Finish | None = None
        self.serving: list[int] = []             # replicas in rotation after each tick
        self.unproven: list[int] = []            # new replicas starting or within monitor

    def step(self) -> None:
        due = [e for e in self.events if e[0] <= self.now]
        self.events = [e for e in self.events if e[0] > self.now]
        for _, event in due:
            self.r = event(self.r)
        self.r, cmds = ro.decide(self.r, self.now)
        for c in cmds:
            if isinstance(c, ro.StartReplica):
                held = {m.port for m in self.r.members if m.status != "stopped"}
                assert c.port not in held | set(self.starting.values()), (c, self.log)
                self.n += 1
                rid = f"{c.version}{self.n}"
                self.log.append(f"{self.now:g} start {c.version} {c.port}")
                self.starting[rid] = c.port
                self.events.append((self.now + 1, self._started(rid, c.version, c.port)))
            elif isinstance(c, ro.StopReplica):
                assert c.id not in self.asked_stop, f"{c.id} stopped twice: {self.log}"
                self.asked_stop.add(c.id)
                m = next(m for m in self.r.members if m.id == c.id)
                self.log.append(f"{self.now:g} stop {m.version} {m.port}" + (" drain" if c.drain else ""))
                self.events.append((self.now + self.stop_ticks, lambda r, i=c.id: ro.stopped(r, i)))
            else:
                self.finished = c
        members = self.r.members
        self.serving.append(len([m for m in members if m.status == "ready"]))
        self.unproven.append(len([rid for rid in self.starting if rid.startswith("new")]) + len([
            m for m in members if m.version == "new" and (m.status == "starting" or (
                m.status == "ready" and m.ready_at + self.r.monitor > self.now))]))
        self.now += 1

    def _started(self, rid: str, version: str, port: int):
        def event(r: ro.Rollout) -> ro.Rollout:
            del self.starting[rid]
            r = ro.started(r, rid, version, port)
            how = self.fail_new.get(port) if version == "new" else None
            if how == "exit":
                return ro.failed(r, rid, "exited with status 1", self.now)
            self.events.append((self.now + 1, lambda r: ro.ready(r, rid, self.now)))
            if how == "monitor":
                self.events.append((self.now + 2, lambda r: ro.failed(r, rid, "probe failed", self.now)))
            return r
        return event

    def run(self, limit: int = 200) -> "SlowSim":
        for _ in range(limit):
            if self.finished:
                return self
            self.step()
        raise AssertionError(f"did not finish: {self.log}")


def _slow(order, par, ports, old, desired, **kw) -> SlowSim:
    r = ro.begin("acts", [(f"old{p}", p) for p in old], ports, desired=desired, parallelism=par,
                 order=order, monitor=3)
    return SlowSim(r, **kw).run()


def test_slow_executor_every_layout_converges_home_without_repeating_a_command():
    three = [8000, 8001, 8002]
    cases = [  # order, parallelism, port range, old replicas' ports, desired, fewest serving
        ("start-first", 1, PORTS, three, 3, 3),
        ("start-first", 2, PORTS, three, 3, 3),
        ("start-first", 3, PORTS, three, 3, 3),
        ("start-first", 1, [8000, 8001, 8002, 8003], three, 3, 3),
        # No spare port: one at a time, whatever the parallelism.
        ("start-first", 1, three, three, 3, 2),
        ("start-first", 2, three, three, 3, 2),
        ("start-first", 1, PORTS, [8000, 8001], 3, 2),      # one old replica was already down
        ("start-first", 1, PORTS, three, 2, 2),             # the service was scaled in meanwhile
        ("stop-first", 1, PORTS, three, 3, None),
        ("stop-first", 2, PORTS, three, 3, None),
        ("stop-first", 1, three, three, 3, None),
        ("stop-first", 1, PORTS, [8000, 8001], 3, None),
        ("stop-first", 1, PORTS, three, 2, None),
    ]
    for order, par, ports, old, desired, serving_min in cases:
        sim = _slow(order, par, ports, old, desired)
        where = (order, par, ports, old, desired, sim.log)
        assert sim.finished == ro.Finish("complete", f"{desired} replica(s) on the new version"), where
        assert ports_of(sim.r, "new") == list(range(8000, 8000 + desired)), where
        assert {m.status for m in sim.r.members} == {"ready", "stopped"}, where
        assert [m.status for m in sim.r.members if m.version == "old"] == ["stopped"] * len(old), where
        if order == "start-first":
            assert min(sim.serving) == serving_min and max(sim.unproven) <= par, where
    # Two at a time: both borrow a spare port; the old replicas leave only once those serve.
    assert _slow("start-first", 2, PORTS, three, 3).log == [
        "0 start new 8003", "0 start new 8004", "2 stop old 8000 drain", "2 stop old 8001 drain",
        "5 start new 8000", "7 stop old 8002 drain", "10 start new 8001", "15 stop new 8004 drain",
        "16 start new 8002", "21 stop new 8003 drain"]


@pytest.mark.xfail(strict=True, reason="stop-first starts a new replica and drains the next old one in "
                   "the same decision: the start made within the loop is not counted in flight")
def test_stop_first_replaces_at_most_parallelism_replicas_at_once():
    for par in (1, 2):
        sim = _slow("stop-first", par, PORTS, [8000, 8001, 8002], 3)
        assert min(sim.serving) == 3 - par and max(sim.unproven) <= par, sim.log
