"""The replica lifecycle's decisions (lifecycle.py) as tables: no sockets, no tasks, no sleeps.

Each row is one observation of one replica in one situation, and the step the controller must
carry out: the transition, the pool, the disruption budget's mark and the events.
"""

import pytest

from selfieless.orchestrator import lifecycle as lc
from selfieless.orchestrator.backoff import BackoffPolicy, BackoffState
from selfieless.orchestrator.replica import ALLOWED, ReplicaState as S

RULES = lc.Rules(failure_threshold=3, start_grace=10.0)
ERR = "health probe /_health: connection failed (Connection refused)"


def facts(state=S.READY, failures=0, **kw):
    kw.setdefault("started_at", 0.0)
    kw.setdefault("joined", state == S.READY)
    kw.setdefault("in_rotation", kw["joined"])
    kw.setdefault("last_error", ERR)
    return lc.Facts(state=state, consecutive_failures=failures, **kw)


def kinds(step):
    return [k for k, _ in step.events]


# --- routine probes --------------------------------------------------------------------------

# (facts, ok, siblings, now) -> (to, failures, pool: "join"/"leave"/None, spare, event kinds)
PROBES = [
    # starting: the first pass joins; failures within the grace are expected; the grace running out is fatal
    ("first pass", facts(S.STARTING), True, lc.Siblings(), 1.0, (S.READY, 0, "join", None, ["ready"])),
    ("booting", facts(S.STARTING, 4), False, lc.Siblings(), 9.9, (None, 5, None, None, [])),
    ("grace over", facts(S.STARTING, 4), False, lc.Siblings(), 10.0, (S.UNHEALTHY, 5, None, None, ["unhealthy"])),
    # ready: below the threshold nothing happens; at it the replica is replaced (one replica: at once)
    ("healthy", facts(), True, lc.Siblings(), 5.0, (None, 0, None, None, [])),
    ("one failure", facts(), False, lc.Siblings(), 5.0, (None, 1, None, None, [])),
    ("two failures", facts(failures=1), False, lc.Siblings(), 5.0, (None, 2, None, None, [])),
    ("threshold, alone", facts(failures=2), False, lc.Siblings(), 5.0, (S.UNHEALTHY, 3, "leave", None, ["unhealthy"])),
    ("threshold, healthy siblings", facts(failures=2), False, lc.Siblings(ready=2), 5.0,
     (S.UNHEALTHY, 3, "leave", None, ["unhealthy"])),
    # the disruption budget: a sibling is already being replaced, so this one stays in rotation
    ("budget holds", facts(failures=2), False, lc.Siblings(ready=1, unavailable=1), 5.0,
     (None, 3, None, True, ["held"])),
    ("budget already holding", facts(failures=5, spared=True), False, lc.Siblings(ready=1, unavailable=1), 5.0,
     (None, 6, None, None, [])),
    ("budget lets the held one go", facts(failures=5, spared=True), False, lc.Siblings(ready=1), 5.0,
     (S.UNHEALTHY, 6, "leave", False, ["unhealthy"])),
    ("held one recovers", facts(failures=5, spared=True), True, lc.Siblings(ready=1), 5.0,
     (None, 0, None, False, ["recovered"])),
    # out of the pool (ejected, then its probe passed at the next routine probe): back in
    ("rejoin", facts(failures=1, in_rotation=False), True, lc.Siblings(), 5.0, (None, 0, "join", None, ["ready"])),
    ("rejoin and recover", facts(failures=1, in_rotation=False, spared=True), True, lc.Siblings(), 5.0,
     (None, 0, "join", False, ["ready", "recovered"])),
    # a dependency: no pool, and never held by the budget
    ("dependency ready", facts(S.STARTING, dependency=True), True, lc.Siblings(), 1.0,
     (S.READY, 0, "join", None, ["ready"])),
    ("dependency healthy out of pool", facts(dependency=True, joined=False), True, lc.Siblings(), 5.0,
     (None, 0, None, None, [])),
    ("dependency threshold", facts(failures=2, dependency=True, joined=False), False,
     lc.Siblings(ready=1, unavailable=1), 5.0, (S.UNHEALTHY, 3, "leave", None, ["unhealthy"])),
]


def _uncounted() -> lc.Siblings:
    raise AssertionError("siblings counted")


