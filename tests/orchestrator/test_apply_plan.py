"""Pure tests of the apply plan: every kind of change -> the right actions, nothing restarted for a
live change."""

from __future__ import annotations

import copy

import pytest

from selfieless.orchestrator.apply_plan import (
    AddService, LiveUpdate, Refuse, RemoveService, Rescale, RollingReplace, SetGatewayLimits, SetRoutes,
    describe, pinned, plan_apply, restarts_nothing, running_image,
)
from selfieless.orchestrator.stack import parse_stack

BASE = {
    "name": "demo",
    "driver": "process",
    "variables": {"db": "sqlite:///{state_dir}/acts.db"},
    "services": {
        "acts": {
            "command": ["python", "-m", "acts", "--port", "{port}"],
            "environment": {"DATABASE_URL": "{db}"},
            "host_ports": "8000-8009",
            "routes": ["/api/v1/acts"],
            "replicas": {"min": 3, "max": 10},
            "autoscale": {"policy": "window"},
        },
        "users": {
            "command": ["python", "-m", "users", "--port", "{port}"],
            "host_ports": "8080",
            "routes": ["/api/v1/users"],
            "replicas": {"min": 1, "max": 1},
        },
    },
}


def changed(fn):
    data = copy.deepcopy(BASE)
    fn(data)
    return parse_stack(BASE), parse_stack(data)


def plan(fn, **kw):
    return plan_apply(*changed(fn), **kw)


def test_same_file_is_an_empty_plan():
    assert plan_apply(parse_stack(BASE), parse_stack(copy.deepcopy(BASE))) == []


def test_scale_change_is_live():
    actions = plan(lambda d: d["services"]["acts"]["replicas"].update(min=5))
    assert actions == [Rescale("acts", (3, 10, None), (5, 10, None))]
    assert restarts_nothing(actions)


def test_limit_change_is_live():
    actions = plan(lambda d: d.setdefault("gateway", {}).setdefault("limits", {}).update(max_body_size=1024))
    assert len(actions) == 1 and isinstance(actions[0], SetGatewayLimits)
    assert actions[0].fields == ("max_body_size",) and actions[0].limits.max_body_size == 1024
    assert restarts_nothing(actions)


def test_route_change_swaps_the_whole_table():
    actions = plan(lambda d: d["services"]["acts"]["routes"].append("/api/v2/acts"))
    assert actions == [SetRoutes((("/api/v1/acts", "acts"), ("/api/v1/users", "users"), ("/api/v2/acts", "acts")))]
    assert restarts_nothing(actions)


@pytest.mark.parametrize("field,value", [
    ("health", {"path": "/healthz", "interval": 2}),
    ("autoscale", {"policy": "rate", "target_rps_per_replica": 50}),
    ("drain_timeout", 3),
    ("update", {"parallelism": 2}),
])
def test_settings_read_at_decision_time_are_live(field, value):
    actions = plan(lambda d: d["services"]["acts"].__setitem__(field, value))
    assert actions == [LiveUpdate("acts", (field,))]
    assert restarts_nothing(actions)


@pytest.mark.parametrize("mutate,reason", [
    (lambda s: s.__setitem__("command", ["python", "-m", "acts2", "--port", "{port}"]), "command changed"),
    (lambda s: s["environment"].__setitem__("DEBUG", "1"), "environment changed"),
    (lambda s: s.__setitem__("preload", True), "preload changed"),
    (lambda s: s.__setitem__("host_ports", "8100-8109"), "host_ports changed"),
])
def test_launch_changes_roll(mutate, reason):
    actions = plan(lambda d: mutate(d["services"]["acts"]))
    assert actions == [RollingReplace("acts", (reason,), parse_stack(BASE).services["acts"].update)]
    assert not restarts_nothing(actions)


def test_variable_used_by_the_environment_rolls_only_its_users():
    actions = plan(lambda d: d["variables"].__setitem__("db", "sqlite:///other.db"))
    assert [(a.service, a.reasons) for a in actions] == [("acts", ("variable db changed",))]


def test_unused_variable_restarts_nothing():
    assert plan(lambda d: d["variables"].__setitem__("unused", "x")) == []


