"""FlowControl: why reading is paused, and the coupling of two sockets (flow.py), on a transport
that records the pause/resume calls it gets."""

from __future__ import annotations

from selfieless.gateway.flow import NO_PEER, PEER_FULL, FlowControl, couple, uncouple


class Transport:
    def __init__(self):
        self.calls: list[str] = []
        self.closing = False

    def pause_reading(self):
        self.calls.append("pause")

    def resume_reading(self):
        self.calls.append("resume")

    def is_closing(self):
        return self.closing


def test_reading_resumes_only_when_no_reason_is_left():
    t = Transport()
    f = FlowControl(t)
    f.pause(PEER_FULL)
    f.pause(NO_PEER)
    f.pause(PEER_FULL)
    assert t.calls == ["pause"] and f.paused_by == PEER_FULL | NO_PEER
    f.resume(PEER_FULL)
    assert t.calls == ["pause"] and f.paused_by == NO_PEER
    f.resume(PEER_FULL)  # not a reason any more: nothing happens
    f.resume(NO_PEER)
    assert t.calls == ["pause", "resume"] and f.paused_by == 0


def test_a_closing_transport_is_not_told_but_the_reasons_are_kept():
    t = Transport()
    t.closing = True
    f = FlowControl(t)
    f.pause(NO_PEER)
    f.resume(NO_PEER)
    assert t.calls == [] and f.paused_by == 0


def test_coupled_sockets_pause_each_other_while_a_write_buffer_is_full():
    ct, ut = Transport(), Transport()
    client, upstream = FlowControl(ct), FlowControl(ut)
    client.writing_paused()  # before coupling: only remembered
    assert ut.calls == [] and client.write_paused
    couple(client, upstream)
    assert ut.calls == ["pause"] and upstream.paused_by == PEER_FULL and ct.calls == []
    client.writing_resumed()
    assert ut.calls == ["pause", "resume"] and upstream.paused_by == 0
    upstream.writing_paused()
    assert ct.calls == ["pause"] and client.paused_by == PEER_FULL
    uncouple(client, upstream)  # the exchange is over: the client reads again
    assert ct.calls == ["pause", "resume"] and client.peer is None and upstream.peer is None
    upstream.writing_resumed()  # no longer coupled: nobody else is told
    assert ct.calls == ["pause", "resume"]


def test_uncouple_keeps_other_reasons():
    ct, ut = Transport(), Transport()
    client, upstream = FlowControl(ct), FlowControl(ut)
    couple(client, upstream)
    client.pause(NO_PEER)
    upstream.writing_paused()
    uncouple(client, upstream)
    assert client.paused_by == NO_PEER and ct.calls == ["pause"]


def test_only_sets_the_reasons_whatever_they_were():
    t = Transport()
    f = FlowControl(t)
    f.pause(NO_PEER | 8)
    f.only(PEER_FULL)
    assert f.paused_by == PEER_FULL and t.calls == ["pause", "pause"]
    f.only(0)
    assert f.paused_by == 0 and t.calls[-1] == "resume"
