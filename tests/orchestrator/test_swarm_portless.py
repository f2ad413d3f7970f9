"""Tasks Swarm lists running without their published port (drivers/swarm_portless.py): which
are found, when their node is asked for their port (after the silent-task wait, then again only
after the retry), what the node job's answer means, and the port read used for the replica."""

from __future__ import annotations

from selfieless.orchestrator.driver_owned import END_RETRY, END_SILENT_AFTER
from selfieless.orchestrator.drivers.swarm_portless import (LOOK_UP_PORTS_CODE, PortlessTasks, look_up_args,
                                                            portless_places, read_looked_up)
from selfieless.orchestrator.drivers.swarm_spec import (LABEL_CONTAINER_PORT, LABEL_HEALTH_PATH, LABEL_SERVICE,
                                                       LABEL_STACK, tasks_to_replicas)

NODES = [{"ID": "N1", "Status": {"State": "ready", "Addr": "10.0.0.1"}},
         {"ID": "DOWN", "Status": {"State": "down", "Addr": "10.0.0.2"}}]


def _task(tid, port=None, node="N1", state="running", desired="running", stack="t", cport=80, container="c1",
          service="acts", image="acts:latest@sha256:x", health="/api/v1/_health"):
    labels = {LABEL_STACK: stack, LABEL_CONTAINER_PORT: str(cport), **({LABEL_SERVICE: service} if service else {}),
              **({LABEL_HEALTH_PATH: health} if health else {})}
    ports = [{"TargetPort": cport, "PublishedPort": port, "PublishMode": "host"}] if port else []
    return {"ID": tid, "NodeID": node, "DesiredState": desired,
            "Spec": {"ContainerSpec": {"Image": image, "Labels": labels}},
            "Status": {"State": state, "ContainerStatus": {"ContainerID": container}, "PortStatus": {"Ports": ports}}}


def test_only_running_service_tasks_on_ready_nodes_with_no_published_port_are_portless():
    tasks = [_task("ok", port=32768), _task("lost"), _task("starting", state="starting"),
             _task("leaving", desired="shutdown"), _task("down-node", node="DOWN"), _task("other", stack="u"),
             _task("gateway", service=None), _task("no-port-by-design", cport=0), _task("no-container", container=None)]
    places = portless_places("t", tasks, NODES)
    assert list(places) == ["lost"]
    assert (places["lost"].node, places["lost"].container, places["lost"].image) == ("N1", "c1", "acts:latest@sha256:x")


def test_a_portless_dependency_is_ended_by_a_job_in_the_helper_image_not_its_own():
    # Seen after the Raft leader's node was cut: the database's task listed running with no port,
    # and a job in MariaDB's image failed (`exec: "python3": executable file not found`) every retry.
    places = portless_places("t", [_task("db", service="db", cport=3306, image="selfieless/mariadb:latest", health=None)],
                             NODES)
    assert list(places) == ["db"] and places["db"].image == ""


def test_a_portless_task_is_asked_about_after_the_wait_and_again_only_after_the_retry():
    places = portless_places("t", [_task("lost")], NODES)
    p = PortlessTasks()
    assert p.to_ask(places, 100.0) == []
    assert p.to_ask(places, 100.0 + END_SILENT_AFTER - 0.1) == []
    assert [x.task for x in p.to_ask(places, 100.0 + END_SILENT_AFTER)] == ["lost"]
    assert p.to_ask(places, 100.0 + END_SILENT_AFTER + 1) == []
    assert [x.task for x in p.to_ask(places, 100.0 + END_SILENT_AFTER + END_RETRY)] == ["lost"]


def test_a_task_that_reports_its_port_again_is_forgotten():
    p = PortlessTasks()
    p.to_ask(portless_places("t", [_task("lost")], NODES), 100.0)
    assert p.to_ask(portless_places("t", [_task("lost", port=32768)], NODES), 101.0) == []
    # Port-less again later: the wait starts over.
    again = portless_places("t", [_task("lost")], NODES)
    assert p.to_ask(again, 102.0) == [] and p.to_ask(again, 102.0 + END_SILENT_AFTER - 0.1) == []


def test_a_port_read_on_the_node_makes_the_task_a_replica_until_it_is_no_longer_listed():
    # After the Raft leader's node was cut, every surviving task was listed like this one.
    lost = _task("lost", cport=80)
    p = PortlessTasks()
    assert tasks_to_replicas("t", [lost], NODES, p.ports) == []
    p.learn({"lost": 32771})
    (rep,) = tasks_to_replicas("t", [lost], NODES, p.ports)
    assert (rep.host, rep.port) == ("10.0.0.1", 32771)
    assert portless_places("t", [lost], NODES, p.ports) == {}      # not asked about again
    # The port in the task's status wins over the one read.
    (rep,) = tasks_to_replicas("t", [_task("lost", port=32768)], NODES, p.ports)
    assert rep.port == 32768
    p.keep_listed({"other"})
    assert p.ports == {} and list(portless_places("t", [lost], NODES, p.ports)) == ["lost"]


def test_the_node_jobs_answer_gives_ports_and_the_containers_that_publish_none():
    places = portless_places("t", [_task("a", container="ca"), _task("b", container="cb", cport=3306),
                                   _task("c", container="cc"), _task("d", container="cd")], NODES)
    assert look_up_args(list(places.values())) == ["ca/80", "cb/3306", "cc/80", "cd/80"]
    ports, none = read_looked_up("ca 32768\ncb 32769\ncc -\nnoise\n", list(places.values()))
    assert ports == {"a": 32768, "b": 32769}
    assert [p.task for p in none] == ["c", "d"]      # publishes none; not named (gone): ended
    assert read_looked_up("ca 99999\n", [places["a"]]) == ({}, [places["a"]])


def test_the_node_jobs_program_compiles():
    # It runs on a node, in an app's image (the lab test runs it on real engines after the leader's loss).
    compile(LOOK_UP_PORTS_CODE, "read-ports", "exec")