@pytest.mark.parametrize("name, f, ok, sib, now, expected", [p for p in PROBES if p[2] or p[1].state != S.READY
                                                             or p[1].dependency], ids=lambda v: v if isinstance(v, str) else "")
def test_siblings_are_counted_only_for_a_ready_replica_that_fails(name, f, ok, sib, now, expected):
    """Counting the siblings is linear in the service's replicas, and a thousand replicas pass
    a probe every second each: a passing probe, or a failing one of a replica not (yet) serving,
    must decide without them, and decide the same as with them."""
    assert lc.probed(f, ok, RULES, _uncounted, now, "acts") == lc.probed(f, ok, RULES, lambda: sib, now, "acts")


@pytest.mark.parametrize("name, f, ok, sib, now, expected", PROBES, ids=[p[0] for p in PROBES])
def test_probe_result(name, f, ok, sib, now, expected):
    to, failures, pool, spare, events = expected
    step = lc.probed(f, ok, RULES, lambda: sib, now, "acts")
    assert step.to == to
    assert step.failures == failures
    assert ("join" if step.join_pool else "leave" if step.leave_pool else None) == pool
    assert step.spare == spare
    assert kinds(step) == events
    assert step.wake == (to is not None)
    assert not step.stop_probe  # the probe loop ends by itself once the replica is no longer live
    if to is not None:
        assert to in ALLOWED[f.state]


def test_first_pass_is_the_ready_bookkeeping_and_says_when():
    step = lc.probed(facts(S.STARTING, started_at=2.0), True, RULES, lc.Siblings, 3.25)
    assert step.became_ready and step.why == "first probe passed"
    assert step.events == (("ready", "passed its first health probe 1.25 s after start; in rotation"),)
    dep = lc.probed(facts(S.STARTING, dependency=True, started_at=2.0), True, RULES, lc.Siblings, 3.25)
    assert dep.events == (("ready", "passed its first health probe 1.25 s after start; ready"),)


def test_unhealthy_reasons_name_the_real_cause():
    step = lc.probed(facts(failures=2), False, RULES, lc.Siblings, 5.0)
    assert step.why == step.last_error == f"3 consecutive failed probes: {ERR}"
    assert step.events == (("unhealthy", f"3 consecutive failed probes: {ERR}; out of rotation, will be replaced"),)
    late = lc.probed(facts(S.STARTING), False, RULES, lc.Siblings, 11.0)
    assert late.why == f"not ready 10 s after start ({ERR})"
    bare = lc.probed(facts(failures=2, last_error=None), False, RULES, lc.Siblings, 5.0)
    assert bare.why == "3 consecutive failed probes: health probe failed"


def test_the_held_event_explains_the_budget():
    step = lc.probed(facts(failures=2), False, RULES, lambda: lc.Siblings(ready=1, failing_ready=1, unavailable=1), 5.0,
                     "acts")
    (kind, why), = step.events
    assert kind == "held" and why.startswith(f"{ERR}; all 3 replicas of acts failed together")


# --- the probe that confirms a gateway ejection ----------------------------------------------

@pytest.mark.parametrize("state, ok, expected", [
    (S.READY, True, (None, "join", ["ready"])),
    (S.READY, False, (S.UNHEALTHY, "leave", ["unhealthy"])),
    # something else got there first: nothing to do
    (S.UNHEALTHY, False, (None, None, [])),
    (S.EXITED, True, (None, None, [])),
    (S.STOPPING, False, (None, None, [])),
])
def test_ejection_confirmation(state, ok, expected):
    to, pool, events = expected
    step = lc.confirmed(facts(state, joined=False), ok, RULES)
    assert step.to == to
    assert ("join" if step.join_pool else "leave" if step.leave_pool else None) == pool
    assert kinds(step) == events
    assert step.stop_probe == (to is not None)


def test_a_confirmed_ejection_counts_one_real_failure_and_says_why():
    """No faked failure count: the verdict is 'ejected, then its probe failed', with the count it has."""
    step = lc.confirmed(facts(failures=0, joined=False), False, RULES)
    assert step.failures == 1
    assert step.why == f"ejected by the gateway, then its probe failed: {ERR}"
    assert step.events == (("unhealthy", f"{step.why}; out of rotation, will be replaced"),)


