"""Pure tests of the rolling-replacement state machine: a tiny simulator plays the executor."""

from __future__ import annotations

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

    def __init__(self, r: ro.Rollout, stop_ticks: int = 2, fail_new: dict[int, str] | None = None,
                 start_ticks: int = 1):
        self.r, self.now, self.n, self.stop_ticks, self.start_ticks = r, 0.0, 0, stop_ticks, start_ticks
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
                self.events.append((self.now + self.start_ticks, self._started(rid, c.version, c.port)))
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
            self.events.append((self.now + 1, lambda r: self._ready(r, rid)))
            if how == "monitor":
                self.events.append((self.now + 2, lambda r: ro.failed(r, rid, "probe failed", self.now)))
            return r
        return event

    def _ready(self, r: ro.Rollout, rid: str) -> ro.Rollout:
        # Like the executor, only a replica still starting is reported as passing its probe.
        m = next(m for m in r.members if m.id == rid)
        return ro.ready(r, rid, self.now) if m.status == "starting" else r

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
        assert sim.finished == ro.Finish("complete", f"all {desired} replica(s) replaced"), where
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


def test_stop_first_replaces_at_most_parallelism_replicas_at_once():
    # (It used to start a new replica and drain the next old one in the same decision.)
    for par in (1, 2):
        sim = _slow("stop-first", par, PORTS, [8000, 8001, 8002], 3)
        assert min(sim.serving) == 3 - par and max(sim.unproven) <= par, sim.log


def test_slow_executor_rollbacks_restore_the_old_version_before_the_new_one_leaves():
    three = [8000, 8001, 8002]
    cases = [  # order, parallelism, ports, new replica that fails (port: how) -> reason, commands
        ("start-first", 1, PORTS, {8003: "exit"},
         "new replica new1 on port 8003 never became healthy: exited with status 1",
         ["0 start new 8003", "1 stop new 8003"]),
        ("start-first", 1, three, {8000: "exit"},
         "new replica new1 on port 8000 never became healthy: exited with status 1",
         ["0 stop old 8000 drain", "2 start new 8000", "3 stop new 8000", "5 start old 8000"]),
        ("start-first", 1, PORTS, {8000: "monitor"},
         "new replica new2 on port 8000 failed within its monitor period: probe failed",
         ["0 start new 8003", "2 stop old 8000 drain", "5 start new 8000", "7 stop old 8001 drain",
          "8 stop new 8000", "8 start old 8004", "8 start old 8005", "10 stop new 8003 drain"]),
        ("start-first", 2, PORTS, {8004: "monitor"},
         "new replica new2 on port 8004 failed within its monitor period: probe failed",
         ["0 start new 8003", "0 start new 8004", "2 stop old 8000 drain", "2 stop old 8001 drain",
          "3 stop new 8004", "3 start old 8005", "3 start old 8006", "5 stop new 8003 drain"]),
        ("start-first", 2, PORTS, {8000: "monitor"},
         "new replica new3 on port 8000 failed within its monitor period: probe failed",
         ["0 start new 8003", "0 start new 8004", "2 stop old 8000 drain", "2 stop old 8001 drain",
          "5 start new 8000", "7 stop old 8002 drain", "8 stop new 8000", "8 start old 8001",
          "8 start old 8005", "8 start old 8006", "10 stop new 8004 drain", "10 stop new 8003 drain"]),
        # The other new replica is still starting: it never served, so it goes at once too.
        ("start-first", 2, PORTS, {8004: "exit"},
         "new replica new2 on port 8004 never became healthy: exited with status 1",
         ["0 start new 8003", "0 start new 8004", "1 stop new 8003", "1 stop new 8004"]),
    ]
    for order, par, ports, fail, reason, log in cases:
        sim = _slow(order, par, ports, [8000, 8001, 8002], 3, fail_new=fail)
        where = (order, par, ports, fail, sim.log)
        assert sim.finished == ro.Finish("rolled_back", reason), where
        # The failed replica is out of rotation: it stops at once. Serving new replicas are drained
        # (highest port first) only once as many old-version replicas serve as before.
        assert sim.log == log, where
        # Finished only once the old version serves at full strength and every new replica is gone.
        assert len(ports_of(sim.r, "old")) == 3, where
        assert {m.status for m in sim.r.members if m.version == "new"} == {"stopped"}, where
        assert min(sim.serving) >= 2, where