def test_rebuilt_image_with_the_same_name_rolls():
    def docker(d):
        for s in d["services"].values():
            s["image"] = s["command"][2] + ":latest"
    old_data = copy.deepcopy(BASE)
    docker(old_data)
    old = parse_stack(old_data)
    new = parse_stack(copy.deepcopy(old_data))
    actions = plan_apply(old, new, running_images={"acts": "sha256:aaaa", "users": "sha256:cccc"},
                         current_images={"acts": "sha256:bbbb", "users": "sha256:cccc"})
    assert [type(a) for a in actions] == [RollingReplace]
    assert actions[0].service == "acts" and "new content" in actions[0].reasons[0]
    # A rollback must go back to the id the replicas run, not the name (which means the new content).
    assert actions[0].previous_image == "sha256:aaaa"
    assert pinned(old.services["acts"], actions[0].previous_image).image == "sha256:aaaa"
    # Nothing rebuilt, or ids unknown (process driver, image missing): no change.
    assert plan_apply(old, new, running_images={"acts": "sha256:bbbb"}, current_images={"acts": "sha256:bbbb"}) == []
    assert plan_apply(old, new, running_images={"acts": None}, current_images={"acts": "sha256:bbbb"}) == []
    assert plan_apply(old, new, running_images={"acts": "sha256:aaaa"}, current_images={"acts": None}) == []
    # A new image name rolls for its own reason; the old name still means the old content.
    renamed = copy.deepcopy(old_data)
    renamed["services"]["acts"]["image"] = "acts:v2"
    (action,) = plan_apply(old, parse_stack(renamed), running_images={"acts": "sha256:aaaa"},
                           current_images={"acts": "sha256:bbbb"})
    assert action.reasons == ("image changed",) and action.previous_image is None


def test_running_image_of_a_service_on_mixed_content():
    assert running_image([], "sha256:b") is None
    assert running_image([None], "sha256:b") is None
    assert running_image(["sha256:b", "sha256:b"], "sha256:b") == "sha256:b"
    # Partly on old content (a paused rollout): still a change.
    assert running_image(["sha256:b", "sha256:a"], "sha256:b") == "sha256:a"
    assert running_image(["sha256:a"], None) == "sha256:a"


def test_update_settings_travel_with_the_replacement():
    def f(d):
        d["services"]["acts"]["command"] = ["python", "-m", "acts", "--port", "{port}", "--v2"]
        d["services"]["acts"]["update"] = {"parallelism": 2, "order": "stop-first", "monitor": "10s",
                                           "failure_action": "pause"}
    (action,) = [a for a in plan(f) if isinstance(a, RollingReplace)]
    assert (action.update.parallelism, action.update.order, action.update.monitor,
            action.update.failure_action) == (2, "stop-first", 10.0, "pause")


def test_added_service_starts_before_routes_and_removed_stops_after():
    def f(d):
        d["services"]["web"] = {"command": ["python", "-m", "web", "--port", "{port}"], "host_ports": "8090",
                                "routes": ["/"], "replicas": {"min": 1, "max": 1}}
        del d["services"]["users"]
    actions = plan(f)
    kinds = [type(a) for a in actions]
    assert kinds == [AddService, SetRoutes, RemoveService]
    assert actions[0] == AddService("web", 1) and actions[-1] == RemoveService("users")


def test_what_cannot_change_live_is_refused_alone():
    def f(d):
        d["driver"] = "docker"
        d["services"]["acts"]["replicas"]["min"] = 4
        d["gateway"] = {"port": 81}
        for s in d["services"].values():
            s["image"] = "x"
    actions = plan(f)
    assert all(isinstance(a, Refuse) for a in actions)
    assert {a.what for a in actions} == {"driver", "gateway.port"}


def test_every_action_describes_itself():
    def f(d):
        d["services"]["acts"]["command"].append("--v2")
        d["services"]["acts"]["replicas"]["min"] = 4
        d["services"]["acts"]["health"] = {"interval": 2}
        d["services"]["acts"]["routes"].append("/x")
    for a in plan(f):
        assert describe(a)


def test_window_policy_keeps_its_minimum_of_one():
    data = copy.deepcopy(BASE)
    data["services"]["acts"]["replicas"]["min"] = 0
    with pytest.raises(ValueError, match="rate"):
        parse_stack(data)
    data["services"]["acts"]["autoscale"] = {"policy": "rate", "target_rps_per_replica": 10,
                                             "scale_to_zero_after": "30s"}
    assert parse_stack(data).services["acts"].autoscale.scale_to_zero_after == 30.0


