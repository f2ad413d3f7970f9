"""Stack file validation: defaults, the bundled stack, and readable error messages."""

import pytest

from selfieless.orchestrator.stack import (
    BUNDLED_STACK,
    NoPolicy,
    RatePolicy,
    StackError,
    WindowPolicy,
    load_stack,
    parse_stack,
    render,
)


def svc(**kw):
    base = {"command": ["python", "-m", "x", "--port", "{port}"], "host_ports": "9000-9009"}
    base.update(kw)
    return base


def stack(**services):
    return {"name": "t", "driver": "process", "services": services}


def errors(data):
    with pytest.raises(StackError) as ei:
        parse_stack(data)
    return ei.value.problems


def test_bundled_stack_matches_the_course():
    s = load_stack(BUNDLED_STACK)
    acts, users = s.services["acts"], s.services["users"]
    assert s.routes() == {"/api/v1/users": "users", "/api/v1": "acts", "/ui": "web"}
    assert list(acts.host_ports.ports) == list(range(8000, 8010))
    assert acts.autoscale == WindowPolicy(window_seconds=120, requests_per_replica=20)
    assert (acts.replicas.min, acts.replicas.max, acts.replicas.start_count) == (1, 10, 1)
    assert acts.health.interval == 1 and acts.health.timeout == 1 and acts.health.failure_threshold == 1
    assert acts.health.path == "/api/v1/_health"
    assert acts.image == "acts:latest" and users.image == "users:latest"
    assert users.replicas.max == 1 and isinstance(users.autoscale, NoPolicy)
    assert "{port}" in acts.command and "{gateway_url}" in acts.command


def test_defaults():
    s = parse_stack(stack(a=svc(autoscale={})))
    a = s.services["a"]
    assert s.driver == "process"
    assert a.autoscale == WindowPolicy(window_seconds=120, requests_per_replica=20)
    assert a.health.path == "/api/v1/_health"
    assert a.replicas.min == 1 and a.replicas.max == 10
    assert s.gateway.port == 80


def test_durations_and_port_forms():
    s = parse_stack(stack(a=svc(host_ports=9000, health={"interval": "500ms", "timeout": "2s"},
                                autoscale={"policy": "rate", "target_rps_per_replica": 5, "scale_in_delay": "1m"},
                                replicas={"min": 1, "max": 1})))
    a = s.services["a"]
    assert list(a.host_ports.ports) == [9000]
    assert a.health.interval == 0.5 and a.health.timeout == 2
    assert isinstance(a.autoscale, RatePolicy) and a.autoscale.scale_in_delay == 60


def test_max_below_min_names_the_field():
    assert errors(stack(acts=svc(replicas={"min": 1, "max": 0}))) == ["services.acts.replicas.max: must be >= min (1)"]


def test_unknown_keys_are_rejected_with_their_path():
    assert errors(stack(acts=svc(health={"pth": "/x"}))) == [
        "services.acts.health.pth: unknown key; did you mean 'path'?"]
    assert "bogus: unknown key" in errors({**stack(acts=svc()), "bogus": 1})


@pytest.mark.parametrize("where,key,suggestion", [
    ((), "servces", "services"),
    (("gateway", "limits"), "max_body_sise", "max_body_size"),
    (("services", "acts"), "replcas", "replicas"),
    (("services", "acts", "replicas"), "maximum", "max"),
    (("services", "acts", "autoscale"), "windw_seconds", "window_seconds"),
])
def test_unknown_keys_suggest_the_nearest_allowed_key(where, key, suggestion):
    data = stack(acts=svc(autoscale={"policy": "window"}))
    node = data
    for part in where:
        node = node.setdefault(part, {})
    node[key] = 1
    path = ".".join((*where, key))
    assert f"{path}: unknown key; did you mean {suggestion!r}?" in errors(data)


def test_unknown_key_far_from_every_allowed_key_gets_no_guess():
    assert errors(stack(acts=svc(zzzz=1))) == ["services.acts.zzzz: unknown key"]
    # A key that exists elsewhere is not suggested where it is not allowed.
    assert errors(stack(acts=svc(health={"routes": ["/x"]})))[0] == "services.acts.health.routes: unknown key"


def test_several_problems_reported_together():
    probs = errors(stack(acts=svc(host_ports="90-80", health={"interval": "soon"}, routes=["api"])))
    assert any(p.startswith("services.acts.host_ports.last: must be >= first (90)") for p in probs)
    assert any(p.startswith("services.acts.health.interval: not a duration") for p in probs)
    assert any(p.startswith("services.acts.routes:") for p in probs)


def test_max_must_fit_the_port_range():
    assert errors(stack(acts=svc(host_ports="9000-9001", replicas={"max": 3}))) == [
        "services.acts.replicas.max: must be <= the number of host_ports (2 in 9000-9001)"
    ]


def test_unknown_placeholder_and_overlaps():
    probs = errors(stack(a=svc(command=["x", "{nope}"]), b=svc(host_ports="9005-9006", routes=["/x"], replicas={"max": 2})))
    assert any(p.startswith("services.a.command[1]: unknown placeholder {nope}") for p in probs)
    assert "services.b.host_ports: port 9005 is also used by service 'a'" in probs


def test_driver_needs_matching_field():
    data = {"name": "t", "driver": "docker", "services": {"a": svc()}}
    assert errors(data) == ["services.a.image: required with driver 'docker'"]
    assert errors({"name": "t", "services": {"a": {"host_ports": "9000"}}})[0].startswith("services.a.image:")


def test_unknown_policy_and_missing_fields():
    probs = errors(stack(a=svc(autoscale={"policy": "magic"})))
    assert probs == ["services.a.autoscale.policy: must be one of 'window', 'rate', 'none' (got 'magic')"]
    assert errors(stack(a=svc(autoscale={"policy": "rate"}))) == [
        "services.a.autoscale.target_rps_per_replica: required"]
    probs = errors({"name": "t", "services": {"a": {"command": ["x"]}}})
    assert probs == ["services.a.host_ports: required with driver 'auto' (only the swarm driver picks host ports itself)"]


def test_yaml_errors_carry_a_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nservices: [\n")
    with pytest.raises(StackError) as ei:
        load_stack(p)
    assert "line" in str(ei.value) and str(p) in str(ei.value)


def test_render_resolves_chains():
    values = {"port": 1, "state_dir": "/s", "db": "sqlite:///{state_dir}/a.db", "database_url": "{db}"}
    assert render("--db={database_url} -p {port}", values) == "--db=sqlite:////s/a.db -p 1"


def test_gateway_limits_pass_straight_to_the_gateway_and_default_to_its_own():
    from selfieless.gateway import GatewayConfig

    limits = parse_stack(stack(a=svc())).gateway.limits.model_dump()
    assert GatewayConfig(**limits) == GatewayConfig()  # every name a GatewayConfig field, same defaults
    set_ = parse_stack({**stack(a=svc()), "gateway": {"limits": {"stall_timeout": 0, "max_body_size": 10}}})
    assert GatewayConfig(**set_.gateway.limits.model_dump()).max_body_size == 10
