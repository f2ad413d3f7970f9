"""Replica failures with real subprocess backends: SIGKILL under load, POST never replayed."""

from __future__ import annotations

import http.client
import threading
import time

from gw_support import jrequest, request


def test_sigkill_during_get_load_fails_no_request(make_gateway, proc_backends, loop_thread):
    p1, p2 = proc_backends("P1", "P2")
    ejected = []
    gw = make_gateway(replicas={"acts": [p1, p2]}, on_eject=lambda *a: ejected.append(a))
    failures, done, stop = [], [0], threading.Event()

    def load():
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)
        while not stop.is_set():
            try:
                st, _, _ = request(gw.port, path="/api/v1/acts", conn=conn)
                if st != 200:
                    failures.append(st)
                done[0] += 1
            except Exception as exc:  # noqa: BLE001 - any client-visible error counts
                failures.append(repr(exc))
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = done[0]
    p1.kill()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(20)
    assert failures == []
    assert before > 20 and done[0] > before + 20
    assert [e[:2] for e in ejected] == [("acts", "P1")]
    reps = {v.id: v for v in loop_thread.call(lambda: gw.pool("acts").replicas)}
    assert reps["P1"].state == "ejected" and reps["P2"].state == "ready"
    assert all(v.in_flight == 0 for v in reps.values())


def test_post_to_dying_replica_is_not_replayed(make_gateway, proc_backends, loop_thread):
    d1, d2 = proc_backends("D1", "D2")
    ejected = []
    gw = make_gateway(replicas={"acts": [d1, d2]}, on_eject=lambda *a: ejected.append(a))
    # Warm pooled connections to both, so the POST travels on a reused keep-alive connection.
    assert [jrequest(gw.port)[2]["replica"] for _ in range(2)] == ["D1", "D2"]
    st, h, body = jrequest(gw.port, "POST", "/api/v1/die", body=b"do-not-replay")
    assert st == 502 and set(body) == {"error"} and h["content-type"] == "application/json"
    seen = jrequest(d2.port, path="/_log")[2]["seen"]
    assert [m for m, _ in seen if m == "POST"] == []
    # The dead replica is found out (refused) and ejected; the service keeps working.
    for _ in range(4):
        st, _, body = jrequest(gw.port)
        assert st == 200 and body["replica"] == "D2"
    assert len(ejected) == 1 and ejected[0][1] == "D1" and ejected[0][2]


def test_post_on_fresh_connection_dying_replica(make_gateway, proc_backends):
    d1, d2 = proc_backends("F1", "F2")
    ejected = []
    gw = make_gateway(replicas={"acts": [d1, d2]}, on_eject=lambda *a: ejected.append(a))
    st, _, body = jrequest(gw.port, "POST", "/api/v1/die", body=b"x" * 1000)
    assert st == 502 and set(body) == {"error"}
    assert [m for m, _ in jrequest(d2.port, path="/_log")[2]["seen"]] == []
    assert [e[1] for e in ejected] == ["F1"]  # closed before any response byte: ejected at once
    # An idempotent request to a dying replica is retried elsewhere instead.
    st, _, body = jrequest(gw.port, "DELETE", "/api/v1/acts/1")
    assert st == 200 and body["replica"] == "F2"
