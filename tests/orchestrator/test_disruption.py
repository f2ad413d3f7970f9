"""The disruption budget (pure): never every replica of a service replaced at once."""

from selfieless.orchestrator.disruption import describe_hold, on_failure


def test_a_lone_failure_among_healthy_siblings_is_replaced():
    d = on_failure(ready=3, failing_ready=1, unavailable=0)
    assert d.replace and not d.all_failing


def test_a_one_replica_service_is_always_replaced():
    assert on_failure(ready=1, failing_ready=1, unavailable=0).replace


def test_a_second_failure_while_one_is_being_replaced_is_held():
    d = on_failure(ready=2, failing_ready=1, unavailable=1)
    assert not d.replace and not d.all_failing


def test_all_failing_together_replaces_one_at_a_time():
    # First of three to reach the threshold: the others fail too but are still in rotation.
    assert on_failure(ready=3, failing_ready=3, unavailable=0).replace
    d = on_failure(ready=2, failing_ready=2, unavailable=1)
    assert not d.replace and d.all_failing
    d = on_failure(ready=1, failing_ready=1, unavailable=2)
    assert not d.replace and d.all_failing


def test_the_last_ready_replica_is_kept_while_its_siblings_start():
    assert not on_failure(ready=1, failing_ready=1, unavailable=1).replace


def test_a_wider_budget():
    assert on_failure(ready=2, failing_ready=2, unavailable=1, max_unavailable=2).replace


def test_the_event_says_what_happened():
    text = describe_hold("acts", 3, True, 1)
    assert text.startswith("all 3 replicas of acts failed together: shared dependency?")
    assert "already being replaced" in describe_hold("acts", 3, False, 1)


def test_which_failures_count_as_all_failing():
    # (ready, failing_ready, unavailable) -> all_failing, exactly: the event's wording depends on it.
    table = {
        (1, 1, 0): False,  # a one-replica service: nothing to compare with
        (1, 1, 1): True,   # the only ready one fails while its sibling is being replaced
        (2, 2, 0): True,
        (2, 1, 0): False,
        (3, 2, 0): False,
        (2, 1, 1): False,
        (3, 3, 0): True,
    }
    for (ready, failing, unavailable), expected in table.items():
        assert on_failure(ready, failing, unavailable).all_failing is expected, (ready, failing, unavailable)


def test_a_one_replica_service_is_replaced_whatever_the_budget():
    d = on_failure(ready=1, failing_ready=1, unavailable=0, max_unavailable=0)
    assert d.replace and d.all_failing is False
    # With a sibling there is something to compare with, and a budget of 0 holds.
    assert not on_failure(ready=2, failing_ready=1, unavailable=0, max_unavailable=0).replace


def test_the_hold_event_counts_replicas_in_words():
    assert describe_hold("acts", 3, False, 1) == (
        "1 replica of acts already being replaced: kept in rotation until a sibling is ready "
        "(disruption budget 1)")
    assert describe_hold("acts", 4, False, 2).startswith("2 replicas of acts already being replaced: ")
    assert describe_hold("users", 2, True, 1) == (
        "all 2 replicas of users failed together: shared dependency? keeping them in rotation and "
        "replacing at most 1 at a time")