def test_a_finished_rollout_decides_nothing_more():
    # A timer tick racing the end must not start or stop anything (after a rollback that would be
    # new-version replicas again).
    for sim in (Sim(ro.begin("acts", OLD, PORTS)).run(),
                Sim(ro.begin("acts", OLD, PORTS), fail_new="exit").run(),
                Sim(ro.begin("acts", OLD, PORTS, failure_action="pause"), fail_new="exit").run()):
        assert sim.r.phase == sim.finished.outcome
        assert ro.decide(sim.r, sim.now + 100) == (sim.r, [])


def test_a_new_replica_is_proven_exactly_monitor_seconds_after_it_joined():
    cases = [  # joined at, monitor, now -> the next one starts
        (1.0, 5, 5.5, False), (1.0, 5, 5.99, False), (1.0, 5, 6.0, True),
        (0.0, 5, 4.99, False), (0.0, 5, 5.0, True),
    ]
    for joined, monitor, now, starts in cases:
        r = ro.begin("acts", OLD, PORTS, monitor=monitor)
        r, (start,) = ro.decide(r, joined)
        r = ro.ready(ro.started(r, "n1", "new", start.port), "n1", joined)
        r, (stop,) = ro.decide(r, joined)
        assert stop == ro.StopReplica("a", drain=True, reason="replaced by a new replica that is serving")
        r, cmds = ro.decide(ro.stopped(r, "a"), now)
        expected = [ro.StartReplica("new", 8000, "rolling replacement (start-first)", spare=True)] if starts else []
        assert cmds == expected, (joined, monitor, now)


def test_a_failure_within_monitor_rolls_back_and_one_after_it_does_not():
    cases = [  # joined at, failed at -> the rollout rolls back
        (1.0, 1.0, True), (1.0, 5.5, True), (1.0, 5.99, True), (1.0, 6.0, False), (1.0, 60, False),
        (0.0, 4.99, True), (0.0, 5.0, False),
    ]
    for joined, at, rolls_back in cases:
        r = ro.begin("acts", OLD, PORTS, monitor=5)
        r, (start,) = ro.decide(r, joined)
        r = ro.ready(ro.started(r, "n1", "new", start.port), "n1", joined)
        r = ro.failed(r, "n1", "probe failed", now=at)
        assert r.phase == ("rolling_back" if rolls_back else "rolling"), (joined, at)
        assert r.reason == ("new replica n1 on port 8003 failed within its monitor period: probe failed"
                            if rolls_back else ""), (joined, at)


def test_reports_about_replicas_on_their_way_out_change_nothing():
    # The executor reports a replica it is stopping (or already stopped, or never knew) as gone.
    r = ro.begin("acts", OLD, PORTS)
    r, (start,) = ro.decide(r, 0.0)
    r = ro.ready(ro.started(r, "n1", "new", start.port), "n1", 0.0)
    r, (stop,) = ro.decide(r, 0.0)                    # old "a" is draining
    r = ro.stopped(ro.failed(r, "n1", "probe failed", 1.0), "n1")   # a rollback, n1 gone
    r, cmds = ro.decide(r, 1.0)
    assert cmds == [ro.StartReplica("old", 8003, "rollback: previous version")]
    for id in ("a", "n1", "nobody"):               # stopping, stopped, unknown
        assert ro.failed(r, id, "gone", 2.0) == r
    new = ro.begin("acts", OLD, PORTS)
    new, (start,) = ro.decide(new, 0.0)
    new = ro.started(new, "n1", "new", start.port)
    assert ro.failed(new, "nobody", "gone", 1.0) == new


def test_replicas_that_fail_during_the_rollout_are_stopped_and_replaced():
    # An old replica that crashes is cleared away and the rollout goes on; no other old one stops
    # for its sake, the new replica that starts next takes its place.
    r = ro.begin("acts", OLD, PORTS)
    r, (start,) = ro.decide(r, 0.0)
    r = ro.started(r, "n1", "new", start.port)
    r = ro.failed(r, "b", "exited with status 137", 0.5)
    assert r.phase == "rolling"
    r, cmds = ro.decide(r, 0.5)
    assert cmds == [ro.StopReplica("b", drain=False, reason="failed")]
    r, cmds = ro.decide(r, 0.6)
    assert cmds == []                                 # not asked twice while it stops
    r = ro.ready(ro.stopped(r, "b"), "n1", 1.0)
    r, cmds = ro.decide(r, 1.0)
    assert cmds == []                                 # a, c and n1 serve: nothing to retire
    r, cmds = ro.decide(r, 6.0)
    assert cmds == [ro.StartReplica("new", 8001, "rolling replacement (start-first)", spare=True)]
    # A new replica that served past its monitor and then fails is replaced like any broken one.
    r = ro.failed(r, "n1", "exited with status 1", 7.0)
    assert r.phase == "rolling"
    r, cmds = ro.decide(r, 7.0)
    assert cmds == [ro.StopReplica("n1", drain=False, reason="failed")]
    r = ro.ready(ro.started(ro.stopped(r, "n1"), "n2", "new", 8001), "n2", 8.0)
    r, cmds = ro.decide(r, 8.0)
    assert cmds == []                                 # a, c, n2 serve; n2 unproven
    r, cmds = ro.decide(r, 13.0)
    assert cmds == [ro.StartReplica("new", 8003, "rolling replacement (start-first)", spare=True)]