@pytest.mark.parametrize("state, acts", [(S.READY, True), (S.STARTING, False), (S.UNHEALTHY, False),
                                         (S.STOPPING, False)])
def test_ejection(state, acts):
    step = lc.ejected(facts(state), "connection refused")
    assert step.ejected == acts and step.to is None and not step.leave_pool
    assert step.events == ((("ejected", "gateway took it out of rotation: connection refused"),) if acts else ())


# --- exits -----------------------------------------------------------------------------------

@pytest.mark.parametrize("state, replaced", [
    (S.STARTING, True), (S.READY, True), (S.UNHEALTHY, True),
    (S.EXITED, False), (S.STOPPING, False), (S.STOPPED, False),   # expected, or handled already
])
def test_exit(state, replaced):
    step = lc.exited(facts(state), "exited with code 1")
    if replaced:
        assert step.to == S.EXITED and step.to in ALLOWED[state]
        assert step.stop_probe and step.leave_pool and step.wake
        assert step.last_error == "exited with code 1"
        assert step.events == (("exited", "exited with code 1; will be replaced"),)
    else:
        assert step == lc.NOTHING


# --- adoption --------------------------------------------------------------------------------

@pytest.mark.parametrize("ok, error, now, expected", [
    (True, None, 1.0, (S.READY, ["ready", "adopted"], True)),
    (False, "health probe /_health: connection failed (refused)", 5.0, (None, ["adopted"], True)),   # booting
    (False, "health probe /_health: connection failed (refused)", 10.0, (S.UNHEALTHY, ["adopted", "unhealthy"], False)),
    (False, "health probe /_health: HTTP 500", 1.0, (S.UNHEALTHY, ["adopted", "unhealthy"], False)),
])
def test_adoption(ok, error, now, expected):
    to, events, probe_again = expected
    step = lc.found(facts(S.STARTING, adopted=True, joined=False, last_error=error), ok, RULES, now,
                    "found running on port 8000")
    assert (step.to, kinds(step), step.probe_again) == (to, events, probe_again)
    assert step.events[kinds(step).index("adopted")][1].startswith("found running on port 8000; ")


def test_triage_of_what_was_found_running():
    ports = {"acts": range(8000, 8003), "users": range(9000, 9001)}
    running = [("acts", 8000), ("acts", 8001), ("acts", 8000), ("gone", 8000), ("acts", 8009), ("users", 9000)]
    assert lc.triage(running, ports) == [
        None, None, "duplicate replica on port 8000; kept the older one",
        "found running but not part of this stack (any more)",
        "found running but not part of this stack (any more)", None]
    assert lc.triage([], ports) == []


# --- replacement and restarts ----------------------------------------------------------------

POLICY = BackoffPolicy(initial=0.5, factor=2.0, maximum=4.0)


@pytest.mark.parametrize("backoff, dependency, expected", [
    # a replica that had become healthy: replaced at once
    (BackoffState(failures=3, healthy_since=1.0), False, (0.0, 1, 0.0, [])),
    # a crash loop: waits, doubling
    (BackoffState(failures=1), False, (0.5, 2, 0.0, ["backoff"])),
    (BackoffState(failures=3), False, (2.0, 4, 0.0, ["backoff"])),
    (BackoffState(failures=9), False, (4.0, 10, 0.0, ["backoff"])),
    # a dependency gets its normal stop timeout instead of a kill
    (BackoffState(), True, (0.0, 1, 7.0, [])),
])
def test_replacement(backoff, dependency, expected):
    delay, failures, grace, events = expected
    r = lc.replacement("r1", 8001, "exited with code 1", backoff, 10.0, POLICY, dependency, drain_timeout=7.0)
    assert (r.delay, r.backoff.failures, r.grace, [k for k, _ in r.events]) == (delay, failures, grace, events)
    assert r.why == "replacing: exited with code 1"
    assert r.stop_reason == "replaced: exited with code 1"
    assert r.start_reason == "replacing r1 (exited with code 1)"
    if events:
        assert r.events[0][1] == f"crash loop on port 8001 ({failures} failures in a row): next start in {delay:g} s"


@pytest.mark.parametrize("backoff, delay", [(BackoffState(), 0.5), (BackoffState(failures=2), 1.0),
                                            (BackoffState(failures=2, healthy_since=3.0), 0.5)])
