"""Rolling updates on a real swarm (the lab): `apply` of a rebuilt image and of a broken one,
`rollout restart|undo|history`, under a GET + POST load that must see no failure.

The acts service runs a test tag, `slroll-acts:test`, first the lab's acts:latest tagged on every
node; version 2 is that tag rebuilt FROM acts:latest (a new image id under the same name) and
copied to every node with `docker save | docker load`, exactly what a rebuilt `acts:latest` is.
The broken version is another tag whose CMD exits at start. Swarm does the replacing (its
UpdateConfig from the service's `update:` block); the control plane follows it.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import threading
import time

import httpx
import pytest
import yaml

from swarm_support import GetLoad, SwarmUp, Writes, make_stack_file, remove_stack
from support.processes import wait_until

STACK = f"slroll{random.randrange(10**5)}"
TAG = "slroll-acts:test"
BROKEN_TAG = "slroll-acts:broken"
IMAGE_ID_LABEL = "selfieless.image_id"


def _build(client, tag: str, version: str, cmd: list[str] | None = None) -> str:
    lines = ["FROM acts:latest", f"LABEL selfieless.test.version={version}"]
    if cmd:
        lines.append("CMD " + json.dumps(cmd))
    image, _ = client.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True,
                                   network_mode="none")
    return image.id


def _copy_to_nodes(lab, tag: str, tmp) -> None:
    """`docker save` on this host, `docker load` on every node (the ids stay the same)."""
    tar = tmp / "image.tar"
    subprocess.run(["docker", "save", "-o", str(tar), tag], check=True, timeout=300)
    loads = [subprocess.Popen(["docker", "-H", lab.node_socket(n), "load", "-q", "-i", str(tar)],
                              stdout=subprocess.DEVNULL)
             for n in lab.nodes]
    for p in loads:
        assert p.wait(300) == 0
    tar.unlink()


@pytest.fixture(scope="module")
def rollout_env(lab, tmp_path_factory):
    import docker

    tmp = tmp_path_factory.mktemp("swarm-rollout")
    host = docker.from_env(timeout=300)
    for n in lab.nodes:  # version 1: the lab's acts:latest under the test tag
        subprocess.run(["docker", "-H", lab.node_socket(n), "tag", "acts:latest", TAG], check=True, timeout=60)
    path = make_stack_file(tmp / "stack.yaml", STACK)
    data = yaml.safe_load(path.read_text())
    data["services"]["acts"]["image"] = TAG
    data["services"]["acts"]["update"] = {"monitor": 2}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    up = SwarmUp(path, tmp / "state", lab.manager).start()
    client = lab.client()
    try:
        up.wait_converged(300)
        up.scale("acts", 3)
        wait_until(lambda: len(up.ready("acts")) == 3 and up.status()["converged"], 120, what="3 acts tasks")
        yield up, client, host, data, tmp
    finally:
        up.stop_quietly()
        remove_stack(client, STACK)
        client.close()
        for tag in (TAG, BROKEN_TAG):
            try:
                host.images.remove(tag, force=True)
            except docker.errors.APIError:
                pass
        host.close()


def _apply(up, data: dict, timeout: float = 400) -> httpx.Response:
    """`selfieless apply` through the admin API, keeping the port `up` was given."""
    stack = json.loads(json.dumps(data))
    stack["gateway"]["port"] = up.gateway_port
    return httpx.post(f"{up.admin}/api/apply", json={"stack": stack}, timeout=timeout)


def _apply_under_load(up, data: dict):
    """`_apply` under a GET load and uploads, with a second of load before and after it:
    (response, seconds it took, the GET load, the writes)."""
    with GetLoad(f"{up.gateway}/api/v1/acts/count", clients=3) as load, Writes(up.gateway) as writes:
        time.sleep(1.0)
        t0 = time.monotonic()
        r = _apply(up, data)
        took = time.monotonic() - t0
        time.sleep(1.0)
    return r, took, load, writes


def _acts_tasks(client) -> list[dict]:
    return [t for t in client.api.tasks(filters={"service": f"{STACK}-acts", "desired-state": "running"})
            if t["Status"]["State"] == "running"]


def _task_ids(up) -> set[str]:
    return {r["detail"].split()[1] for r in up.ready("acts")}


def test_a_rebuilt_tag_rolls_every_task_under_get_and_post_with_no_failure(rollout_env, lab):
    up, client, host, data, tmp = rollout_env
    v1 = {t["Spec"]["ContainerSpec"]["Labels"].get(IMAGE_ID_LABEL) for t in _acts_tasks(client)}
    assert len(v1) == 1 and None not in v1
    before = _task_ids(up)
    v2 = _build(host, TAG, "2")
    assert v2 not in v1
    _copy_to_nodes(lab, TAG, tmp)
    r, took, load, writes = _apply_under_load(up, data)
    print(f"\nrolled 3 acts tasks to a rebuilt tag in {took:.1f} s: failed GETs {len(load.failures)}/{load.total}, "
          f"failed uploads {len(writes.failures)}/{len(writes.failures) + len(writes.acked)}")
    assert r.status_code == 200, r.text
    assert [ro["outcome"] for ro in r.json()["rollouts"]] == ["complete"]
    assert any("has new content" in a for a in r.json()["actions"]), r.json()["actions"]
    assert load.failures == [] and writes.failures == []
    tasks = _acts_tasks(client)
    assert len(tasks) == 3
    assert {t["Spec"]["ContainerSpec"]["Labels"][IMAGE_ID_LABEL] for t in tasks} == {v2}
    assert {t["Spec"]["ContainerSpec"]["Image"] for t in tasks} == {v2}
    ready = _task_ids(up)
    assert len(ready) == 3 and not ready & before
    assert ready == {t["ID"][:12] for t in tasks}
    assert writes.acked and set(writes.acked) <= writes.stored()
    events = up.events()
    # Every old task left with an event: "drained" (then "stopped") when a snapshot saw Swarm
    # shutting it down while it was in rotation, "exited" when it was already gone by the next
    # snapshot (Swarm's own update sets the pace; on a loaded machine a stop can fall between two).
    left = {e["replica"].rsplit(".", 1)[-1] for e in events  # acts.1.TASKID -> TASKID
            if e["service"] == "acts" and e["replica"] and e["kind"] in ("drained", "stopped", "exited")}
    assert before <= left, [(e["kind"], e["replica"]) for e in events if e["service"] == "acts"][-40:]
    # The same file again: nothing to do.
    again = _apply(up, data)
    assert again.status_code == 200 and again.json()["reason"] == "no change", again.text


def test_a_version_that_exits_at_start_is_rolled_back_by_swarm_with_no_failure(rollout_env, lab):
    up, client, host, data, tmp = rollout_env
    _build(host, BROKEN_TAG, "broken", cmd=["python3", "-c", "raise SystemExit(3)"])
    _copy_to_nodes(lab, BROKEN_TAG, tmp)
    before = _task_ids(up)
    good = {t["Spec"]["ContainerSpec"]["Labels"][IMAGE_ID_LABEL] for t in _acts_tasks(client)}
    broken = json.loads(json.dumps(data))
    broken["services"]["acts"]["image"] = BROKEN_TAG
    r, took, load, writes = _apply_under_load(up, broken)
    print(f"\nbroken version rolled back in {took:.1f} s: failed GETs {len(load.failures)}/{load.total}, "
          f"failed uploads {len(writes.failures)}/{len(writes.failures) + len(writes.acked)}; {r.text[:300]}")
    assert r.status_code == 409, r.text
    assert "rolled back" in r.json()["error"] and "task" in r.json()["error"], r.text   # which task failed
    assert [ro["outcome"] for ro in r.json()["rollouts"]] == ["rolled_back"]
    assert load.failures == [] and writes.failures == []
    assert set(writes.acked) <= writes.stored()
    wait_until(lambda: len(up.ready("acts")) == 3 and up.status()["converged"], 120, what="3 acts tasks again")
    assert {t["Spec"]["ContainerSpec"]["Labels"][IMAGE_ID_LABEL] for t in _acts_tasks(client)} == good
    # start-first with a task that never ran: the serving tasks were never replaced.
    assert _task_ids(up) == before
    kinds = [e["kind"] for e in up.events() if e["service"] == "acts"]
    assert "rollback" in kinds


def test_rollout_restart_history_and_undo(rollout_env, lab):
    up, client, host, data, tmp = rollout_env
    before = _task_ids(up)
    image_before = {t["Spec"]["ContainerSpec"]["Image"] for t in _acts_tasks(client)}
    with GetLoad(f"{up.gateway}/api/v1/acts/count", clients=3) as load:
        r = httpx.post(f"{up.admin}/api/rollout", json={"service": "acts", "action": "restart"}, timeout=400)
    assert r.status_code == 200 and r.json()["outcome"] == "complete", r.text
    assert load.failures == []
    after = _task_ids(up)
    assert len(after) == 3 and not after & before
    assert {t["Spec"]["ContainerSpec"]["Image"] for t in _acts_tasks(client)} == image_before
    hist = httpx.post(f"{up.admin}/api/rollout", json={"service": "acts", "action": "history"}, timeout=10).json()
    assert [h["outcome"] for h in hist["history"]] == ["complete", "rolled_back", "complete"]
    # undo: back to the spec before the last completed rollout (the restart: the same image).
    r = httpx.post(f"{up.admin}/api/rollout", json={"service": "acts", "action": "undo"}, timeout=400)
    assert r.status_code == 200 and r.json()["outcome"] == "complete", r.text
    wait_until(lambda: len(up.ready("acts")) == 3 and up.status()["converged"], 120, what="3 acts tasks after undo")


def test_scale_to_zero_by_apply_then_a_burst_of_20_is_all_answered(rollout_env, lab):
    """`apply` of a rate policy with `replicas.min: 0` is live (no task replaced); the idle service
    goes to 0 tasks on the swarm; 20 concurrent requests then wake one task and are all answered."""
    up, client, host, data, tmp = rollout_env
    zero = json.loads(json.dumps(data))
    zero["services"]["acts"]["replicas"] = {"initial": 1, "min": 0, "max": 3}
    zero["services"]["acts"]["autoscale"] = {"policy": "rate", "target_rps_per_replica": 1000, "window_seconds": 0.5,
                                             "scale_in_delay": 0.5, "scale_to_zero_after": 2.0}
    service = client.services.get(f"{STACK}-acts")
    template = service.attrs["Spec"]["TaskTemplate"]
    r = _apply(up, zero)
    assert r.status_code == 200, r.text
    assert not any(ro for ro in r.json().get("rollouts", [])), r.text   # a policy change rolls nothing
    service.reload()
    assert service.attrs["Spec"]["TaskTemplate"] == template   # the engine was not asked to replace a task

    def swarm_count() -> int:
        service.reload()
        return service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"]

    wait_until(lambda: swarm_count() == 0 and not up.replicas("acts") and not _acts_tasks(client), 120,
               what="acts scaled to zero on the swarm")
    seen = max((e["id"] for e in up.events()), default=0)
    t0 = time.monotonic()
    with httpx.Client(timeout=60) as c:
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(c.get(f"{up.gateway}/api/v1/acts/count").status_code))
                   for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    took = time.monotonic() - t0
    print(f"\nscale from zero on the swarm: 20 held requests answered in {took:.1f} s")
    assert results == [200] * 20
    # What the burst did, from the event log: the service left zero and a task became ready. Its
    # count now is not asserted: with scale_to_zero_after 2 s a correct stack may be back at 0
    # already (a loaded machine took 2.5 s for the burst, and CI failed on that).
    after = [e for e in up.events() if e["id"] > seen and e["service"] == "acts"]
    assert any(e["kind"] == "scaled" and "scale from zero" in e["reason"] for e in after), after
    assert any(e["kind"] == "ready" for e in after), after