def test_decide_while_starts_are_under_way_asks_for_nothing_more():
    for par, ports in [(1, [8003]), (5, [8003, 8004, 8005])]:
        r = ro.begin("acts", OLD, PORTS, parallelism=par)
        r, cmds = ro.decide(r, 0.0)
        assert [(c.version, c.port) for c in cmds] == [("new", p) for p in ports]
        assert ro.decide(r, 0.1)[1] == []
    r = ro.begin("acts", OLD, PORTS, order="stop-first")
    r, cmds = ro.decide(r, 0.0)
    assert cmds == [ro.StopReplica("a", drain=True, reason="stop-first: makes room for a new replica")]
    assert ro.decide(r, 0.1)[1] == []                 # still draining
    r, cmds = ro.decide(ro.stopped(r, "a"), 1.0)
    assert cmds[0] == ro.StartReplica("new", 8000, "rolling replacement (stop-first)")


def _rolling_back_with_old_a_stopped() -> ro.Rollout:
    """n1 (new, 8003) served, old a (8000) was stopped for it, then n1 failed within its monitor."""
    r = ro.begin("acts", OLD, PORTS)
    r, (start,) = ro.decide(r, 0.0)
    r = ro.ready(ro.started(r, "n1", "new", start.port), "n1", 1.0)
    r, (stop,) = ro.decide(r, 1.0)
    return ro.failed(ro.stopped(r, "a"), "n1", "probe failed", 2.0)


def test_rollback_clears_away_old_replicas_that_fail_meanwhile():
    r, cmds = ro.decide(_rolling_back_with_old_a_stopped(), 2.0)
    assert cmds == [ro.StopReplica("n1", drain=False, reason="rollback"),
                    ro.StartReplica("old", 8000, "rollback: previous version")]
    r = ro.ready(ro.started(ro.stopped(r, "n1"), "o1", "old", 8000), "o1", 3.0)
    r = ro.failed(r, "c", "exited with status 137", 3.5)
    assert r.phase == "rolling_back"
    r, cmds = ro.decide(r, 3.5)
    # c still holds 8002 until it is stopped: its successor takes the next free port.
    assert cmds == [ro.StartReplica("old", 8003, "rollback: previous version"),
                    ro.StopReplica("c", drain=False, reason="failed")]
    assert ro.decide(r, 3.6)[1] == []                 # c is not asked twice; o2 not started twice
    r = ro.ready(ro.started(r, "o2", "old", 8003), "o2", 4.0)
    assert ro.decide(r, 4.0)[1] == []                 # finished only once c is gone
    r, cmds = ro.decide(ro.stopped(r, "c"), 4.5)
    assert cmds == [ro.Finish("rolled_back", "new replica n1 on port 8003 failed within its monitor "
                                             "period: probe failed")]


def test_rollback_waits_for_the_old_version_to_serve_again_before_finishing():
    r, _ = ro.decide(_rolling_back_with_old_a_stopped(), 2.0)
    r = ro.stopped(r, "n1")
    assert ro.decide(r, 2.5)[1] == []                 # the old replica is asked for, not reported
    r = ro.started(r, "o1", "old", 8000)
    assert ro.decide(r, 3.0)[1] == []                 # started, not yet serving: none more started
    r = ro.ready(r, "o1", 3.5)
    assert [type(c) for c in ro.decide(r, 3.5)[1]] == [ro.Finish]


