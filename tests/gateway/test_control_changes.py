"""The long poll's change bookkeeping (gateway/control_changes.py): a reader gets what changed after
the revision it holds, nothing when nothing did, everything when it holds nothing of this gateway."""

from selfieless.gateway.control_changes import Published


def test_nothing_published_yet():
    p = Published()
    assert p.rev == 0 and p.since(0) == ({}, {})
    assert not p.update({}, {})
    assert p.rev == 0


def test_a_reader_gets_what_changed_after_its_revision():
    p = Published()
    assert p.update({"acts": {"requests": 1}, "users": {"requests": 0}}, {"acts": [{"id": "a", "served": 1}]})
    assert p.rev == 1
    assert p.since(0) == ({"acts": {"requests": 1}, "users": {"requests": 0}}, {"acts": [{"id": "a", "served": 1}]})
    assert p.since(1) == ({}, {})

    # The same view again: no new revision, nothing to send.
    assert not p.update({"acts": {"requests": 1}, "users": {"requests": 0}}, {"acts": [{"id": "a", "served": 1}]})
    assert p.rev == 1 and p.since(1) == ({}, {})

    # One service's counters change: only they go out; the pool stays where it was.
    assert p.update({"acts": {"requests": 2}, "users": {"requests": 0}}, {"acts": [{"id": "a", "served": 1}]})
    assert p.rev == 2
    assert p.since(1) == ({"acts": {"requests": 2}}, {})
    # A pool changes (a backend added) and a new service appears, in one revision.
    p.update({"acts": {"requests": 2}, "users": {"requests": 0}, "web": {"requests": 0}},
             {"acts": [{"id": "a", "served": 1}, {"id": "b", "served": 0}]})
    assert p.rev == 3
    assert p.since(2) == ({"web": {"requests": 0}}, {"acts": [{"id": "a", "served": 1}, {"id": "b", "served": 0}]})
    # A reader two revisions behind gets both changes, each once, at their latest.
    assert p.since(1) == ({"acts": {"requests": 2}, "web": {"requests": 0}},
                          {"acts": [{"id": "a", "served": 1}, {"id": "b", "served": 0}]})


def test_a_revision_never_published_here_gets_everything():
    p = Published()
    p.update({"acts": {"requests": 5}}, {"acts": []})
    everything = ({"acts": {"requests": 5}}, {"acts": []})
    assert p.since(7) == everything   # held from another gateway instance
    assert p.since(-1) == everything