def test_scale_to_zero_floor_and_wake():
    from selfieless.orchestrator import scale_to_zero as stz
    from selfieless.orchestrator.stack import RatePolicy

    pol = RatePolicy(policy="rate", target_rps_per_replica=10, scale_to_zero_after=30)
    st = stz.observe(stz.IdleState(), 0, now=0.0)
    assert stz.floor(pol, 0, st, now=29.9) == 1
    assert stz.floor(pol, 0, st, now=30.0) == 0
    st = stz.observe(st, 5, now=20.0)         # a request at t=20 restarts the idle period
    assert stz.floor(pol, 0, st, now=30.0) == 1 and stz.floor(pol, 0, st, now=50.0) == 0
    assert stz.floor(pol, 2, st, now=100.0) == 2
    assert stz.wake(0, held=True) == 1 and stz.wake(1, held=True) is None and stz.wake(0, held=False) is None


@pytest.mark.parametrize("served_at, now, floor", [
    (None, 1.0, 1),     # woken at 0, scale_to_zero_after 1 s: the replica is still starting, requests held
    (None, 10.9, 1),    # ... up to the gateway's hold (10 s) plus the idle period
    (None, 11.0, 0),    # nobody answered them within their hold: back to zero after the idle period
    (3.0, 3.5, 1),      # answered at 3 s: the idle period runs from then
    (3.0, 4.0, 0),
])
def test_a_held_request_keeps_a_woken_service_up_until_its_hold_ends(served_at, now, floor):
    # A docker replica needs more than scale_to_zero_after (1 s) to be ready: the 20 requests that
    # woke the service must not see it stopped again while they wait (they got 503 in a loaded run).
    from selfieless.orchestrator import scale_to_zero as stz
    from selfieless.orchestrator.stack import RatePolicy

    pol = RatePolicy(policy="rate", target_rps_per_replica=10, scale_to_zero_after=1.0)
    st = stz.woken(count=7, now=0.0, hold_for=10.0)
    if served_at is not None:
        st = stz.observe(st, 27, now=served_at)
    st = stz.observe(st, st.last_count, now=now)
    assert stz.floor(pol, 0, st, now=now) == floor


def test_apply_keeps_what_up_was_told_on_its_command_line():
    from selfieless.orchestrator.apply_plan import with_up_overrides

    data = {"name": "s", "driver": "process", "gateway": {"host": "127.0.0.1", "port": 80}}
    assert with_up_overrides(data, None) == data
    assert with_up_overrides(data, {"port": None, "driver": None}) == data
    kept = with_up_overrides(data, {"port": 8080, "driver": "docker"})
    assert kept["gateway"] == {"host": "127.0.0.1", "port": 8080} and kept["driver"] == "docker"
    assert with_up_overrides(data, {"port": 8080}, port=9090)["gateway"]["port"] == 9090   # apply --port wins
    assert with_up_overrides({"name": "s"}, {"port": 8080})["gateway"] == {"port": 8080}
    assert data["gateway"]["port"] == 80                                               # the input is left alone
    # A second `up --driver D` (explicit in the request) wins over the running up's --driver.
    assert with_up_overrides(data, {"driver": "docker"}, driver="process")["driver"] == "process"


def test_a_service_added_first_in_the_file_does_not_hide_changes_to_the_others():
    def f(d):
        d["services"] = {"web": {"command": ["python", "-m", "web", "--port", "{port}"], "host_ports": "8090",
                                 "routes": ["/"], "replicas": {"min": 1, "max": 1}}, **d["services"]}
        d["services"]["acts"]["replicas"]["min"] = 4
        d["services"]["acts"]["command"].append("--v2")
    actions = plan(f)
    assert [type(a) for a in actions] == [AddService, Rescale, SetRoutes, RollingReplace]
    assert actions[1].service == actions[3].service == "acts" and actions[3].reasons == ("command changed",)


def test_balance_change_is_live_and_carries_the_new_policy():
    def f(d):
        d["gateway"] = {"balance": "least_outstanding", "limits": {"max_body_size": 1024}}
    (action,) = plan(f)
    assert (action.fields, action.balance) == (("balance", "max_body_size"), "least_outstanding")
    assert action.limits.max_body_size == 1024
    assert describe(action) == "gateway balance, max_body_size (live, no restart)"
    (only,) = plan(lambda d: d.__setitem__("gateway", {"balance": "least_outstanding"}))
    assert (only.fields, only.balance) == (("balance",), "least_outstanding")


def test_refusals_say_what_to_do():
    def f(d):
        d["name"] = "other"
        d["driver"] = "auto"
        d["gateway"] = {"host": "127.0.0.1", "port": 81}
    assert plan(f) == [
        Refuse("name", "the running stack is 'demo', the file describes 'other'"),
        Refuse("driver", "driver cannot change on a running stack: run `down` then `up`"),
        Refuse("gateway.host", "the gateway's address cannot change on a running stack: run `down` then `up`"),
        Refuse("gateway.port", "the gateway's address cannot change on a running stack: run `down` then `up`"),
    ]