def test_a_failed_launch_never_retries_at_once(backoff, delay):
    state, d = lc.launch_failed(backoff, 10.0, POLICY)
    assert d == delay and state.healthy_since is None


@pytest.mark.parametrize("depends_on, ready, waits", [
    ([], {}, None),
    (["db"], {"db": True}, None),
    (["db"], {"db": False}, "db"),
    (["db", "cache"], {"db": True, "cache": False}, "cache"),
    (["db", "cache"], {"db": False, "cache": False}, "db"),
    (["gone"], {}, None),    # not (or no longer) in the stack: nothing to wait for
])
def test_first_start_waits_for_dependencies(depends_on, ready, waits):
    assert lc.waits_for(depends_on, ready) == waits


def test_every_step_the_lifecycle_can_take_is_an_allowed_transition_with_an_event():
    """Whatever the observation and the state, a transition always comes with the event that says why."""
    sibs = [lc.Siblings(), lc.Siblings(ready=1, unavailable=1), lc.Siblings(ready=2, failing_ready=2)]
    for state in S:
        for failures in (0, 2, 5):
            for spared in (False, True):
                for dependency in (False, True):
                    f = facts(state, failures, spared=spared, dependency=dependency)
                    steps = [lc.exited(f, "gone"), lc.ejected(f, "reset")]
                    for ok in (False, True):
                        steps.append(lc.confirmed(f, ok, RULES))
                        steps += [lc.probed(f, ok, RULES, lambda s=s: s, now, "acts") for s in sibs for now in (1.0, 20.0)
                                  if state in (S.STARTING, S.READY)]
                    for step in steps:
                        if step.to is not None:
                            assert step.to in ALLOWED[state], (state, step)
                            assert step.events and step.why, step


def test_adoption_grace_counts_from_the_replicas_own_start():
    refused = "health probe /_health: connection failed (refused)"
    # Started at t=100 by the previous orchestrator: at t=105 it may still be booting, at t=111 not.
    booting = lc.found(facts(S.STARTING, adopted=True, joined=False, started_at=100.0, last_error=refused),
                       False, RULES, 105.0, "found running on port 8000")
    assert (booting.to, kinds(booting)) == (None, ["adopted"])
    assert booting.events[0][1] == "found running on port 8000; still starting"
    late = lc.found(facts(S.STARTING, adopted=True, joined=False, started_at=100.0, last_error=refused),
                    False, RULES, 111.0, "found running on port 8000")
    assert late.to == S.UNHEALTHY


@pytest.mark.parametrize("failures, error, why", [
    (1, "HTTP 500", "1 consecutive failed probe: HTTP 500"),
    (2, "HTTP 500", "2 consecutive failed probes: HTTP 500"),
    (2, None, "2 consecutive failed probes: health probe failed"),
])
def test_an_adopted_replica_failing_its_probe_says_how_often_and_why(failures, error, why):
    step = lc.found(facts(S.STARTING, failures, adopted=True, joined=False, last_error=error), False, RULES, 50.0,
                    "found running on port 8001")
    assert (step.to, step.why, step.failures, step.stop_probe) == (S.UNHEALTHY, why, failures, False)
    assert step.events == (("adopted", "found running on port 8001; failing its health probe, replacing"),
                           ("unhealthy", f"{why}; out of rotation, will be replaced"))


def test_a_launch_failure_never_retries_at_once_and_then_doubles():
    delays = []
    state = BackoffState()
    for now in (42.0, 43.0, 44.0, 45.0):
        state, delay = lc.launch_failed(state, now, POLICY)
        delays.append(delay)
    assert state.failures == 4 and delays == [0.5, 0.5, 1.0, 2.0]


@pytest.mark.parametrize("found, dependency, expected", [
    (None, False, None),   # nothing was running: the initial count stands
    (7, False, 5),         # above the bounds: the highest
    (0, False, 1),         # below: the lowest
    (3, False, 3),
    (5, False, 5),
    (1, False, 1),
    (3, True, 1),          # a dependency runs one
])
def test_adopted_count_carries_on_within_bounds(found, dependency, expected):
    assert lc.adopted_count(found, 1, 5, dependency) == expected
