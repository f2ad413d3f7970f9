"""The swarm driver's pure parts, without sockets: stack-file validation for `driver: swarm`,
Swarm's task and node records as replicas, the service definition, and the decisions of a driver
that owns the replica count."""

import json
import re

import pytest

from selfieless.orchestrator import driver_owned
from selfieless.orchestrator.drivers.base import LaunchSpec
from selfieless.orchestrator.drivers.swarm_spec import (
    DEFAULT_SOCKET, END_CONTAINER_CODE, LABEL_CONTAINER_PORT, LABEL_HEALTH_PATH, LABEL_IMAGE, LABEL_IMAGE_ID,
    LABEL_JOB, LABEL_NODE_SOCKET, LABEL_SERVICE, LABEL_STACK, REMOVE_VOLUMES_CODE, TaskPlace, health_command,
    job_outcome, node_job_definition, node_socket, parse_timestamp, pinned_image, published_port, ready_nodes,
    service_definition, task_places, tasks_to_replicas, undo_by_rollback, update_configs, update_outcome,
)
from selfieless.orchestrator.replica import ReplicaState as S
from selfieless.orchestrator.stack import BUNDLED_SWARM_STACK, StackError, load_stack, parse_stack


def _stack(**over):
    data = {"name": "t", "driver": "swarm",
            "services": {"acts": {"image": "acts:latest", "routes": ["/api/v1"]}}}
    data.update(over)
    return data


# --- stack file ---------------------------------------------------------------------------------

def test_bundled_swarm_stack_is_the_course_topology():
    st = load_stack(BUNDLED_SWARM_STACK)
    assert st.driver == "swarm"
    assert st.services["users"].placement.constraints == ["node.labels.selfieless.users==true"]
    assert st.services["acts"].placement.constraints == ["node.labels.selfieless.acts==true"]
    assert st.dependencies["db"].placement.constraints == ["node.labels.selfieless.acts==true"]
    assert st.services["acts"].host_ports is None


def test_swarm_needs_no_host_ports_but_other_drivers_do():
    parse_stack(_stack())
    with pytest.raises(StackError) as e:
        parse_stack(_stack(driver="docker"))
    assert "services.acts.host_ports: required with driver 'docker'" in str(e.value)


def test_swarm_needs_an_image():
    with pytest.raises(StackError) as e:
        parse_stack(_stack(services={"acts": {"command": ["python", "-m", "x"]}}))
    assert "services.acts.image: required with driver 'swarm'" in str(e.value)


def test_placement_is_checked_and_spread_has_two_spellings():
    st = parse_stack(_stack(services={"acts": {"image": "a", "placement": {
        "constraints": ["node.role==worker"],
        "preferences": [{"spread": "node.labels.zone"}, "spread=node.labels.rack"]}}}))
    assert st.services["acts"].placement.preferences == ["node.labels.zone", "node.labels.rack"]
    with pytest.raises(StackError) as e:
        parse_stack(_stack(services={"acts": {"image": "a", "placement": {"constraints": ["node.role worker"]}}}))
    assert "constraint 'node.role worker'" in str(e.value)
    with pytest.raises(StackError) as e:
        parse_stack(_stack(services={"acts": {"image": "a", "placement": {"preferences": [{"spread": "zone"}]}}}))
    assert "spread: node.labels.NAME" in str(e.value)
    with pytest.raises(StackError) as e:
        parse_stack(_stack(services={"acts": {"image": "a", "placement": {"constraint": []}}}))
    assert "did you mean 'constraints'" in str(e.value)


def test_swarm_manager_address_is_checked():
    assert parse_stack(_stack(swarm={"manager": "tcp://10.0.0.1:2376"})).swarm.manager == "tcp://10.0.0.1:2376"
    with pytest.raises(StackError) as e:
        parse_stack(_stack(swarm={"manager": "10.0.0.1"}))
    assert "swarm.manager" in str(e.value)


def test_dependency_host_port_optional_only_for_swarm():
    dep = {"db": {"image": "m", "container_port": 3306}}
    assert parse_stack(_stack(dependencies=dep)).dependencies["db"].host_port is None
    with pytest.raises(StackError) as e:
        parse_stack(_stack(driver="docker", dependencies=dep,
                           services={"acts": {"image": "a", "host_ports": "8000-8009"}}))
    assert "dependencies.db.host_port: required with driver 'docker'" in str(e.value)


# --- tasks -> replicas ----------------------------------------------------------------------------

def _node(nid, addr, state="ready", host="n"):
    return {"ID": nid, "Status": {"State": state, "Addr": addr}, "Description": {"Hostname": host}}


def _task(tid, node, port, service="acts", state="running", desired="running", slot=1, stack="t", cport=80):
    return {"ID": tid, "NodeID": node, "Slot": slot, "DesiredState": desired,
            "Spec": {"ContainerSpec": {"Labels": {LABEL_STACK: stack, LABEL_SERVICE: service,
                                                  LABEL_CONTAINER_PORT: str(cport)}}},
            "Status": {"State": state, "Timestamp": "2026-11-28T10:14:51.123456789Z",
                       "PortStatus": {"Ports": [{"Protocol": "tcp", "TargetPort": cport, "PublishedPort": port,
                                                 "PublishMode": "host"}] * 2}}}


def test_running_tasks_on_ready_nodes_become_replicas_at_node_address_and_port():
    nodes = [_node("N1", "10.211.0.12", host="n2"), _node("N2", "10.211.0.13")]
    tasks = [_task("aaaaaaaaaaaaXYZ", "N1", 32768), _task("bbbbbbbbbbbbXYZ", "N2", 32769, slot=2)]
    reps = tasks_to_replicas("t", tasks, nodes)
    assert [(r.id, r.service, r.host, r.port) for r in reps] == [
        ("acts.1.aaaaaaaaaaaa", "acts", "10.211.0.12", 32768),
        ("acts.2.bbbbbbbbbbbb", "acts", "10.211.0.13", 32769)]
    assert reps[0].detail == "task aaaaaaaaaaaa on n2 10.211.0.12:32768"
    assert reps[0].started_at == parse_timestamp("2026-11-28T10:14:51Z")