def test_rollback_without_a_free_port_starts_the_old_version_once_the_new_one_is_gone():
    r = ro.begin("acts", OLD, [8000, 8001, 8002])
    r, (stop,) = ro.decide(r, 0.0)
    r, (start,) = ro.decide(ro.stopped(r, stop.id), 1.0)
    r = ro.failed(ro.started(r, "n1", "new", start.port), "n1", "exited with status 1", 2.0)
    r, cmds = ro.decide(r, 2.0)
    assert cmds == [ro.StopReplica("n1", drain=False, reason="rollback")]
    r, cmds = ro.decide(ro.stopped(r, "n1"), 3.0)
    assert cmds == [ro.StartReplica("old", 8000, "rollback: previous version")]


def test_rollback_drains_serving_new_replicas_one_per_old_replica_back_highest_port_first():
    r = ro.Rollout("acts", 3, tuple(PORTS), parallelism=3, phase="rolling_back", reason="why", members=(
        ro.Member("c", 8002, "old", "ready", 0.0),
        ro.Member("n1", 8003, "new", "ready", 1.0), ro.Member("n2", 8004, "new", "ready", 1.0),
        ro.Member("n3", 8000, "new", "failed", 1.0),
        ro.Member("a", 8000, "old", "stopped"), ro.Member("b", 8001, "old", "stopped")))
    r, cmds = ro.decide(r, 2.0)
    assert cmds == [ro.StopReplica("n3", drain=False, reason="rollback"),
                    ro.StartReplica("old", 8001, "rollback: previous version"),
                    ro.StartReplica("old", 8005, "rollback: previous version")]
    r = ro.ready(ro.started(ro.stopped(r, "n3"), "o1", "old", 8001), "o1", 3.0)
    r, cmds = ro.decide(r, 3.0)
    assert cmds == [ro.StopReplica("n2", drain=True, reason="rollback")]
    r = ro.ready(ro.started(r, "o2", "old", 8005), "o2", 4.0)
    r, cmds = ro.decide(r, 4.0)
    assert cmds == [ro.StopReplica("n1", drain=True, reason="rollback")]
    assert ro.decide(r, 4.1)[1] == []                 # n2 and n1 still draining
    r, cmds = ro.decide(ro.stopped(ro.stopped(r, "n1"), "n2"), 5.0)
    assert cmds == [ro.Finish("rolled_back", "why")]


def test_pause_finishes_at_once_and_leaves_every_replica_where_it_is():
    r = ro.begin("acts", OLD, PORTS, failure_action="pause")
    r, (start,) = ro.decide(r, 0.0)
    r = ro.failed(ro.started(r, "n1", "new", start.port), "n1", "exited with status 1", 1.0)
    r, cmds = ro.decide(r, 1.0)
    assert cmds == [ro.Finish("paused", "new replica n1 on port 8003 never became healthy: exited with status 1")]
    assert r.phase == "paused" and [m.status for m in r.members] == ["ready"] * 3 + ["failed"]


def test_slow_starts_and_a_new_port_range_still_converge_without_repeating_a_command():
    # Starts reported three ticks later: decide runs meanwhile with the start still pending. And a
    # new spec may move the service to another port range: the old replicas are all outside it.
    three, nine = [8000, 8001, 8002], [9000, 9001, 9002]
    for order, par, ports, start_ticks in [
            ("start-first", 1, PORTS, 3), ("start-first", 2, PORTS, 3), ("start-first", 1, three, 3),
            ("stop-first", 1, PORTS, 3), ("stop-first", 2, three, 3),
            ("start-first", 1, nine, 1), ("start-first", 2, nine, 3),
            ("stop-first", 1, nine, 1), ("stop-first", 2, nine, 3)]:
        r = ro.begin("acts", [(f"old{p}", p) for p in three], ports, parallelism=par, order=order, monitor=3)
        sim = SlowSim(r, start_ticks=start_ticks).run()
        where = (order, par, ports, start_ticks, sim.log)
        assert sim.finished.outcome == "complete", where
        assert ports_of(sim.r, "new") == ports[:3], where
        assert {m.status for m in sim.r.members} == {"ready", "stopped"}, where
        if order == "start-first":
            assert min(sim.serving) == (2 if ports == three else 3) and max(sim.unproven) <= par, where


