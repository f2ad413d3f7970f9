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