def test_tasks_that_are_not_serving_are_left_out():
    nodes = [_node("N1", "10.211.0.12"), _node("DOWN", "10.211.0.13", state="down")]
    tasks = [
        _task("preparing", "N1", 1, state="preparing"),
        _task("shutdown", "N1", 2, desired="shutdown", state="shutdown"),
        _task("on-down-node", "DOWN", 3),
        _task("other-stack", "N1", 4, stack="other"),
        _task("unknown-node", "N9", 5),
        _task("no-port", "N1", None),
        _task("ok", "N1", 6),
        _task("health-pending", "N1", 7, state="starting"),  # our probe decides when it serves
    ]
    assert [r.port for r in tasks_to_replicas("t", tasks, nodes)] == [7, 6]


def test_published_port_matches_the_container_port_in_host_mode():
    t = _task("x", "N1", 30001, cport=80)
    assert published_port(t, 80) == 30001
    assert published_port(t, 8080) is None
    t["Status"]["PortStatus"]["Ports"] = [{"TargetPort": 80, "PublishedPort": 30000, "PublishMode": "ingress"}]
    assert published_port(t, 80) is None


def test_a_manager_reporting_0000_is_found_by_its_manager_address():
    n = _node("M", "0.0.0.0")
    n["ManagerStatus"] = {"Addr": "10.211.0.11:2377"}
    assert ready_nodes([n]) == {"M": ("10.211.0.11", "n")}


# --- the service definition -----------------------------------------------------------------------

