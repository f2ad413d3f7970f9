"""The pure core of `selfieless load`: open-loop schedule and summary math."""

import pytest

from selfieless.cli.loadcore import Result, percentile, planned_count, schedule, summarize, target_url


def test_schedule_is_fixed_intervals_whatever_happens():
    offs = list(schedule(4, 2))
    assert offs == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert all(o < 2 for o in offs)
    assert planned_count(10, 3) == 30
    assert planned_count(0.5, 1) == 1  # never zero requests


@pytest.mark.parametrize("rps,duration", [(0, 1), (-1, 1), (1, 0)])
def test_schedule_rejects_nonsense(rps, duration):
    with pytest.raises(ValueError):
        list(schedule(rps, duration))


def test_percentile_interpolates_like_numpy():
    vals = sorted([1.0, 2.0, 3.0, 4.0])
    assert percentile(vals, 50) == 2.5
    assert percentile(vals, 0) == 1.0
    assert percentile(vals, 100) == 4.0
    assert percentile(list(map(float, range(1, 101))), 99) == pytest.approx(99.01)
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0


def test_summary_counts_statuses_errors_and_latency():
    results = [Result(i * 0.1, 0.010 + i * 0.001, status=200) for i in range(8)]
    results += [Result(0.8, 0.050, status=503), Result(0.9, 1.0, error="ConnectError")]
    s = summarize(results, target_rps=10, planned=10, elapsed=1.0)
    assert s.sent == 10 and s.planned == 10
    assert s.statuses == {200: 8, 503: 1}
    assert s.status_classes == {"2xx": 8, "5xx": 1}
    assert s.ok == 8
    assert s.errors == {"ConnectError": 1}
    # Latency is over the 9 responses (errors have no response); achieved rps counts responses.
    assert s.p50 == pytest.approx(0.014)
    assert s.max == pytest.approx(0.050)
    assert s.achieved_rps == pytest.approx(9.0)
    d = s.as_dict()
    assert d["statuses"] == {"200": 8, "503": 1} and d["latency"]["p99"] == pytest.approx(s.p99)


def test_summary_default_elapsed_spans_first_send_to_last_completion():
    s = summarize([Result(0.0, 0.1, status=200), Result(1.0, 0.5, status=200)], 2, 2)
    assert s.elapsed == pytest.approx(1.5)
    empty = summarize([], 1, 1)
    assert empty.p50 is None and empty.achieved_rps == 0.0


@pytest.mark.parametrize("given, url, note", [
    ("http://127.0.0.1:8080/api/v1/x", "http://127.0.0.1:8080/api/v1/x", None),
    ("HTTPS://example.test/", "HTTPS://example.test/", None),
    ("127.0.0.1:8080/api/v1/x", "http://127.0.0.1:8080/api/v1/x",
     "no scheme in '127.0.0.1:8080/api/v1/x': loading http://127.0.0.1:8080/api/v1/x"),
    ("localhost", "http://localhost", "no scheme in 'localhost': loading http://localhost"),
])
def test_target_url_completes_a_missing_scheme(given, url, note):
    assert target_url(given) == (url, note)


@pytest.mark.parametrize("given, error", [
    ("ftp://127.0.0.1/x", "URL 'ftp://127.0.0.1/x': scheme 'ftp' is not supported; use http:// or https://"),
    ("http:///api/v1", "URL 'http:///api/v1' has no host; write e.g. http://127.0.0.1:8080/api/v1/categories"),
])
def test_target_url_refuses_what_it_cannot_load(given, error):
    with pytest.raises(ValueError) as e:
        target_url(given)
    assert str(e.value) == error