def test_variables_reached_through_the_command_other_variables_or_a_service_override_roll():
    def chained(d):                           # db's text is unchanged; the variable it uses is not
        d["variables"] = {"base": "sqlite:///a", "db": "{base}/acts.db"}
    old = copy.deepcopy(BASE)
    chained(old)
    new = copy.deepcopy(old)
    new["variables"]["base"] = "sqlite:///b"
    (action,) = plan_apply(parse_stack(old), parse_stack(new))
    assert (action.service, action.reasons) == ("acts", ("variable base changed",))
    # db no longer goes through base: both are reasons, base for the old version's sake.
    new["variables"] = {"db": "sqlite:///b/acts.db"}
    (action,) = plan_apply(parse_stack(old), parse_stack(new))
    assert action.reasons == ("variable base changed", "variable db changed")
    # A variable only the command uses.
    old, new = copy.deepcopy(BASE), copy.deepcopy(BASE)
    for d, level in ((old, "info"), (new, "debug")):
        d["variables"]["level"] = level
        d["services"]["users"]["command"] = ["python", "-m", "users", "--log", "{level}", "--port", "{port}"]
    (action,) = plan_apply(parse_stack(old), parse_stack(new))
    assert (action.service, action.reasons) == ("users", ("variable level changed",))
    # A service's own value overrides the stack's: only that service rolls.
    (action,) = plan(lambda d: d["services"]["acts"].__setitem__("variables", {"db": "sqlite:///own.db"}))
    assert (action.service, action.reasons) == ("acts", ("variable db changed",))


def test_rebuilt_image_reason_names_both_ids_short():
    data = copy.deepcopy(BASE)
    data["services"]["acts"]["image"] = "acts:latest"
    old, new = parse_stack(data), parse_stack(copy.deepcopy(data))
    a, b = "sha256:" + "a1" * 32, "sha256:" + "b2" * 32
    (action,) = plan_apply(old, new, running_images={"acts": a}, current_images={"acts": b})
    assert action.reasons == ("image acts:latest has new content (a1a1a1a1a1a1 -> b2b2b2b2b2b2)",)
    # Without a known id to go back to, a rollback keeps the spec as it is.
    assert pinned(old.services["acts"], None) == old.services["acts"]


def test_dry_run_lines():
    update = parse_stack(BASE).services["acts"].update
    cases = [
        (Rescale("acts", (3, 10, None), (4, 12, 5)), "scale   acts: min 3 max 10 -> min 4 max 12 initial 5 (live)"),
        (LiveUpdate("acts", ("health", "update")), "update  acts: health, update (live, no restart)"),
        (SetRoutes((("/a", "acts"), ("/u", "users"))), "routes  /a -> acts, /u -> users (atomic swap)"),
        (RollingReplace("acts", ("command changed", "variable db changed"), update),
         "roll    acts: command changed; variable db changed "
         "(start-first, 1 at a time, monitor 5 s, on failure rollback)"),
        (AddService("web", 2), "add     web: start 2 replica(s)"),
        (RemoveService("users"), "remove  users: drain and stop every replica"),
        (Refuse("driver", "why"), "refuse  driver: why"),
    ]
    for action, line in cases:
        assert describe(action) == line


def test_https_settings_are_refused_live_but_hosts_are_routes():
    tls_refusal = Refuse("gateway.tls", "HTTPS settings are read when the gateway starts: run `down` then `up` "
                                        "(certificate files themselves reload by themselves, or with "
                                        "`selfieless tls reload`)")
    acme = {"acme": {"directory": "https://ca.test/dir"}}
    assert plan(lambda d: d.setdefault("gateway", {}).__setitem__("tls", acme)) == [tls_refusal]
    old = copy.deepcopy(BASE)
    old["gateway"] = {"tls": acme}
    new = copy.deepcopy(old)
    new["services"]["acts"]["redirect_https"] = False
    assert plan_apply(parse_stack(old), parse_stack(new)) == [tls_refusal]
    (action,) = plan(lambda d: d["services"]["acts"].__setitem__("hosts", ["a.test"]))
    assert isinstance(action, SetRoutes) and ("//a.test/api/v1/acts", "acts") in action.routes
    assert ("/api/v1/acts", "acts") not in action.routes
