"""The requests/s history the admin API keeps for the dashboard: pure, with made-up clocks."""

from selfieless.admin.history import RateHistory, api_request_counts


def test_rates_between_successive_samples():
    h = RateHistory()
    for t, n in ((100.0, 0), (101.0, 10), (102.0, 30), (103.0, 30)):
        h.record(t, {"acts": n})
    assert h.series(10, now=103.0) == {"acts": [[101.0, 10.0], [102.0, 20.0], [103.0, 0.0]]}
    # Only intervals ending within the last `seconds`.
    assert h.series(1.5, now=103.0) == {"acts": [[102.0, 20.0], [103.0, 0.0]]}


def test_uneven_intervals_and_a_counter_that_went_down():
    h = RateHistory()
    for t, n in ((0.0, 0), (2.0, 10), (2.5, 20), (3.5, 5)):
        h.record(t, {"acts": n})
    assert h.series(100, now=4) == {"acts": [[2.0, 5.0], [2.5, 20.0], [3.5, 0.0]]}


def test_memory_is_bounded():
    h = RateHistory(keep=5)
    for t in range(100):
        h.record(float(t), {"acts": t * 2})
    points = h.series(1000, now=100)["acts"]
    assert len(points) == 4 and all(rate == 2.0 for _, rate in points)


def test_counts_come_from_the_gateway_counters_and_skip_dependencies():
    class Stats:
        api_requests = 7

    class Svc:
        def __init__(self, dependency=False):
            self.dependency = dependency

    class Orch:
        services = {"acts": Svc(), "users": Svc(), "db": Svc(dependency=True)}

    class Gateway:
        all_stats = {"acts": Stats()}

    assert api_request_counts(Orch(), Gateway()) == {"acts": 7, "users": 0}