def test_service_definition_sets_everything_swarm_would_otherwise_default():
    spec = LaunchSpec(stack="t", service="acts", host_port=0, image="acts:latest", container_port=80,
                      environment={"A": "1"}, constraints=("node.role==worker",),
                      preferences=("node.labels.zone",), health_path="/api/v1/_health", stop_grace=7)
    d = service_definition("t", spec, 3, "t-net")
    assert d["name"] == "t-acts" and d["labels"] == {LABEL_STACK: "t", LABEL_SERVICE: "acts"}
    assert d["mode"].mode == "replicated" and d["mode"].replicas == 3
    assert d["endpoint_spec"]["Mode"] == "dnsrr"
    assert d["endpoint_spec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 80, "PublishMode": "host"}]
    tt = d["task_template"]
    assert tt["RestartPolicy"] == {"Condition": "any", "Delay": 500_000_000, "MaxAttempts": 0, "Window": 0}
    assert tt["Placement"]["Constraints"] == ["node.role==worker"]
    assert tt["Placement"]["Preferences"] == [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]
    assert tt["Networks"] == [{"Target": "t-net"}]
    cs = tt["ContainerSpec"]
    assert cs["Init"] is True and cs["StopGracePeriod"] == 7_000_000_000
    assert cs["Labels"][LABEL_CONTAINER_PORT] == "80" and cs["Labels"][LABEL_HEALTH_PATH] == "/api/v1/_health"
    # No container health check (the image's own is overridden): Swarm would report the task and
    # its port only once that check passed.
    assert cs["Healthcheck"] == {"Test": ["NONE"]}
    assert d["update_config"]["Order"] == "start-first"
    checked = service_definition("t", spec, 3, "t-net", container_health_check=True)
    hc = checked["task_template"]["ContainerSpec"]["Healthcheck"]
    assert hc["Interval"] == 1_000_000_000
    assert hc["Test"] == health_command("/api/v1/_health", 80)


def test_a_dependency_has_its_volume_and_no_http_health_check():
    spec = LaunchSpec(stack="t", service="db", host_port=0, image="m", container_port=3306,
                      volumes={"t-db": "/var/lib/mysql"}, constraints=("node.role==manager",))
    cs = service_definition("t", spec, 1, "t")["task_template"]["ContainerSpec"]
    assert cs["Healthcheck"] == {"Test": ["NONE"]}
    # a dependency has no HTTP check even when services get one
    spec_cs = service_definition("t", spec, 1, "t", container_health_check=True)["task_template"]["ContainerSpec"]
    assert spec_cs["Healthcheck"] == {"Test": ["NONE"]} and LABEL_HEALTH_PATH not in cs["Labels"]
    assert cs["Mounts"][0]["Source"] == "t-db" and cs["Mounts"][0]["Target"] == "/var/lib/mysql"


def test_health_command_runs_without_a_shell():
    cmd = health_command("/h", 8080)
    assert cmd[:3] == ["CMD", "python3", "-c"]
    assert "http://127.0.0.1:8080/h" in cmd[3]
    compile(cmd[3], "<health>", "exec")


# --- decisions of a driver that owns the count ----------------------------------------------------

def test_snapshot_changes():
    records = {"a": S.READY, "b": S.STARTING, "c": S.STOPPING, "d": S.UNHEALTHY}
    ch = driver_owned.snapshot_changes(records, ["a", "c", "e"])
    assert ch.new == ["e"]       # c is being forgotten: it comes back on a later snapshot
    assert ch.gone == ["b"]      # only live records can be gone; d is broken already


def test_broken_records_are_forgotten():
    assert driver_owned.to_forget({"a": S.READY, "b": S.EXITED, "c": S.UNHEALTHY}) == ["b", "c"]


def test_count_to_set():
    assert driver_owned.count_to_set(3, None, False) == 3
    assert driver_owned.count_to_set(3, 3, False) is None
    assert driver_owned.count_to_set(5, 3, True) is None
    assert driver_owned.count_to_set(0, 3, False) == 0


# --- silent tasks and node jobs -------------------------------------------------------------------

def test_a_task_forgotten_as_broken_and_still_listed_is_ended_after_the_bound_then_retried():
    s = driver_owned.silent_tasks({}, {}, ["a"], {"a", "b"}, set(), now=100.0, after=10, retry=30)
    assert s.since == {"a": 100.0} and s.end == []
    # forgotten again (a new record of the same task failed again): the first time is kept
    s = driver_owned.silent_tasks(s.since, s.ending, ["a"], {"a", "b"}, set(), now=105.0, after=10, retry=30)
    assert s.since == {"a": 100.0} and s.end == []
    s = driver_owned.silent_tasks(s.since, s.ending, [], {"a", "b"}, set(), now=110.0, after=10, retry=30)
    assert s.end == ["a"] and s.ending == {"a": 110.0}
    s = driver_owned.silent_tasks(s.since, s.ending, [], {"a", "b"}, set(), now=120.0, after=10, retry=30)
    assert s.end == []                      # asked once; the next try only after `retry`
    s = driver_owned.silent_tasks(s.since, s.ending, [], {"a", "b"}, set(), now=140.0, after=10, retry=30)
    assert s.end == ["a"]
    # gone from the listing (ended, replaced): forgotten
    s = driver_owned.silent_tasks(s.since, s.ending, [], {"b"}, set(), now=141.0, after=10, retry=30)
    assert s == driver_owned.Silence({}, {}, [])


def test_a_task_that_answers_again_or_was_gone_already_is_not_ended():
    s = driver_owned.silent_tasks({}, {}, ["a", "gone"], {"a"}, set(), now=0.0, after=10, retry=30)
    assert s.since == {"a": 0.0}            # a task no longer listed is not watched
    s = driver_owned.silent_tasks(s.since, s.ending, [], {"a"}, {"a"}, now=20.0, after=10, retry=30)
    assert s.since == {} and s.end == []    # it passed a probe again: not silent


def test_task_places_name_the_node_container_and_job_image_of_each_replica():
    nodes = [_node("N1", "10.211.0.12")]
    t = _task("aaaaaaaaaaaaXYZ", "N1", 32768)
    t["Spec"]["ContainerSpec"]["Image"] = "acts:latest@sha256:1"
    t["Spec"]["ContainerSpec"]["Labels"][LABEL_HEALTH_PATH] = "/api/v1/_health"
    t["Status"]["ContainerStatus"] = {"ContainerID": "c0ffee"}
    db = _task("ccccccccccccXYZ", "N1", 32770, service="db", cport=3306)   # a dependency: no health path
    db["Spec"]["ContainerSpec"]["Image"] = "selfieless/mariadb:latest"
    db["Status"]["ContainerStatus"] = {"ContainerID": "dbdbdb"}
    starting = _task("bbbbbbbbbbbbXYZ", "N1", 32769, slot=2)   # no container yet: nothing to end
    reps = tasks_to_replicas("t", [t, db, starting], nodes)
    assert task_places([t, db, starting], reps) == {
        "acts.1.aaaaaaaaaaaa": TaskPlace(task="aaaaaaaaaaaaXYZ", node="N1", container="c0ffee",
                                         image="acts:latest@sha256:1"),
        # MariaDB's image has no python3 for the job: "" is the driver's helper image
        "db.1.cccccccccccc": TaskPlace(task="ccccccccccccXYZ", node="N1", container="dbdbdb", image="")}


def test_node_socket_is_the_usual_path_unless_the_node_is_labelled():
    assert node_socket({"Spec": {"Labels": {}}}) == DEFAULT_SOCKET == "/var/run/docker.sock"
    assert node_socket({"Spec": {"Labels": {LABEL_NODE_SOCKET: "/run/n2/docker.sock"}}}) == "/run/n2/docker.sock"


def test_a_node_job_runs_once_on_its_node_as_root_with_the_socket_mounted():
    d = node_job_definition("t", "end-task", "t-end-task-x", "N1", "/run/n2/docker.sock", "acts:latest",
                            END_CONTAINER_CODE, ["c0ffee"])
    assert d["name"] == "t-end-task-x"
    assert d["labels"] == {LABEL_STACK: "t", LABEL_JOB: "end-task"}
    assert d["mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    tmpl = d["task_template"]
    assert tmpl["Placement"]["Constraints"] == ["node.id==N1"]
    assert tmpl["RestartPolicy"]["Condition"] == "none"   # a job that failed is reported, not rerun
    cs = tmpl["ContainerSpec"]
    assert cs["Command"] == ["python3", "-c", END_CONTAINER_CODE, "c0ffee"] and cs["User"] == "0"
    assert cs["Labels"] == {LABEL_STACK: "t", LABEL_JOB: "end-task"}    # no service label: never a replica
    assert cs["Mounts"] == [{"Target": "/var/run/docker.sock", "Source": "/run/n2/docker.sock", "Type": "bind",
                             "ReadOnly": False}]


def test_the_job_programs_compile():
    compile(END_CONTAINER_CODE, "end", "exec")
    compile(REMOVE_VOLUMES_CODE, "volumes", "exec")


def test_job_outcome_from_its_task_records():
    assert job_outcome([]) is None
    assert job_outcome([{"Status": {"State": "running"}}]) is None
    assert job_outcome([{"Status": {"State": "complete"}}]) == (True, "done")
    assert job_outcome([{"Status": {"State": "failed", "Err": "task: non-zero exit (1)"}}]) == (
        False, "failed: task: non-zero exit (1)")


def test_helper_image_is_optional_and_not_empty():
    assert parse_stack(_stack()).swarm.helper_image is None
    assert parse_stack(_stack()).swarm.container_health_check is False
    assert parse_stack(_stack(swarm={"helper_image": "tools:1"})).swarm.helper_image == "tools:1"
    with pytest.raises(StackError):
        parse_stack(_stack(swarm={"helper_image": ""}))
def test_a_task_swarm_is_shutting_down_is_reported_leaving_while_its_container_runs():
    nodes = [_node("N1", "10.211.0.12")]
    tasks = [_task("old", "N1", 1, desired="shutdown"), _task("new", "N1", 2, state="starting"),
             _task("gone", "N1", 3, desired="shutdown", state="complete")]
    reps = {r.port: r.leaving for r in tasks_to_replicas("t", tasks, nodes)}
    assert reps == {1: True, 2: False}


# --- rolling updates (Swarm's own) ------------------------------------------------------------------

def _launch(**over):
    return LaunchSpec(stack="t", service="acts", host_port=0, image="acts:latest", **over)


def test_the_update_block_becomes_swarms_update_and_rollback_config_with_every_field_set():
    update, rollback = update_configs(_launch(update_parallelism=2, update_order="stop-first",
                                              update_monitor=7.5, update_failure_action="pause"))
    assert update == {"Parallelism": 2, "Delay": 0, "FailureAction": "pause", "Monitor": 7_500_000_000,
                      "MaxFailureRatio": 0.0, "Order": "stop-first"}
    # A failed rollback pauses (rolling back a rollback would loop); otherwise the same way back.
    assert rollback == {**update, "FailureAction": "pause"}
    update, rollback = update_configs(_launch())
    assert update["FailureAction"] == "rollback" and update["Order"] == "start-first"
    assert update["Parallelism"] == 1 and update["Monitor"] == 5_000_000_000
    d = service_definition("t", _launch(), 3, "t")
    assert d["update_config"] == update and d["rollback_config"] == rollback


def test_the_image_is_pinned_to_a_repo_digest_else_to_its_id():
    assert pinned_image("acts:latest", None) == ("acts:latest", None)
    local = {"Id": "sha256:aaa", "RepoDigests": []}
    assert pinned_image("acts:latest", local) == ("sha256:aaa", "sha256:aaa")
    pushed = {"Id": "sha256:aaa", "RepoDigests": ["other/x@sha256:111", "reg:5000/acts@sha256:222"]}
    assert pinned_image("reg:5000/acts:latest", pushed) == ("reg:5000/acts@sha256:222", "sha256:aaa")
    assert pinned_image("reg:5000/acts", pushed) == ("reg:5000/acts@sha256:222", "sha256:aaa")
    cs = service_definition("t", _launch(), 1, "t", image=("sha256:aaa", "sha256:aaa"))["task_template"]["ContainerSpec"]
    assert cs["Image"] == "sha256:aaa"
    assert cs["Labels"][LABEL_IMAGE] == "acts:latest" and cs["Labels"][LABEL_IMAGE_ID] == "sha256:aaa"
    cs = service_definition("t", _launch(), 1, "t")["task_template"]["ContainerSpec"]
    assert cs["Image"] == "acts:latest" and LABEL_IMAGE_ID not in cs["Labels"]


def _st(state, started="2026-11-28T10:00:00Z", message=""):
    return {"State": state, "StartedAt": started, "Message": message}


def test_update_outcome_reads_swarms_update_status_of_our_update_only():
    before = _st("completed", "2026-11-28T09:00:00Z")
    assert update_outcome(before, before) is None                      # the previous update's verdict
    assert update_outcome(None, None) is None and update_outcome(None, {}) is None
    assert update_outcome(before, _st("updating")) is None
    assert update_outcome(before, _st("rollback_started")) is None
    assert update_outcome(before, _st("completed", message="update completed")) == ("complete", "update completed")
    assert update_outcome(None, _st("completed")) == ("complete", "completed")
    assert update_outcome(before, _st("paused", message="update paused due to failure")) == \
        ("paused", "update paused due to failure")
    why = "update rolled back due to failure or early termination of task x"
    assert update_outcome(before, _st("rollback_completed", message=why)) == ("rolled_back", why)
    assert update_outcome(before, _st("rollback_paused")) == ("paused", "rollback paused")
    # A rollback we asked for (undo): its completion is a success.
    assert update_outcome(before, _st("rollback_completed"), undo=True) == ("complete", "rollback completed")
    assert update_outcome(before, _st("completed"), undo=True) is None


def test_undo_is_swarms_rollback_only_when_the_previous_spec_is_the_last_update():
    one = {"Mode": {"Replicated": {"Replicas": 3}}, "TaskTemplate": {"ContainerSpec": {"Image": "a"}}}
    two = {**one, "TaskTemplate": {"ContainerSpec": {"Image": "b"}}}
    scaled = {**two, "Mode": {"Replicated": {"Replicas": 5}}}
    assert undo_by_rollback(two, one)
    assert not undo_by_rollback(scaled, two)      # the last change was a scale
    assert not undo_by_rollback(two, None) and not undo_by_rollback(None, one)


# --- more of the same, each case a way Swarm's records really look ----------------------------------

def test_the_container_runs_the_image_with_its_environment_and_stack_labelled_volumes():
    spec = LaunchSpec(stack="t", service="db", host_port=0, image="mariadb:11", container_port=3306,
                      environment={"MARIADB_DATABASE": "acts", "TZ": "UTC"},
                      volumes={"t-db": "/var/lib/mysql", "t-conf": "/etc/mysql/conf.d"})
    cs = service_definition("t", spec, 1, "t")["task_template"]["ContainerSpec"]
    assert cs["Image"] == "mariadb:11"
    assert sorted(cs["Env"]) == ["MARIADB_DATABASE=acts", "TZ=UTC"]
    # Named volumes labelled with the stack, so they can be told apart from anything else's.
    assert [(m["Source"], m["Target"], m["Type"], m["VolumeOptions"]["Labels"]) for m in cs["Mounts"]] == [
        ("t-db", "/var/lib/mysql", "volume", {LABEL_STACK: "t"}),
        ("t-conf", "/etc/mysql/conf.d", "volume", {LABEL_STACK: "t"})]


def test_only_ready_nodes_with_an_address_count_whatever_their_order():
    down = _node("D", "10.211.0.9", state="down")
    no_addr = {"ID": "X", "Status": {"State": "ready"}}                     # no address at all
    lost_manager = _node("L", "0.0.0.0")                                    # 0.0.0.0, no ManagerStatus
    manager = {"ID": "M", "Status": {"State": "ready"}, "ManagerStatus": {"Addr": "10.211.0.11:2377"},
               "Description": {"Hostname": "m"}}                            # Addr missing: the manager's
    plain = _node("N", "10.211.0.12", host="n2")
    assert ready_nodes([down, no_addr, lost_manager, manager, plain]) == {
        "M": ("10.211.0.11", "m"), "N": ("10.211.0.12", "n2")}


def test_replica_detail_names_a_node_without_a_hostname_plainly():
    node = {"ID": "N", "Status": {"State": "ready", "Addr": "10.211.0.12"}}
    (rep,) = tasks_to_replicas("t", [_task("cccccccccccc0", "N", 30001)], [node])
    assert rep.detail == "task cccccccccccc on node 10.211.0.12:30001"


def test_a_task_without_a_usable_container_port_label_is_skipped_not_fatal():
    nodes = [_node("N1", "10.211.0.12")]
    unlabelled = _task("unlabelled", "N1", 30001)
    del unlabelled["Spec"]["ContainerSpec"]["Labels"][LABEL_CONTAINER_PORT]
    garbled = _task("garbled", "N1", 30002)
    garbled["Spec"]["ContainerSpec"]["Labels"][LABEL_CONTAINER_PORT] = "eighty"
    later = _task("later", "N1", 30003)
    assert [r.port for r in tasks_to_replicas("t", [unlabelled, garbled, later], nodes)] == [30003]


def test_undo_is_swarms_rollback_only_when_the_previous_spec_differs_in_the_task():
    three, five = {"Replicated": {"Replicas": 3}}, {"Replicated": {"Replicas": 5}}
    v1, v2 = {"ContainerSpec": {"Image": "acts@sha256:1"}}, {"ContainerSpec": {"Image": "acts@sha256:2"}}
    cases = [  # previous (Mode, TaskTemplate), current -> Swarm's rollback undoes the update
        ((three, v1), (three, v2), True),
        ((three, v2), (five, v2), False),        # only a scale since: rolling back would undo it
        ((three, v1), (five, v2), False),        # a scale and an update: go to the spec instead
        ((three, v2), (three, v2), False),
    ]
    for (pm, pt), (m, t), expected in cases:
        assert undo_by_rollback({"Mode": m, "TaskTemplate": t}, {"Mode": pm, "TaskTemplate": pt}) is expected
    assert undo_by_rollback({"Mode": three, "TaskTemplate": v2}, None) is False


# --- the gateway on every node ----------------------------------------------------------------------

from selfieless.orchestrator.drivers.swarm_edge_spec import (  # noqa: E402
    GATEWAY_TOKEN_ENV, LABEL_GATEWAY_SPEC, LABEL_ROLE, gateway_command, gateway_places, gateway_service_definition,
    gateway_spec_key, gateway_token,
)


def _gateway_task(tid, node, desired="running", state="running", role="gateway"):
    return {"ID": tid, "NodeID": node, "DesiredState": desired, "Status": {"State": state},
            "Spec": {"ContainerSpec": {"Labels": {LABEL_STACK: "t", LABEL_ROLE: role}}}}


@pytest.mark.parametrize("tasks, want", [
    ([], {}),
    ([_gateway_task("g1", "n1"), _gateway_task("g2", "n2", state="starting")],
     {"10.0.0.1": "h1", "10.0.0.2": "h2"}),
    # killed: the old task is shut down, its replacement not started yet; the node stays listed
    ([_gateway_task("g1", "n1", desired="shutdown", state="failed"), _gateway_task("g3", "n1", state="pending")],
     {"10.0.0.1": "h1"}),
    ([_gateway_task("g1", "n1", desired="shutdown", state="failed")], {}),   # the service is going away
    ([_gateway_task("g2", "n2"), _gateway_task("g3", "n3")], {"10.0.0.2": "h2"}),   # n3 is down
    ([_gateway_task("g1", "n1", role="")], {}),                                      # not a gateway
])
def test_gateway_places_are_the_ready_nodes_where_swarm_wants_a_gateway(tasks, want):
    nodes = [_node("n1", "10.0.0.1", host="h1"), _node("n2", "10.0.0.2", host="h2"),
             _node("n3", "10.0.0.3", state="down", host="h3")]
    assert gateway_places(tasks, nodes) == want


def test_the_gateway_service_is_global_with_both_ports_in_host_mode_and_no_service_label():
    cmd = gateway_command({"host": "127.0.0.1", "port": 1, "balance": "round_robin"}, {"/api/v1": "acts"}, 80, 81)
    assert cmd[:5] == ["python3", "-m", "selfieless.gateway", "--control-listen", "0.0.0.0:81"]
    assert '"host": "0.0.0.0"' in cmd[cmd.index("--config-json") + 1] and '"port": 80' in cmd[cmd.index("--config-json") + 1]
    d = gateway_service_definition("t", "acts:latest", cmd, 80, 81, "tok", "t")
    assert d["name"] == "t-gateway"
    assert d["mode"] == {"global": {}}   # the SDK's spelling; the engine reads it either way
    assert d["labels"] == {LABEL_STACK: "t", LABEL_ROLE: "gateway", LABEL_GATEWAY_SPEC: gateway_spec_key("acts:latest", cmd)}
    assert sorted((p["TargetPort"], p["PublishedPort"], p["PublishMode"]) for p in d["endpoint_spec"]["Ports"]) == \
        [(80, 80, "host"), (81, 81, "host")]
    cs = d["task_template"]["ContainerSpec"]
    assert LABEL_SERVICE not in cs["Labels"]   # no replica of any service
    assert cs["Env"] == [f"{GATEWAY_TOKEN_ENV}=tok"] and cs["Command"] == cmd
    assert d["task_template"]["RestartPolicy"]["Condition"] == "any"
    assert gateway_token({"Spec": {"TaskTemplate": d["task_template"]}}) == "tok"
    assert gateway_token({"Spec": {"TaskTemplate": {"ContainerSpec": {"Env": ["A=1"]}}}}) is None
    assert gateway_spec_key("acts:latest", cmd) != gateway_spec_key("acts:latest", [*cmd[:-1], "9"])


def test_gateway_settings_in_the_stack_file():
    st = parse_stack(_stack(swarm={"gateway": "local", "gateway_control_port": 9001, "gateway_image": "gw:1"}))
    assert (st.swarm.gateway, st.swarm.gateway_control_port, st.swarm.gateway_image) == ("local", 9001, "gw:1")
    assert parse_stack(_stack()).swarm.gateway == "every_node"
    for bad in ({"gateway": "somewhere"}, {"gateway_control_port": 0}, {"gateway_image": ""}):
        with pytest.raises(StackError):
            parse_stack(_stack(swarm=bad))


# --- the control plane as a Swarm service (swarm_control.py) --------------------------------------

def test_the_control_plane_service_runs_up_of_the_config_on_a_manager_with_the_socket():
    from selfieless.orchestrator.drivers.swarm_control import (LABEL_CONTROL, STACK_PATH, control_service_definition,
                                                              control_service_name)

    d = control_service_definition("st", "acts:latest", "cfgid", "st-stackfile-abc", "/run/x.sock", 8080, 8090)
    assert d["name"] == control_service_name("st") == "st-control"
    assert d["labels"] == {LABEL_CONTROL: "st"} and LABEL_STACK not in d["labels"]   # down must not remove it
    assert dict(d["mode"]) == {"replicated": {"Replicas": 1}}
    t = d["task_template"]
    assert t["Placement"]["Constraints"] == ["node.role==manager"]
    assert t["RestartPolicy"]["Condition"] == "any"
    assert [n["Target"] for n in t["Networks"]] == ["host"]
    cs = t["ContainerSpec"]
    assert cs["Command"][:5] == ["python3", "-m", "selfieless", "up", STACK_PATH]
    assert "--in-service" in cs["Command"] and cs["Command"][cs["Command"].index("--port") + 1] == "8080"
    assert cs["Mounts"] == [{"Target": DEFAULT_SOCKET, "Source": "/run/x.sock", "Type": "bind", "ReadOnly": False}]
    assert cs["Configs"][0]["ConfigID"] == "cfgid" and cs["Configs"][0]["File"]["Name"] == STACK_PATH
    assert cs["User"] == "0" and f"DOCKER_HOST=unix://{DEFAULT_SOCKET}" in cs["Env"]
    # Not the image's HEALTHCHECK (it asks an app on port 80): Swarm would kill the task as unhealthy.
    assert cs["Healthcheck"] == {"Test": ["NONE"]}


def test_the_control_plane_runs_where_the_stack_places_it_within_the_managers():
    from selfieless.orchestrator.drivers.swarm_control import control_service_definition

    stack = parse_stack(_stack(swarm={"control_placement": {"constraints": ["node.labels.db!=true"],
                                                            "preferences": [{"spread": "node.labels.zone"}]}}))
    where = stack.swarm.control_placement
    d = control_service_definition("st", "acts:latest", "c", "n", "/run/x.sock", 8080, 8090,
                                   where.constraints, where.preferences)
    placement = d["task_template"]["Placement"]
    assert placement["Constraints"] == ["node.role==manager", "node.labels.db!=true"]
    assert placement["Preferences"] == [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]
    with pytest.raises(StackError, match="constraint"):
        parse_stack(_stack(swarm={"control_placement": {"constraints": ["db"]}}))


def test_the_files_gateway_tls_names_are_shipped_as_secrets_the_task_reads():
    from selfieless.orchestrator.drivers.swarm_control import (control_service_definition, file_secret_name,
                                                              tls_file_fields)

    tls = {"port": 443, "cert": "/a/site.crt", "key": "/a/site.key",
           "certs": [{"cert": "/b/api.crt", "key": "/b/api.key", "hosts": ["api.example"]}],
           "acme": {"directory": "https://ca/dir", "ca_bundle": "/c/ca.pem"}}
    fields = tls_file_fields(tls)
    assert [holder[key] for holder, key in fields] == ["/a/site.crt", "/a/site.key", "/b/api.crt", "/b/api.key",
                                                       "/c/ca.pem"]
    assert tls_file_fields({"port": 443, "acme": {"directory": "https://ca/dir"}}) == []
    assert file_secret_name("st", b"x") == file_secret_name("st", b"x") != file_secret_name("st", b"y")
    d = control_service_definition("st", "acts:latest", "c", "n", "/run/x.sock", 8080, 8090,
                                   secrets=[("id1", "st-file-1"), ("id2", "st-file-2")])
    mounted = d["task_template"]["ContainerSpec"]["Secrets"]
    assert [(m["SecretID"], m["File"]["Name"], m["File"]["Mode"]) for m in mounted] == \
        [("id1", "st-file-1", 0o400), ("id2", "st-file-2", 0o400)]   # at /run/secrets/<name>, owner-read
    assert "Secrets" not in control_service_definition("st", "a", "c", "n", "/s", 1, 2)["task_template"]["ContainerSpec"]


def test_with_a_token_the_control_planes_admin_api_listens_on_its_node_and_reads_the_token_from_a_secret():
    from selfieless.orchestrator.drivers.swarm_control import (ADMIN_TOKEN_FILE_ENV, admin_token_secret_name,
                                                              control_service_definition)

    name = admin_token_secret_name("st", "s3cret")
    assert name == admin_token_secret_name("st", "s3cret") != admin_token_secret_name("st", "other")
    assert "s3cret" not in name
    cs = control_service_definition("st", "acts:latest", "c", "n", "/run/x.sock", 8080, 8090,
                                    secrets=[("id1", "st-file-1")], admin_token=("tid", name))["task_template"]["ContainerSpec"]
    assert cs["Command"][cs["Command"].index("--admin-host") + 1] == "0.0.0.0"
    assert f"{ADMIN_TOKEN_FILE_ENV}=/run/secrets/{name}" in cs["Env"]
    assert not any("s3cret" in e for e in cs["Env"])   # the manager's API shows a service's environment
    assert [m["SecretID"] for m in cs["Secrets"]] == ["id1", "tid"]
    # Without a token: loopback only (the command's default), no token file.
    cs = control_service_definition("st", "a", "c", "n", "/s", 1, 2)["task_template"]["ContainerSpec"]
    assert "--admin-host" not in cs["Command"] and not any(ADMIN_TOKEN_FILE_ENV in e for e in cs["Env"])


def _control(command_tail: list[str]) -> dict:
    return {"Spec": {"Name": "st-control",
                     "TaskTemplate": {"ContainerSpec": {"Command": ["python3", "-m", "selfieless", "up", "/s.yaml",
                                                                    "--admin-port", "9190", *command_tail]}}}}


@pytest.mark.parametrize("tasks, nodes, command, want", [
    # The running task's node, at the command's admin port.
    ([_task("t1", "a", 0)], [_node("a", "10.0.0.1")], ["--admin-host", "0.0.0.0"], "http://10.0.0.1:9190"),
    # Moved: the old task is still listed running on the dead node; the new one is on a live node.
    ([_task("t1", "a", 0), _task("t2", "b", 0)], [_node("a", "10.0.0.1", "down"), _node("b", "10.0.0.2")],
     ["--admin-host", "0.0.0.0"], "http://10.0.0.2:9190"),
    ([_task("t1", "b", 0, state="shutdown", desired="shutdown"), _task("t2", "a", 0, state="starting")],
     [_node("a", "10.0.0.1"), _node("b", "10.0.0.2")], ["--admin-host", "0.0.0.0"],
     "no task of st-control is running on a node that is up"),
    ([_task("t1", "a", 0)], [_node("a", "10.0.0.1", "unknown")], ["--admin-host", "0.0.0.0"],
     "try again in a few seconds"),
    ([_task("t1", "a", 0)], [_node("a", "fd00::1")], ["--admin-host", "0.0.0.0"], "http://[fd00::1]:9190"),
    # No token, no --admin-host: the API is on the node's loopback, and the error says where it runs.
    ([_task("t1", "a", 0)], [_node("a", "10.0.0.1", host="host-a")], [],
     "runs on host-a (10.0.0.1), with its admin API on that node's loopback only"),
])
def test_the_cli_finds_the_detached_control_planes_admin_api_through_the_swarm(tasks, nodes, command, want):
    from selfieless.orchestrator.drivers.swarm_control import admin_address

    if want.startswith("http"):
        assert admin_address(_control(command), tasks, nodes) == want
    else:
        with pytest.raises(ValueError, match=re.escape(want)):
            admin_address(_control(command), tasks, nodes)


def test_the_gateways_on_every_node_get_https_settings_without_certificates_and_publish_the_port():
    from selfieless.gateway.tls import CertPair, TlsSettings
    from selfieless.orchestrator.drivers.swarm_edge_spec import gateway_command, gateway_service_definition
    from selfieless.orchestrator.fleet_tls import fleet_tls_settings

    tls = TlsSettings(port=8443, default=CertPair("/a.crt", "/a.key"), strict_sni=True, hsts="max-age=60",
                      acme={"directory": "https://ca/dir", "state_dir": "/s"})
    sent = fleet_tls_settings(tls)
    assert sent["default"] is None and not sent["certs"] and sent["acme"] is None   # the control plane's job
    assert sent["port"] == 8443 and sent["strict_sni"] and sent["hsts"] == "max-age=60" and sent["reload_interval"] == 0
    assert fleet_tls_settings(None) is None
    command = gateway_command({}, {"/": "web"}, 80, 81, sent)
    assert TlsSettings.from_json(json.loads(command[command.index("--tls-json") + 1])).port == 8443
    assert "--tls-json" not in gateway_command({}, {"/": "web"}, 80, 81)
    d = gateway_service_definition("st", "img", command, 80, 81, "tok", "net", tls_port=8443)
    assert [p["PublishedPort"] for p in d["endpoint_spec"]["Ports"]] == [80, 81, 8443]
    assert all(p["PublishMode"] == "host" for p in d["endpoint_spec"]["Ports"])


def test_each_stack_file_is_a_config_of_its_own():
    from selfieless.orchestrator.drivers.swarm_control import stack_config_name

    assert stack_config_name("st", "a: 1") == stack_config_name("st", "a: 1")
    assert stack_config_name("st", "a: 1") != stack_config_name("st", "a: 2")
    assert stack_config_name("st", "a: 1").startswith("st-stackfile-")


@pytest.mark.parametrize("labels,expected", [
    ([None, None], DEFAULT_SOCKET),
    (["/run/a.sock", "/run/a.sock"], "/run/a.sock"),
    (["/run/a.sock", "/run/b.sock"], None),     # managers differ: one mount cannot follow
    (["/run/a.sock", None], None),
    ([DEFAULT_SOCKET, None], DEFAULT_SOCKET),
])
def test_the_socket_mounted_is_the_one_every_manager_has(labels, expected):
    from selfieless.orchestrator.drivers.swarm_control import manager_socket

    nodes = [{"Spec": {"Role": "manager", "Labels": {"selfieless.docker-socket": x} if x else {}}} for x in labels]
    nodes.append({"Spec": {"Role": "worker", "Labels": {"selfieless.docker-socket": "/run/w.sock"}}})
    assert manager_socket(nodes) == expected


# --- the floating IP ---------------------------------------------------------------------------------

from selfieless.orchestrator.drivers.swarm_edge_spec import (  # noqa: E402
    LABEL_VIP_SPEC, node_addresses, vip_command, vip_service_definition,
)


def test_floating_ip_in_the_stack_file_defaults_router_id_51_and_half_a_second():
    fip = parse_stack(_stack(swarm={"floating_ip": {"address": "10.211.0.100/24"}})).swarm.floating_ip
    assert (fip.address, fip.router_id, fip.advert) == ("10.211.0.100/24", 51, 0.5)
    assert parse_stack(_stack()).swarm.floating_ip is None
    fip = parse_stack(_stack(swarm={"floating_ip": {"address": "192.168.7.50/16", "router_id": 255,
                                                    "advert": 1}})).swarm.floating_ip
    assert (fip.address, fip.router_id, fip.advert) == ("192.168.7.50/16", 255, 1.0)


@pytest.mark.parametrize("fip, says", [
    ({"address": "10.211.0.100"}, "give the prefix"),
    ({"address": "10.211.0.300/24"}, "not an IPv4 address"),
    ({"address": "10.211.0.100/33"}, "not an IPv4 address"),
    ({"address": "fd00::5/64"}, "not an IPv4 address"),
    ({"address": "10.211.0.0/24"}, "network's own address"),
    ({"address": "10.211.0.255/24"}, "broadcast"),
    ({"address": "10.211.0.100/24", "router_id": 0}, "router_id"),
    ({"address": "10.211.0.100/24", "router_id": 256}, "router_id"),
    ({"address": "10.211.0.100/24", "advert": 0}, "advert"),
    ({"router_id": 5}, "address"),
    ({"address": "10.211.0.100/24", "vrid": 5}, "vrid"),
])
def test_a_bad_floating_ip_is_refused_saying_what(fip, says):
    with pytest.raises(StackError, match=says):
        parse_stack(_stack(swarm={"floating_ip": fip}))


def test_a_floating_ip_needs_the_gateway_on_every_node_and_the_swarm_driver():
    with pytest.raises(StackError, match="every_node"):
        parse_stack(_stack(swarm={"gateway": "local", "floating_ip": {"address": "10.211.0.100/24"}}))
    with pytest.raises(StackError, match="only the swarm driver"):
        parse_stack(_stack(driver="docker", services={"acts": {"image": "acts:latest", "host_ports": "9000-9009"}},
                           swarm={"floating_ip": {"address": "10.211.0.100/24"}}))


@pytest.mark.parametrize("nodes, want", [
    ([_node("a", "10.0.0.12"), _node("b", "10.0.0.2"), _node("c", "10.0.0.3", state="down")],
     ["10.0.0.2", "10.0.0.3", "10.0.0.12"]),   # a node that is down stays a peer; numeric order
    ([{"ID": "m", "Status": {"State": "ready", "Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "10.0.0.5:2377"}}],
     ["10.0.0.5"]),
    ([{"ID": "x", "Status": {"State": "unknown"}}], []),
])
def test_node_addresses_are_every_node_whatever_its_state(nodes, want):
    assert node_addresses(nodes) == want


def test_the_vip_service_is_global_on_the_host_network_with_vrrps_capabilities_and_no_service_label():
    cmd = vip_command("10.211.0.101/24", 52, 0.5, 80, ["10.211.0.11", "10.211.0.12"])
    assert cmd == ["python3", "-m", "selfieless.floating_ip", "--address", "10.211.0.101/24", "--router-id", "52",
                   "--advert", "0.5", "--gateway-port", "80", "--nodes", "10.211.0.11,10.211.0.12"]
    d = vip_service_definition("t", "acts@sha256:1", cmd)
    assert d["name"] == "t-vip" and d["mode"] == {"global": {}}
    assert d["labels"] == {LABEL_STACK: "t", LABEL_ROLE: "vip", LABEL_VIP_SPEC: gateway_spec_key("acts@sha256:1", cmd)}
    cs = d["task_template"]["ContainerSpec"]
    assert cs["Command"] == cmd and cs["User"] == "0" and cs["Init"] is True
    assert set(cs["CapabilityAdd"]) == {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BROADCAST"}
    assert LABEL_SERVICE not in cs["Labels"] and cs["Labels"][LABEL_ROLE] == "vip"
    assert d["task_template"]["Networks"] == [{"Target": "host"}]
    assert "endpoint_spec" not in d   # host network: nothing to publish
    assert d["update_config"]["Order"] == "stop-first" and d["update_config"]["Parallelism"] == 1
    # another set of nodes is another spec: the service is updated
    other = vip_command("10.211.0.101/24", 52, 0.5, 80, ["10.211.0.11", "10.211.0.12", "10.211.0.13"])
    assert vip_service_definition("t", "acts@sha256:1", other)["labels"][LABEL_VIP_SPEC] != d["labels"][LABEL_VIP_SPEC]


def test_the_lease_store_writes_nothing_once_it_removed_the_record():
    """A renewal still in its worker thread when `down` removes the lease must not create it again."""
    from selfieless.orchestrator.drivers.swarm_lease import Record, SwarmLeaseStore
    from selfieless.orchestrator.lease import Lease

    class Api:   # the Engine API calls the store makes, kept in memory
        def __init__(self):
            self.configs_made: list[str] = []

        def configs(self, filters):
            return [{"ID": "c1", "Version": {"Index": 1}, "Spec": {"Name": n, "Labels": {}}} for n in self.configs_made]

        def create_config(self, name, data, labels):
            self.configs_made.append(name)
            return {"ID": "c1"}

        def remove_config(self, config_id):
            self.configs_made.clear()

    class Client:
        api = Api()

    store = SwarmLeaseStore(Client(), "st")
    assert store.write(Lease("a", 10.0), Record(None, None, None)) is True
    assert Client.api.configs_made == ["st-lease"]
    store.remove()
    assert Client.api.configs_made == []
    assert store.write(Lease("a", 20.0), Record(None, None, None)) is False
    assert Client.api.configs_made == []


@pytest.mark.parametrize("message, electing", [
    ("503 Server Error: Service Unavailable (\"The swarm does not have a leader. It's possible that too few "
     "managers are online. Make sure more than half of the managers are online.\")", True),
    ("rpc error: code = Unknown desc = node lost leader status", True),
    ("404 Client Error: Not Found (\"service x not found\")", False),
    ("This node is not a swarm manager.", False),
])
def test_down_tries_again_only_while_the_swarm_elects_a_leader(message, electing):
    from selfieless.orchestrator.drivers.swarm_control import swarm_electing

    assert swarm_electing(message) is electing
