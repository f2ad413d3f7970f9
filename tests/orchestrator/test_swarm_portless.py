"""Tasks Swarm lists running without their published port (drivers/swarm_portless.py): which
are found, and when each is ended (after the silent-task wait, then again only after the retry)."""

from __future__ import annotations

from selfieless.orchestrator.driver_owned import END_RETRY, END_SILENT_AFTER
from selfieless.orchestrator.drivers.swarm_portless import PortlessTasks, portless_places
from selfieless.orchestrator.drivers.swarm_spec import LABEL_CONTAINER_PORT, LABEL_SERVICE, LABEL_STACK

NODES = [{"ID": "N1", "Status": {"State": "ready", "Addr": "10.0.0.1"}},
         {"ID": "DOWN", "Status": {"State": "down", "Addr": "10.0.0.2"}}]


def _task(tid, port=None, node="N1", state="running", desired="running", stack="t", cport=80, container="c1",
          service="acts"):
    labels = {LABEL_STACK: stack, LABEL_CONTAINER_PORT: str(cport), **({LABEL_SERVICE: service} if service else {})}
    ports = [{"TargetPort": cport, "PublishedPort": port, "PublishMode": "host"}] if port else []
    return {"ID": tid, "NodeID": node, "DesiredState": desired,
            "Spec": {"ContainerSpec": {"Image": "acts:latest@sha256:x", "Labels": labels}},
            "Status": {"State": state, "ContainerStatus": {"ContainerID": container}, "PortStatus": {"Ports": ports}}}


def test_only_running_service_tasks_on_ready_nodes_with_no_published_port_are_portless():
    tasks = [_task("ok", port=32768), _task("lost"), _task("starting", state="starting"),
             _task("leaving", desired="shutdown"), _task("down-node", node="DOWN"), _task("other", stack="u"),
             _task("gateway", service=None), _task("no-port-by-design", cport=0), _task("no-container", container=None)]
    places = portless_places("t", tasks, NODES)
    assert list(places) == ["lost"]
    assert (places["lost"].node, places["lost"].container, places["lost"].image) == ("N1", "c1", "acts:latest@sha256:x")


def test_a_portless_task_is_ended_after_the_wait_and_again_only_after_the_retry():
    places = portless_places("t", [_task("lost")], NODES)
    p = PortlessTasks()
    assert p.to_end(places, 100.0) == []
    assert p.to_end(places, 100.0 + END_SILENT_AFTER - 0.1) == []
    assert [x.task for x in p.to_end(places, 100.0 + END_SILENT_AFTER)] == ["lost"]
    assert p.to_end(places, 100.0 + END_SILENT_AFTER + 1) == []
    assert [x.task for x in p.to_end(places, 100.0 + END_SILENT_AFTER + END_RETRY)] == ["lost"]


def test_a_task_that_reports_its_port_again_is_forgotten():
    p = PortlessTasks()
    p.to_end(portless_places("t", [_task("lost")], NODES), 100.0)
    assert p.to_end(portless_places("t", [_task("lost", port=32768)], NODES), 101.0) == []
    # Port-less again later: the wait starts over.
    again = portless_places("t", [_task("lost")], NODES)
    assert p.to_end(again, 102.0) == [] and p.to_end(again, 102.0 + END_SILENT_AFTER - 0.1) == []
