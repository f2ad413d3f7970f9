"""A backend lost mid-request (removed as failed by the control plane, or stalled), with real sockets.

The silent backend is a bare socket that reads a request and then never answers (what a node
whose network is cut looks like from here), or a real replica process that is SIGSTOPped with
requests in flight. What must hold: GETs waiting on it are replayed elsewhere, a POST that
reached it is answered 502 (removed) or keeps waiting (only stalled: it may still answer) and is
never replayed; a normal remove or a slow write changes nothing; a single backend, or backends
all silent together, are never withdrawn.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
import uuid

from gw_support import jrequest, request


def _wait(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


class Background:
    """One request in a thread; ``result`` is (status, headers, json body, seconds) or the error."""

    def __init__(self, port, method="GET", path="/api/v1/x", body=None, timeout=20):
        self.result = None
        self.t0 = time.monotonic()

        def run():
            try:
                st, h, b = jrequest(port, method, path, body=body, timeout=timeout)
                self.result = (st, h, b, time.monotonic() - self.t0)
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                self.result = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def get(self, timeout=30):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "request still waiting"
        return self.result


def _states(loop_thread, gw, service="acts"):
    return {v.id: v.state for v in loop_thread.call(lambda: gw.pool(service).replicas)}


def _seen_by(backend, method, marker):
    return [p for m, p in jrequest(backend.port, path="/_log")[2]["seen"] if m == method and marker in p]


# Removed as failed (point 1) ---------------------------------------------------------------


def test_a_get_on_a_backend_removed_as_failed_is_replayed_at_once(make_gateway, raw_backend, backends,
                                                                  loop_thread):
    silent = raw_backend(b"", after="hold")
    gw = make_gateway(replicas={"acts": [silent, backends[1]]}, stall_timeout=0)
    req = Background(gw.port, path="/api/v1/lost-get")  # round robin: the silent one first
    _wait(lambda: len(silent.seen) == 1, what="request at the silent backend")
    time.sleep(0.2)
    t0 = time.monotonic()
    loop_thread.call(gw.remove_backend, "acts", silent.id, True)
    st, _, body, _ = req.get()
    assert st == 200 and body["replica"] == "B"
    assert time.monotonic() - t0 < 5  # not the 60 s response timeout
    assert gw.counters("acts").retries == 1


def test_a_post_on_a_backend_removed_as_failed_gets_502_and_is_not_replayed(make_gateway, raw_backend,
                                                                            backends, loop_thread):
    # "record": silent, but it keeps reading, so the body is seen even when it comes after the head.
    silent = raw_backend(b"", after="record")
    gw = make_gateway(replicas={"acts": [silent, backends[1]]}, stall_timeout=0)
    marker = uuid.uuid4().hex
    req = Background(gw.port, "POST", f"/api/v1/upload-{marker}", body=b"once only")
    _wait(lambda: len(silent.seen) == 1 and b"once only" in silent.seen[0], what="POST at the silent backend")
    loop_thread.call(gw.remove_backend, "acts", silent.id, True)
    st, h, body, _ = req.get()
    assert st == 502 and h["content-type"] == "application/json" and set(body) == {"error"}
    assert "health check" in body["error"]
    assert _seen_by(backends[1], "POST", marker) == []
    # The service goes on with the other backend.
    assert jrequest(gw.port)[2]["replica"] == "B"


def test_a_normal_remove_lets_requests_in_flight_finish(make_gateway, backends, loop_thread):
    """Scale-in and rollouts remove (after a drain, or without one): what is in flight finishes
    on the backend that has it, POST included."""
    gw = make_gateway(replicas={"acts": [backends[0], backends[1]]}, stall_timeout=0)
    marker = uuid.uuid4().hex
    post = Background(gw.port, "POST", f"/api/v1/{marker}/slow?s=1", body=b"x")
    _wait(lambda: _seen_by(backends[0], "POST", marker), what="POST at A")
    loop_thread.call(gw.remove_backend, "acts", backends[0].id)
    st, _, _, took = post.get()
    assert st == 200 and took >= 0.9
    assert _seen_by(backends[1], "POST", marker) == []
    assert gw.counters("acts").gateway_errors == 0


# Stalled (point 2) -------------------------------------------------------------------------


def _get_load(port, stop, results, path="/api/v1/x"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    while not stop.is_set():
        try:
            st, _, _ = request(port, path=path, conn=conn)
            results.append(st)
        except Exception as exc:  # noqa: BLE001 - any client-visible error counts
            results.append(repr(exc))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)


def test_a_stalled_backend_is_withdrawn_and_its_gets_replayed(make_gateway, raw_backend, backends,
                                                               loop_thread):
    silent = raw_backend(b"", after="hold")
    ejected, withdrawn = [], []
    gw = make_gateway(replicas={"acts": [backends[0], silent, backends[2]]}, stall_timeout=0.3,
                      on_eject=lambda *a: ejected.append(a))
    gw.on_withdraw = lambda *a: withdrawn.append(a)
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=_get_load, args=(gw.port, stop, results)) for _ in range(3)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    _wait(lambda: _states(loop_thread, gw)[silent.id] == "withdrawn", what="withdrawal")
    took = time.monotonic() - t0
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert results and all(st == 200 for st in results), [r for r in results if r != 200][:5]
    print(f"\nstalled backend withdrawn {took:.2f} s after the load started; {len(results)} GETs, all 200")
    assert took < 5  # sweep-granular, on a busy machine; the response timeout is 60 s
    assert [e[:2] for e in withdrawn] == [("acts", silent.id)] and "stalled" in withdrawn[0][2]
    assert ejected == []
    st = gw.counters("acts")
    assert st.withdrawals == 1 and st.ejections == 0 and st.retries >= 1
    assert _states(loop_thread, gw) == {"A": "ready", silent.id: "withdrawn", "C": "ready"}
    # A passing probe brings it back: the control plane adds it again.
    loop_thread.call(gw.add_backend, "acts", silent.id, "127.0.0.1", silent.port)
    assert _states(loop_thread, gw)[silent.id] == "ready"


def test_a_backend_stalled_between_its_head_and_its_body_is_withdrawn_and_the_get_replayed(
        make_gateway, raw_backend, backends, loop_thread):
    """A replica paused (or its node cut) after writing a response head and before the body (uvicorn
    writes them apart): the gateway holds such a head back, so the client has seen nothing. The
    bytes that came once must not make the backend look alive for ever: it is withdrawn like any
    silent one, and the GET whose head is held is replayed on a sibling."""
    half = raw_backend(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n",
                       after="hold")
    gw = make_gateway(replicas={"acts": [half, backends[1]]}, stall_timeout=0.3)
    first = Background(gw.port, path="/api/v1/first")  # round robin: the half-answering one first
    _wait(lambda: len(half.seen) == 1, what="the GET at the half-answering backend")
    stop, results = threading.Event(), []
    load = threading.Thread(target=_get_load, args=(gw.port, stop, results))
    load.start()
    try:
        _wait(lambda: _states(loop_thread, gw)[half.id] == "withdrawn", what="withdrawal")
    finally:
        stop.set()
        load.join(30)
    st, _, body, took = first.get()
    assert st == 200 and body["replica"] == "B", (st, body)
    assert took < 10  # replayed, not the response timeout
    assert results and all(s == 200 for s in results), [r for r in results if r != 200][:5]
    assert gw.counters("acts").withdrawals == 1


def test_a_post_on_a_stalled_backend_waits_and_is_never_replayed(make_gateway, raw_backend, backends,
                                                                 loop_thread):
    silent = raw_backend(b"", after="hold")
    gw = make_gateway(replicas={"acts": [silent, backends[1]]}, stall_timeout=0.3, response_timeout=2.5)
    marker = uuid.uuid4().hex
    post = Background(gw.port, "POST", f"/api/v1/upload-{marker}", body=b"once only")
    _wait(lambda: len(silent.seen) == 1, what="POST at the silent backend")
    stop, results = threading.Event(), []
    load = threading.Thread(target=_get_load, args=(gw.port, stop, results))
    load.start()
    _wait(lambda: _states(loop_thread, gw)[silent.id] == "withdrawn", what="withdrawal")
    st, _, body, took = post.get()
    stop.set()
    load.join(30)
    # Withdrawn is not dead: the POST waited for its answer (here: the response timeout).
    assert st == 504 and took >= 2.0, (st, took)
    assert _seen_by(backends[1], "POST", marker) == []
    assert results and all(s == 200 for s in results)


def test_a_single_silent_backend_is_never_withdrawn(make_gateway, raw_backend, loop_thread):
    silent = raw_backend(b"", after="hold")
    gw = make_gateway(replicas={"acts": [silent]}, stall_timeout=0.2, response_timeout=1.5)
    st, _, _ = jrequest(gw.port)
    assert st == 504
    assert _states(loop_thread, gw) == {silent.id: "ready"}
    assert gw.counters("acts").withdrawals == 0


def test_backends_silent_together_are_not_withdrawn(make_gateway, raw_backend, loop_thread):
    """All silent at once (a shared dependency): nobody answers, so nobody is to blame."""
    s1, s2 = raw_backend(b"", after="hold"), raw_backend(b"", after="hold")
    gw = make_gateway(replicas={"acts": [s1, s2]}, stall_timeout=0.2, response_timeout=1.5)
    together = []
    gw.on_stalled_together = lambda *a: together.append(a)
    reqs = [Background(gw.port) for _ in range(2)]
    assert [r.get()[0] for r in reqs] == [504, 504]
    assert set(_states(loop_thread, gw).values()) == {"ready"}
    assert gw.counters("acts").withdrawals == 0
    # ... but it is said, once (issue 29: the probes passed while every GET waited).
    assert [t[0] for t in together] == ["acts"] and "every replica in rotation (2)" in together[0][1]


def test_a_slow_write_is_neither_replayed_nor_withdraws_anyone(make_gateway, backends, loop_thread):
    """A 1.5 s DELETE (a large category delete) while GETs flow: nobody leaves the rotation and
    the DELETE runs once, on the backend that has it."""
    gw = make_gateway(replicas={"acts": [backends[0], backends[1]]}, stall_timeout=0.3)
    marker = uuid.uuid4().hex
    stop, results = threading.Event(), []
    delete = Background(gw.port, "DELETE", f"/api/v1/{marker}/slow?s=1.5")
    load = threading.Thread(target=_get_load, args=(gw.port, stop, results))
    load.start()
    st, _, body, took = delete.get()
    time.sleep(0.4)  # a few more sweeps
    stop.set()
    load.join(30)
    assert st == 200 and took >= 1.4
    both = _seen_by(backends[0], "DELETE", marker) + _seen_by(backends[1], "DELETE", marker)
    assert len(both) == 1
    assert set(_states(loop_thread, gw).values()) == {"ready"}
    assert gw.counters("acts").withdrawals == 0 and results and all(s == 200 for s in results)


def test_a_paused_replica_under_get_load_fails_no_get(make_gateway, proc_backends, loop_thread):
    """A real replica process stopped (SIGSTOP) with GETs in flight: as if its node were cut.
    The GETs it holds are replayed, it leaves the rotation, and no client sees a failure."""
    p1, p2 = proc_backends("P1", "P2")
    gw = make_gateway(replicas={"acts": [p1, p2]}, stall_timeout=0.3)
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=_get_load, args=(gw.port, stop, results)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        _wait(lambda: len(results) > 50, what="load running")
        os.kill(p1.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        _wait(lambda: _states(loop_thread, gw)["P1"] == "withdrawn", what="withdrawal")
        took = time.monotonic() - t0
        n = len(results)
        _wait(lambda: len(results) > n + 50, what="load going on")
    finally:
        stop.set()
        os.kill(p1.proc.pid, signal.SIGCONT)
        for t in threads:
            t.join(30)
    print(f"\npaused replica withdrawn after {took:.2f} s; {len(results)} GETs")
    assert all(st == 200 for st in results), [r for r in results if r != 200][:5]
    assert gw.counters("acts").withdrawals == 1