def test_commands_say_why_in_the_events():
    # Each command's reason is shown in the events ("rollout: <reason>").
    r, cmds = ro.decide(ro.begin("acts", OLD, [8000, 8001, 8002]), 0.0)
    assert cmds == [ro.StopReplica("a", drain=True, reason="no spare port: stop-first for this one")]
    assert ro.decide(r, 0.1)[1] == []                 # not a second one while it drains
    r, cmds = ro.decide(ro.stopped(r, "a"), 1.0)
    assert cmds == [ro.StartReplica("new", 8000, "rolling replacement (start-first)", spare=False)]
    # Moving home: three new replicas serve, one on the borrowed 8003 and 8002 free.
    r = ro.Rollout("acts", 3, tuple(PORTS), members=(
        ro.Member("a", 8000, "old", "stopped"), ro.Member("c", 8002, "old", "stopped"),
        ro.Member("n1", 8003, "new", "ready", 1.0), ro.Member("n2", 8000, "new", "ready", 1.0),
        ro.Member("n3", 8001, "new", "ready", 1.0)))
    r, cmds = ro.decide(r, 10.0)
    assert cmds == [ro.StartReplica("new", 8002, "move home from borrowed port 8003", spare=True)]
    assert ro.decide(r, 10.1)[1] == []                # the move is under way: not asked twice
    r = ro.ready(ro.started(r, "n4", "new", 8002), "n4", 11.0)
    assert ro.decide(r, 12.0)[1] == []                # n4 within its monitor period
    r, cmds = ro.decide(r, 16.0)
    assert cmds == [ro.StopReplica("n1", drain=True, reason="settled back on port 8000..")]
    assert ro.decide(r, 16.1)[1] == []                # n1 still draining: not finished
    r, cmds = ro.decide(ro.stopped(r, "n1"), 17.0)
    assert cmds == [ro.Finish("complete", "all 3 replica(s) replaced")]


def test_a_borrowed_replica_failing_at_the_end_is_gone_before_the_rollout_completes():
    r = ro.Rollout("acts", 3, tuple(PORTS), members=(
        ro.Member("n1", 8003, "new", "ready", 1.0), ro.Member("n2", 8000, "new", "ready", 1.0),
        ro.Member("n3", 8001, "new", "ready", 1.0), ro.Member("n4", 8002, "new", "ready", 1.0)))
    r = ro.failed(r, "n1", "exited with status 1", 10.0)
    r, cmds = ro.decide(r, 10.0)
    assert cmds == [ro.StopReplica("n1", drain=False, reason="failed")]
    r, cmds = ro.decide(ro.stopped(r, "n1"), 11.0)
    assert cmds == [ro.Finish("complete", "all 3 replica(s) replaced")]


def test_stop_first_waits_for_the_new_replica_to_be_proven_before_the_next_old_one_stops():
    for a in ("stopped", "stopping"):                 # the range moved to 9000..: a's port is no obstacle
        r = ro.Rollout("acts", 3, (9000, 9001, 9002), order="stop-first", members=(
            ro.Member("a", 8000, "old", a), ro.Member("b", 8001, "old", "ready"),
            ro.Member("c", 8002, "old", "ready"), ro.Member("n1", 9000, "new", "ready", 1.0)))
        assert ro.decide(r, 2.0)[1] == [], a          # n1 within its monitor period
    r, cmds = ro.decide(ro.stopped(r, "a"), 6.0)
    assert cmds[0] == ro.StopReplica("b", drain=True, reason="stop-first: makes room for a new replica")


def test_long_drains_finish_before_the_rollout_does():
    # Drains longer than the monitor period (a long drain_timeout): the rollout completes only once
    # every old replica is gone, and stop-first drains one old replica at a time per unit of
    # parallelism even where the new range leaves room to start at once.
    three, nine = [8000, 8001, 8002], [9000, 9001, 9002]
    for order, par, ports in [("start-first", 1, PORTS), ("start-first", 2, PORTS), ("start-first", 1, three),
                              ("start-first", 1, nine), ("stop-first", 1, nine), ("stop-first", 2, nine),
                              ("stop-first", 1, PORTS), ("stop-first", 1, three)]:
        r = ro.begin("acts", [(f"old{p}", p) for p in three], ports, parallelism=par, order=order, monitor=3)
        sim = SlowSim(r, stop_ticks=8)
        draining = []
        while not sim.finished:
            sim.step()
            draining.append(len(sim.r.of("old", "stopping")))
            assert sim.now < 300, sim.log
        where = (order, par, ports, sim.log)
        assert sim.finished.outcome == "complete", where
        assert {m.status for m in sim.r.members} == {"ready", "stopped"}, where
        assert ports_of(sim.r, "new") == ports[:3], where
        if order == "stop-first":
            assert max(draining) <= par, where
